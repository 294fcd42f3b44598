import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { TokenReviewAuthenticator } from '../../src/auth/authenticator.js';
import { sameIdentity } from '../../src/auth/identity.js';
import { bearerToken } from '../../src/auth/bearer.js';
import type { CallerIdentity, ReviewResult, TokenReviewer } from '../../src/auth/identity.js';
import { AuthUnavailableError, UnauthenticatedError } from '../../src/errors.js';
import { NoSlotNowError } from '../../src/auth/review-limiter.js';

const user = { username: 'system:serviceaccount:a:b', uid: 'u', groups: ['g'], extra: {} };
const T0 = 1_000_000_000_000;

const b = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
function jwt(claims: Record<string, unknown> = {}, header: Record<string, unknown> = { alg: 'RS256' }): string {
  return `${b(header)}.${b({ aud: ['gw'], exp: T0 / 1000 + 3600, ...claims })}.c2ln`;
}

class FakeReviewer implements TokenReviewer {
  calls = 0;
  namespaces: (string | undefined)[] = [];
  sources: (string | undefined)[] = [];
  backgrounds: boolean[] = [];
  constructor(public answer: () => Promise<ReviewResult>) {}
  review(_token: string, _aud: string[], namespace?: string, source?: string, background = false): Promise<ReviewResult> {
    this.calls++;
    this.backgrounds.push(background);
    this.namespaces.push(namespace);
    this.sources.push(source);
    return this.answer();
  }
}
const allow = () => new FakeReviewer(async () => ({ authenticated: true, user, audiences: ['gw'] }));
const is401 = (e: unknown) => e instanceof UnauthenticatedError && e.status === 401;

test('positive results are cached for min(ttl, exp); concurrent misses share one review', async () => {
  let now = T0;
  const r = allow();
  const a = new TokenReviewAuthenticator(r, ['gw'], 10, () => now, undefined, { namespace: 'team-a' });
  const token = jwt({ exp: now / 1000 + 5 }); // expires in 5 s, ttl is 10 s
  const [x, y] = await Promise.all([a.authenticate(token, { remoteAddress: '10.1.2.3' }), a.authenticate(token)]);
  assert.equal(r.calls, 1);
  assert.deepEqual(r.namespaces, ['team-a']); // the limiter's fairness key
  assert.deepEqual(r.sources, ['10.1.2.3']); // the client's address: it may hold an eighth of the queue
  assert.equal(x, y);
  now += 4_000;
  await a.authenticate(token);
  assert.equal(r.calls, 1);
  now += 2_000; // past exp, within the apiserver's 60 s leeway: reviewed again
  await a.authenticate(token);
  assert.equal(r.calls, 2);
});

test('ttl 0 disables the cache', async () => {
  const r = allow();
  const a = new TokenReviewAuthenticator(r, ['gw'], 0, () => T0);
  await a.authenticate(jwt());
  await a.authenticate(jwt());
  assert.equal(r.calls, 2);
});

test('an answer whose audiences miss the gateway is refused', async () => {
  const r = new FakeReviewer(async () => ({ authenticated: true, user, audiences: ['https://kubernetes.default.svc'] }));
  await assert.rejects(async () => new TokenReviewAuthenticator(r, ['gw'], 10, () => T0).authenticate(jwt()), UnauthenticatedError);
});

test('a reviewed identity whose names cannot travel as headers is refused: a group with a comma or surrounding whitespace', async () => {
  for (const [groups, why] of [[['ops,system:masters'], /the reviewed group "ops,system:masters" holds a comma/], [[' system:masters'], /the reviewed group " system:masters" has surrounding whitespace/],
    [['ops\ud800'], /the reviewed group .* is not well-formed Unicode/]] as const) {
    const r = new FakeReviewer(async () => ({ authenticated: true, user: { ...user, username: 'webhook:alice', groups: [...groups] }, audiences: ['gw'] }));
    const a = new TokenReviewAuthenticator(r, ['gw'], 10, () => T0);
    await assert.rejects(async () => a.authenticate(jwt()), (e: unknown) => is401(e) && why.test((e as Error).message));
  }
});

test('a reviewed identity that names a team (team:NS:...) is refused as a user, left out as a group: those names come only from a team\'s client CA', async () => {
  const r = new FakeReviewer(async () => ({ authenticated: true, user: { ...user, username: 'team:team-b:admin', groups: [] }, audiences: ['gw'] }));
  await assert.rejects(async () => new TokenReviewAuthenticator(r, ['gw'], 10, () => T0).authenticate(jwt()),
    (e: unknown) => is401(e) && /the reviewed user "team:team-b:admin" is a team: name; those come only from a team's client CA/.test((e as Error).message));
  const g = new FakeReviewer(async () => ({ authenticated: true, user: { ...user, username: 'webhook:alice', groups: ['ops', 'team:team-b:ops', 'teams'] }, audiences: ['gw'] }));
  const id = await new TokenReviewAuthenticator(g, ['gw'], 10, () => T0).authenticate(jwt());
  assert.deepEqual([id.username, id.groups], ['webhook:alice', ['ops', 'teams']]);
  // a name that only holds "team" elsewhere is taken
  const n = new FakeReviewer(async () => ({ authenticated: true, user: { ...user, username: 'webhook:team:x', groups: [] }, audiences: ['gw'] }));
  assert.equal((await new TokenReviewAuthenticator(n, ['gw'], 10, () => T0).authenticate(jwt())).username, 'webhook:team:x');
});

test('an unreachable reviewer fails closed with 503 and Retry-After; that is never cached', async () => {
  let fail = true;
  const r = new FakeReviewer(async () => {
    if (fail) throw new Error('ECONNREFUSED');
    return { authenticated: true, user, audiences: ['gw'] };
  });
  const a = new TokenReviewAuthenticator(r, ['gw'], 10, () => T0);
  await assert.rejects(async () => a.authenticate(jwt()), (e: unknown) => e instanceof AuthUnavailableError && e.status === 503 && e.retryAfterSeconds === 1);
  fail = false;
  assert.equal((await a.authenticate(jwt())).username, user.username);
  assert.equal(r.calls, 2);
});

test("the limiter's own 503 passes through with its Retry-After", async () => {
  const r = new FakeReviewer(async () => { throw new AuthUnavailableError('queue full', { retryAfterSeconds: 7 }); });
  await assert.rejects(async () => new TokenReviewAuthenticator(r, ['gw'], 10, () => T0).authenticate(jwt()),
    (e: unknown) => e instanceof AuthUnavailableError && e.retryAfterSeconds === 7 && e.message === 'queue full');
});

test('"not authenticated" is remembered for 5 s by token hash: repeats cost no review', async () => {
  let now = T0;
  // the review's error names the cluster's authenticators (here a webhook's address): never told to the caller
  const r = new FakeReviewer(async () => ({ authenticated: false, error: '[invalid signature, Post "https://authn.internal:8443": dial tcp 10.0.0.9:8443: connection refused]' }));
  const a = new TokenReviewAuthenticator(r, ['gw'], 10, () => now);
  const bad = jwt({ jti: 'forged' });
  const told = (e: unknown) => is401(e) && (e as Error).message === 'invalid bearer token: the apiserver did not authenticate it';
  await Promise.all(Array.from({ length: 10 }, () => assert.rejects(async () => a.authenticate(bad), told)));
  for (let i = 0; i < 300; i++) await assert.rejects(async () => a.authenticate(bad), told);
  assert.equal(r.calls, 1);
  now += 5_001;
  await assert.rejects(async () => a.authenticate(bad), is401);
  assert.equal(r.calls, 2);
  // another token is not affected
  await assert.rejects(async () => a.authenticate(jwt({ jti: 'other' })), is401);
  assert.equal(r.calls, 3);
});

test('not a JWT, or certainly invalid claims: 401 without any review', async () => {
  const r = allow();
  const a = new TokenReviewAuthenticator(r, ['gw', 'gw2'], 10, () => T0);
  const cases: [string, string, RegExp][] = [
    ['opaque', 'abcdef0123456789', /not a JWT/],
    ['two parts', 'abc.def', /not a JWT/],
    ['four parts', `${jwt()}.x`, /not a JWT/],
    ['empty signature', jwt().replace(/\.[^.]*$/, '.'), /signature/],
    ['header not base64url', `a+b.${jwt().split('.').slice(1).join('.')}`, /not a JWT/],
    ['header not JSON', `${Buffer.from('nope').toString('base64url')}.${jwt().split('.').slice(1).join('.')}`, /header is not JSON/],
    ['alg none', jwt({}, { alg: 'none' }), /alg none/],
    ['alg HS256', jwt({}, { alg: 'HS256' }), /alg HS256/],
    ['no alg', jwt({}, { typ: 'JWT' }), /alg undefined/],
    ['alg an object whose toString is no function', jwt({}, { alg: { toString: 1 } }), /alg of a JSON object is not accepted/],
    ['alg an array', jwt({}, { alg: ['RS256'] }), /alg of a JSON object is not accepted/],
    ['alg null', jwt({}, { alg: null }), /alg null is not accepted/],
    ['kid not a string', jwt({}, { alg: 'RS256', kid: 7 }), /kid/],
    ['payload not JSON', `${b({ alg: 'RS256' })}.${Buffer.from('{').toString('base64url')}.c2ln`, /payload is not JSON/],
    ['payload null', `${b({ alg: 'RS256' })}.${Buffer.from('null').toString('base64url')}.c2ln`, /payload is not a JSON object/],
    ['expired beyond the apiserver leeway and skew', jwt({ exp: T0 / 1000 - 66 }), /expired/],
    ['exp not a number', jwt({ exp: 'tomorrow' }), /malformed exp/],
    ['audience disjoint', jwt({ aud: ['someone-else'] }), /audiences do not include/],
    ['audience string disjoint', jwt({ aud: 'someone-else' }), /audiences do not include/],
    ['audience malformed', jwt({ aud: [1] }), /malformed aud/],
  ];
  for (const [name, token, msg] of cases) {
    await assert.rejects(async () => a.authenticate(token), (e: unknown) => is401(e) && msg.test((e as Error).message), name);
  }
  assert.equal(r.calls, 0);
  // what the apiserver decides goes to it: within its 60 s leeway (+5 s skew), no exp/aud (legacy tokens), any alg it signs with
  for (const token of [jwt({ exp: T0 / 1000 - 64 }), jwt({ exp: undefined, aud: undefined }), jwt({ aud: 'gw2' }), jwt({}, { alg: 'ES256', kid: 'k' }),
    jwt({}, { alg: 'EdDSA' }), `${jwt()}==`]) {
    await a.authenticate(token);
  }
  assert.equal(r.calls, 6);
});

test('bearer extraction', () => {
  assert.equal(bearerToken('Bearer abc.def-_~+/='), 'abc.def-_~+/=');
  assert.equal(bearerToken('bearer abc'), 'abc');
  for (const bad of [undefined, '', 'Basic abc', 'Bearer', 'Bearer a b', 'Bearer a\u00e9']) {
    assert.throws(() => bearerToken(bad), UnauthenticatedError, String(bad));
  }
});

test('bearer extraction remembered per connection: another header on it is read again, a malformed one refused', () => {
  const conn = {}, other = {};
  assert.equal(bearerToken('Bearer aaa', conn), 'aaa');
  assert.equal(bearerToken('Bearer aaa', conn), 'aaa');
  assert.equal(bearerToken('Bearer bbb', conn), 'bbb');
  assert.equal(bearerToken('Bearer bbb', other), 'bbb');
  for (const bad of [undefined, '', 'Bearer bbb x', 'Basic bbb']) {
    assert.throws(() => bearerToken(bad, conn), UnauthenticatedError, String(bad));
  }
  assert.equal(bearerToken('Bearer bbb', conn), 'bbb'); // the refusals did not touch what it holds
  assert.equal(bearerToken('Bearer ccc', other), 'ccc');
});

test('the header a connection sent again is not parsed again; the same header on another connection is', (t) => {
  const exec = RegExp.prototype.exec;
  let parsed = 0;
  t.mock.method(RegExp.prototype, 'exec', function (this: RegExp, s: string) {
    if (this.source.startsWith('^Bearer')) parsed++;
    return exec.call(this, s);
  });
  const conn = {}, other = {};
  bearerToken('Bearer ddd', conn);
  assert.equal(parsed, 1);
  bearerToken('Bearer ddd', conn);
  assert.equal(parsed, 1);
  bearerToken('Bearer ddd', other); // nothing is shared between connections
  assert.equal(parsed, 2);
  bearerToken('Bearer ddd'); // nor remembered without one
  bearerToken('Bearer ddd');
  assert.equal(parsed, 4);
});

test('a connection gone takes its remembered token with it (the memo does not hold the connection)', () => {
  const script = `
    const { bearerToken } = await import(${JSON.stringify(new URL('../../src/auth/bearer.js', import.meta.url).href)});
    let conn = {};
    bearerToken('Bearer eee', conn);
    const ref = new WeakRef(conn);
    conn = null;
    await new Promise((r) => setTimeout(r, 0));
    globalThis.gc();
    process.stdout.write(String(ref.deref() === undefined));
  `;
  const r = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'true');
});

test('what a review came to is told the reviewer for the address: a caller spec.access names vouches; another team\'s valid token, a refused one do not; a limiter\'s 503 tells nothing', async () => {
  const told: [string, string, boolean][] = [];
  let answer: () => Promise<ReviewResult> = async () => ({ authenticated: true, user, audiences: ['gw'] });
  const r: TokenReviewer = { review: () => answer(), vouch: (ns, address, admitted) => told.push([ns, address, admitted]) };
  const a = new TokenReviewAuthenticator(r, ['gw'], 10, () => T0, undefined, { namespace: 'team-b' });
  a.setCharged((id) => id.username === user.username);
  await a.authenticate(jwt({ n: 1 }), { remoteAddress: '10.1.0.5' });
  const other = { ...user, username: 'system:serviceaccount:team-a:x' };
  answer = async () => ({ authenticated: true, user: other, audiences: ['gw'] });
  await a.authenticate(jwt({ n: 2 }), { remoteAddress: '10.9.0.1' });
  answer = async () => ({ authenticated: false, error: 'forged' });
  await assert.rejects(Promise.resolve(a.authenticate(jwt({ n: 3 }), { remoteAddress: '10.9.0.2' })), is401);
  answer = async () => ({ authenticated: true, user, audiences: ['elsewhere'] });
  await assert.rejects(Promise.resolve(a.authenticate(jwt({ n: 4 }), { remoteAddress: '10.9.0.3' })), is401);
  answer = async () => { throw new AuthUnavailableError('token review unavailable: queue full', { retryAfterSeconds: 1 }); };
  await assert.rejects(Promise.resolve(a.authenticate(jwt({ n: 5 }), { remoteAddress: '10.1.0.5' })), (e: unknown) => e instanceof AuthUnavailableError);
  assert.deepEqual(told, [['team-b', '10.1.0.5', true], ['team-b', '10.9.0.1', false], ['team-b', '10.9.0.2', false], ['team-b', '10.9.0.3', false]]);
});

test('a cached caller in use is reviewed again in the background after 80% of cacheTTLSeconds: no request waits, one review however many requests, and the new answer replaces the old', async () => {
  let now = T0;
  let groups = ['g'];
  const r = new FakeReviewer(async () => ({ authenticated: true, user: { ...user, groups }, audiences: ['gw'] }));
  const a = new TokenReviewAuthenticator(r, ['gw'], 10, () => now);
  const token = jwt();
  await a.authenticate(token);
  now += 7_999;
  assert.ok(!(a.authenticate(token) instanceof Promise));
  assert.equal(r.calls, 1);
  groups = ['g2'];
  now += 2;
  for (let i = 0; i < 100; i++) assert.deepEqual((a.authenticate(token) as { groups: string[] }).groups, ['g'], 'the old answer serves meanwhile, at once');
  assert.equal(r.calls, 2);
  await new Promise((res) => setImmediate(res));
  now = T0 + 10_500; // past the first answer's expiry
  const id = a.authenticate(token);
  assert.ok(!(id instanceof Promise), 'renewed: no wait at the old expiry');
  assert.deepEqual((id as { groups: string[] }).groups, ['g2']);
  assert.equal(r.calls, 2);
  now = T0 + 8_001 + 8_001; // 80% of the renewed answer's life
  a.authenticate(token);
  assert.equal(r.calls, 3);
  assert.deepEqual(r.backgrounds, [false, true, true], 'renewals are background reviews: they never queue in the limiter');
});

test('a renewal the apiserver refuses drops the caller at once; one that fails leaves the answer to expire, and it is not tried again before', async () => {
  let now = T0;
  let answer: () => Promise<ReviewResult> = async () => ({ authenticated: true, user, audiences: ['gw'] });
  const r = new FakeReviewer(() => answer());
  const a = new TokenReviewAuthenticator(r, ['gw'], 10, () => now);
  const revoked = jwt({ jti: 'revoked' });
  await a.authenticate(revoked);
  answer = async () => ({ authenticated: false, error: 'token revoked' });
  now += 8_001;
  assert.equal((a.authenticate(revoked) as { username: string }).username, user.username);
  await new Promise((res) => setImmediate(res));
  await assert.rejects(async () => a.authenticate(revoked), is401, 'refused before the old answer would have expired');
  assert.equal(r.calls, 2);

  now = T0;
  answer = async () => ({ authenticated: true, user, audiences: ['gw'] });
  const token = jwt({ jti: 'down' });
  await a.authenticate(token);
  answer = async () => { throw new Error('ECONNREFUSED'); };
  now += 8_001;
  a.authenticate(token);
  await new Promise((res) => setImmediate(res));
  now += 1_000;
  assert.ok(!(a.authenticate(token) instanceof Promise), 'still within its ttl: served');
  assert.equal(r.calls, 4, 'one renewal an answer');
  now = T0 + 10_000;
  await assert.rejects(async () => a.authenticate(token), (e: unknown) => e instanceof AuthUnavailableError, 'expired: reviewed again, and fails closed');
  assert.equal(r.calls, 5);
});

test('a renewal that names the same caller keeps its object (what is kept by caller stays); a changed one is new', async () => {
  let now = T0;
  let groups = ['g'];
  const r = new FakeReviewer(async () => ({ authenticated: true, user: { ...user, groups: [...groups], extra: { k: ['v'] } }, audiences: ['gw'] }));
  const a = new TokenReviewAuthenticator(r, ['gw'], 10, () => now);
  const token = jwt();
  const first = await a.authenticate(token);
  now += 8_001;
  a.authenticate(token);
  await new Promise((res) => setImmediate(res));
  now += 8_001;
  assert.equal(r.calls, 2);
  assert.equal(a.authenticate(token), first, 'the same caller: the same object');
  assert.equal(r.calls, 3);
  await new Promise((res) => setImmediate(res));
  groups = ['g', 'h'];
  now += 8_001;
  assert.equal(a.authenticate(token), first, 'served meanwhile');
  await new Promise((res) => setImmediate(res));
  const changed = a.authenticate(token) as { groups: string[] };
  assert.notEqual(changed, first);
  assert.deepEqual(changed.groups, ['g', 'h']);
});

test('sameIdentity: name, UID, groups and extras, in order', () => {
  const base = { username: 'u', uid: '1', groups: ['a', 'b'], extra: { k: ['x', 'y'], l: [] as string[] } };
  assert.ok(sameIdentity(base, structuredClone(base)));
  const others: CallerIdentity[] = [
    { ...base, username: 'v' }, { ...base, uid: '2' }, { ...base, groups: ['b', 'a'] }, { ...base, groups: ['a'] },
    { ...base, extra: { k: ['x', 'z'], l: [] } }, { ...base, extra: { k: ['x', 'y'] } }, { ...base, extra: { k: ['x', 'y'], m: [] } },
    { ...base, extra: { l: [], k: ['x', 'y'] } },
  ];
  for (const other of others) assert.equal(sameIdentity(base, other), false, JSON.stringify(other));
});

test('a renewal the limiter had no slot for is tried again 250 ms later while the answer serves; one that failed otherwise is not', async () => {
  let now = T0;
  let answer: () => Promise<ReviewResult> = async () => ({ authenticated: true, user, audiences: ['gw'] });
  const r = new FakeReviewer(() => answer());
  const a = new TokenReviewAuthenticator(r, ['gw'], 10, () => now);
  const token = jwt();
  const first = await a.authenticate(token);
  answer = async () => { throw new NoSlotNowError('no slot free now'); };
  now += 8_001;
  a.authenticate(token);
  await new Promise((res) => setImmediate(res));
  now += 249;
  a.authenticate(token);
  assert.equal(r.calls, 2);
  answer = async () => ({ authenticated: true, user, audiences: ['gw'] });
  now += 1;
  a.authenticate(token);
  assert.equal(r.calls, 3, 'tried again');
  await new Promise((res) => setImmediate(res));
  now = T0 + 12_000; // past the first answer's expiry: the renewal's answer serves, the same object
  assert.equal(a.authenticate(token), first);
  assert.equal(r.calls, 3);
});
