import { test } from 'node:test';
import assert from 'node:assert/strict';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT } from 'jose';
import type { CryptoKey, JWK, JWTPayload } from 'jose';
import {
  algFor, JwksAuthenticator, JwksKeySet, JwksReadiness, revocationReason,
  type BoundClaims, type KeySource, type OidcDiscovery, type Revocation, type RevocationLookups, type RevocationSource,
} from '../../src/auth/jwks.js';
import { AuthUnavailableError, UnauthenticatedError } from '../../src/errors.js';
import { realClock } from '../../src/clock.js';
import { EntryBudget, TokenCache } from '../../src/auth/token-cache.js';
import { FakeClock } from '../support/fake-clock.js';

const issuer = 'https://kubernetes.default.svc.cluster.local';
const T0 = 1_700_000_000_000;

class FakeSource implements KeySource {
  keys: JWK[] = [];
  failing = false;
  jwksCalls = 0;
  async fetchDiscovery(): Promise<OidcDiscovery> {
    if (this.failing) throw new Error('ECONNREFUSED');
    return { issuer, jwks_uri: `${issuer}/openid/v1/jwks` };
  }
  async fetchJwks(uri: string): Promise<{ keys: JWK[] }> {
    assert.equal(uri, `${issuer}/openid/v1/jwks`);
    this.jwksCalls++;
    if (this.failing) throw new Error('ECONNREFUSED');
    return { keys: this.keys.map((k) => ({ ...k })) };
  }
}

async function keyPair(alg: 'RS256' | 'ES256', kid: string, withAlg = true) {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, use: 'sig', ...(withAlg ? { alg } : {}) };
  return { kid, alg, publicKey, privateKey, jwk };
}
type Pair = Awaited<ReturnType<typeof keyPair>>;

const nowS = () => Math.floor(clock / 1000);
let clock = T0;

const k8s = (ns = 'team-a', name = 'billing') => ({
  namespace: ns,
  serviceaccount: { name, uid: 'sa-uid' },
  pod: { name: 'billing-7f9', uid: 'pod-uid' },
  node: { name: 'node-1', uid: 'node-uid' },
});

function claims(over: JWTPayload = {}): JWTPayload {
  return {
    iss: issuer, aud: ['access-gateway'], sub: 'system:serviceaccount:team-a:billing',
    iat: nowS(), nbf: nowS(), exp: nowS() + 3600, jti: 'jti-1', 'kubernetes.io': k8s(), ...over,
  };
}

function sign(p: Pair, over: JWTPayload = {}, header: { kid?: string | undefined } = { kid: p.kid }): Promise<string> {
  return new SignJWT(claims(over)).setProtectedHeader({ alg: p.alg, ...header }).sign(p.privateKey);
}

const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
const is401 = (e: unknown) => e instanceof UnauthenticatedError && e.status === 401;

async function setup(opts: { revocation?: (c: BoundClaims) => Revocation; ttl?: number; cacheBudget?: EntryBudget } = {}) {
  clock = T0;
  const rsa = await keyPair('RS256', 'k1');
  const src = new FakeSource();
  src.keys = [rsa.jwk];
  const keySet = new JwksKeySet(src, { clock: { ...realClock, now: () => clock } });
  const auth = new JwksAuthenticator(keySet, ['access-gateway', 'other'], opts.ttl ?? 10, {
    now: () => clock,
    ...(opts.revocation ? { revocation: { check: opts.revocation } } : {}),
    ...(opts.cacheBudget ? { cacheBudget: opts.cacheBudget } : {}),
  });
  return { rsa, src, keySet, auth };
}

test('a valid token gives the identity TokenReview would', async () => {
  const { rsa, auth, keySet } = await setup();
  const id = await auth.authenticate(await sign(rsa));
  assert.deepEqual(id, {
    username: 'system:serviceaccount:team-a:billing',
    uid: 'sa-uid',
    groups: ['system:serviceaccounts', 'system:serviceaccounts:team-a', 'system:authenticated'],
    extra: {
      'authentication.kubernetes.io/credential-id': ['JTI=jti-1'],
      'authentication.kubernetes.io/pod-name': ['billing-7f9'],
      'authentication.kubernetes.io/pod-uid': ['pod-uid'],
      'authentication.kubernetes.io/node-name': ['node-1'],
      'authentication.kubernetes.io/node-uid': ['node-uid'],
    },
  });
  assert.equal(keySet.issuer, issuer);
  assert.equal(keySet.fetches, 1);
  // No jti, no pod/node: no extras.
  const bare = await auth.authenticate(await sign(rsa, { jti: undefined, 'kubernetes.io': { namespace: 'team-a', serviceaccount: { name: 'billing', uid: 'sa-uid' } } }));
  assert.deepEqual(bare.extra, {});
});

test('a token without kid is checked against each key of its alg', async () => {
  const { rsa, src, auth, keySet } = await setup();
  const other = await keyPair('RS256', 'k0');
  const ec = await keyPair('ES256', 'k2', false); // alg inferred from crv
  src.keys = [other.jwk, ec.jwk, rsa.jwk];
  await keySet.refresh();
  assert.equal((await auth.authenticate(await sign(rsa, {}, {}))).uid, 'sa-uid');
  assert.equal((await auth.authenticate(await sign(ec, { jti: 'x' }, {}))).uid, 'sa-uid');
});

test('a cached token is refused once the key that verified it leaves the apiserver\'s keys', async () => {
  const { rsa, src, auth, keySet } = await setup({ ttl: 3600 });
  const token = await sign(rsa);
  assert.equal((await auth.authenticate(token)).uid, 'sa-uid');
  const n = auth.verifications;
  assert.equal((await auth.authenticate(token)).uid, 'sa-uid');
  assert.equal(auth.verifications, n, 'a cache hit');
  // the apiserver rotates k1 out (a compromised key, say)
  src.keys = [(await keyPair('RS256', 'k2')).jwk];
  clock += 11_000;
  await keySet.refresh();
  await assert.rejects(async () => auth.authenticate(token), (e: unknown) => is401(e) && /signing key k1 is no longer among the apiserver's keys/.test((e as Error).message));
});

test('invalid tokens are refused with 401', async () => {
  const { rsa, auth, keySet } = await setup();
  await keySet.refresh();
  const stranger = await keyPair('RS256', 'k9');
  const valid = await sign(rsa);
  const [h, p, s] = valid.split('.');
  const tampered = `${h}.${b64({ ...claims(), sub: 'system:serviceaccount:kube-system:admin' })}.${s}`;
  assert.ok(p);
  const hsSecret = new TextEncoder().encode(await exportSPKI(rsa.publicKey as CryptoKey));
  const cases: [string, string, RegExp][] = [
    ['expired beyond the 5 s tolerance', await sign(rsa, { exp: nowS() - 6 }), /expired/],
    ['nbf in the future', await sign(rsa, { nbf: nowS() + 60 }), /"nbf"/],
    ['wrong issuer', await sign(rsa, { iss: 'https://evil.example' }), /"iss"/],
    ['wrong audience', await sign(rsa, { aud: 'https://kubernetes.default.svc' }), /audiences do not include/],
    ['no audience', await sign(rsa, { aud: undefined }), /no aud claim/],
    ['no exp', await sign(rsa, { exp: undefined }), /no exp claim/],
    ['unknown kid, issued before the keys were fetched', await sign(stranger, { iat: nowS() - 60 }), /unknown signing key k9/],
    ['unknown kid, no iat', await sign(stranger, { iat: undefined }), /unknown signing key k9/],
    ['alg none', `${b64({ alg: 'none', kid: 'k1' })}.${p}.`, /alg none/],
    ['HS256 with the public key as secret', await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', kid: 'k1' }).sign(hsSecret), /alg HS256/],
    ['RS384 header on an RS256 key', `${b64({ alg: 'RS384', kid: 'k1' })}.${p}.${s}`, /"alg" \(Algorithm\) Header Parameter value not allowed/],
    ['tampered payload', tampered, /signature/],
    ['no kubernetes.io claim', await sign(rsa, { 'kubernetes.io': undefined }), /kubernetes\.io/],
    ['sub not matching the claim', await sign(rsa, { sub: 'system:serviceaccount:team-a:other' }), /sub/],
    ['not a service account', await sign(rsa, { sub: 'alice' }), /sub/],
    ['garbage', 'a.b.c', /not a JWT/],
    ['two parts', `${b64({ alg: 'RS256' })}.${p}`, /three dot-separated parts/],
    ['header not JSON', `${Buffer.from('{alg').toString('base64url')}.${p}.${s}`, /header is not JSON/],
    ['payload a JSON array', `${b64({ alg: 'RS256', kid: 'k1' })}.${Buffer.from('[1]').toString('base64url')}.${s}`, /payload is not a JSON object/],
    ['no signature', `${h}.${p}.`, /signature is missing/],
  ];
  for (const [name, token, msg] of cases) {
    await assert.rejects(async () => auth.authenticate(token), (e: unknown) => is401(e) && msg.test((e as Error).message), name);
  }
  // Still accepted after all that; failures were not cached.
  await auth.authenticate(valid);
});

test('a flood of unknown kids: at most one fetch per minimum gap, never concurrent; 401 once the keys postdate the token', async () => {
  const { auth, keySet, src } = await setup();
  await keySet.refresh();
  assert.equal(keySet.fetches, 1);
  let inFlight = 0;
  let maxInFlight = 0;
  const fetchJwks = src.fetchJwks.bind(src);
  src.fetchJwks = async (uri) => {
    maxInFlight = Math.max(maxInFlight, ++inFlight);
    try {
      await new Promise((r) => setImmediate(r));
      return await fetchJwks(uri);
    } finally {
      inFlight--;
    }
  };
  const stranger = await keyPair('RS256', 'k9');
  clock += 11_000;
  // issued after the keys were fetched: the key may be new, so "not known yet" (503), not "bad" (401)
  const fresh = await Promise.all(Array.from({ length: 200 }, (_, i) => sign(stranger, { jti: `j${i}` }, { kid: `kid-${i}` })));
  const results = await Promise.allSettled(fresh.map((t) => auth.authenticate(t)));
  for (const r of results) {
    assert.ok(r.status === 'rejected' && r.reason instanceof AuthUnavailableError, String(r.status === 'rejected' && r.reason));
    assert.equal((r.reason as InstanceType<typeof AuthUnavailableError>).retryAfterSeconds, 10); // the next allowed refresh
  }
  assert.equal(keySet.fetches, 2); // the 200 callers shared one refresh
  assert.equal(maxInFlight, 1);
  for (const t of fresh.slice(0, 50)) await assert.rejects(async () => auth.authenticate(t), AuthUnavailableError);
  assert.equal(keySet.fetches, 2); // still within the 10 s gap: no further fetch
  clock += 10_000;
  await Promise.allSettled(fresh.map((t) => auth.authenticate(t)));
  assert.equal(keySet.fetches, 3);
  assert.equal(src.jwksCalls, 3);
  assert.equal(maxInFlight, 1);
  // issued in the future (beyond the skew): forged, 401 at once, not a 503 anyone could ask for
  const future = await sign(stranger, { iat: Math.floor(clock / 1000) + 100_000_000 }, { kid: 'kid-future' });
  await assert.rejects(async () => auth.authenticate(future), (e: unknown) => is401(e) && /unknown signing key kid-future/.test((e as Error).message));
  // keys fetched after the token was issued (beyond the skew): certainly unknown, 401
  clock += 6_000;
  await keySet.refresh();
  await assert.rejects(async () => auth.authenticate(fresh[0]!), (e: unknown) => is401(e) && /unknown signing key kid-0/.test((e as Error).message));
});

test('a definite refusal is remembered for 5 s by token hash; "unavailable" never is', async () => {
  const { rsa, src, auth, keySet } = await setup();
  src.failing = true;
  const good = await sign(rsa);
  await assert.rejects(async () => auth.authenticate(good), AuthUnavailableError); // keys not loaded: 503
  src.failing = false;
  clock += 10_000;
  await auth.authenticate(good); // not remembered as bad
  const bad = await sign(await keyPair('RS256', 'k1'), { jti: 'forged' }); // right kid, wrong key
  await assert.rejects(async () => auth.authenticate(bad), /signature verification failed/);
  const n = auth.verifications;
  for (let i = 0; i < 100; i++) await assert.rejects(async () => auth.authenticate(bad), is401);
  assert.equal(auth.verifications, n); // answered from the negative cache
  clock += 5_001;
  await assert.rejects(async () => auth.authenticate(bad), is401);
  assert.equal(auth.verifications, n + 1);
  assert.equal(keySet.loaded, true);
});

test('key rotation: a new kid in the source is fetched once and accepted', async () => {
  const { rsa, src, auth, keySet } = await setup();
  await auth.authenticate(await sign(rsa));
  const next = await keyPair('ES256', 'k2');
  src.keys = [rsa.jwk, next.jwk];
  clock += 11_000;
  const before = keySet.fetches;
  assert.equal((await auth.authenticate(await sign(next))).username, 'system:serviceaccount:team-a:billing');
  assert.equal(keySet.fetches, before + 1);
  // The old key is removed from the source: its tokens stop working after the next refresh.
  src.keys = [next.jwk];
  await keySet.refresh();
  // (issued before that refresh; one issued after it would be "not known yet", 503)
  await assert.rejects(async () => auth.authenticate(await sign(rsa, { jti: 'new', iat: nowS() - 10 })), is401);
});

test('the last good keys are kept when the source fails; never loaded ⇒ 503, not cached', async () => {
  const { rsa, src, auth, keySet } = await setup();
  src.failing = true;
  const token = await sign(rsa);
  await assert.rejects(async () => auth.authenticate(token), (e: unknown) => e instanceof AuthUnavailableError && e.status === 503);
  await assert.rejects(async () => auth.authenticate(token), AuthUnavailableError);
  assert.equal(keySet.fetches, 1); // rate-limited while down
  src.failing = false;
  clock += 10_000;
  await auth.authenticate(token);
  src.failing = true;
  clock += 11_000;
  await assert.rejects(keySet.refresh(), /ECONNREFUSED/);
  assert.ok(keySet.lastError);
  assert.equal(keySet.issuer, issuer);
  await auth.authenticate(await sign(rsa, { jti: 'other' }));
  // A source serving no usable key does not replace the good set either.
  src.failing = false;
  src.keys = [{ kty: 'oct', k: 'c2VjcmV0', kid: 'k1', alg: 'HS256' }];
  await assert.rejects(keySet.refresh(), /no usable signing key/);
  await auth.authenticate(await sign(rsa, { jti: 'third' }));
});

test('results are cached for min(ttl, exp); revocation is checked on cache hits too', async () => {
  const sas = new Map([['team-a/billing', 'sa-uid']]);
  const pods = new Map([['team-a/billing-7f9', 'pod-uid']]);
  const live = (m: Map<string, string>) => (ns: string, n: string) => {
    const uid = m.get(`${ns}/${n}`);
    return uid === undefined ? undefined : { uid };
  };
  const gone = new Set<string>();
  const lookups: RevocationLookups = {
    serviceAccount: live(sas), pod: live(pods), secret: () => undefined, node: () => ({ uid: 'node-uid' }), gone: (u) => gone.has(u),
  };
  const { rsa, auth } = await setup({ revocation: (c) => revocationReason(c, lookups, clock) });
  const token = await sign(rsa, { exp: nowS() + 5 });
  await auth.authenticate(token);
  await auth.authenticate(token);
  assert.equal(auth.verifications, 1);
  pods.delete('team-a/billing-7f9');
  gone.add('pod-uid'); // the watch delivered the deletion
  await assert.rejects(async () => auth.authenticate(token), (e: unknown) => is401(e) && /pod team-a\/billing-7f9 no longer exists/.test((e as Error).message));
  assert.equal(auth.verifications, 1); // it was a cache hit
  pods.set('team-a/billing-7f9', 'pod-uid');
  clock += 6_000; // past exp (5 s) before the ttl (10 s), within the 5 s tolerance
  await auth.authenticate(token);
  assert.equal(auth.verifications, 2); // the entry ended at exp
  clock += 5_000; // beyond exp + tolerance: refused before any verification
  await assert.rejects(async () => auth.authenticate(token), (e: unknown) => is401(e) && /expired/.test((e as Error).message));
  assert.equal(auth.verifications, 2);
});

test('revocation not known yet (caches not synced) is 503 with Retry-After, never 401', async () => {
  const { rsa, auth } = await setup({ revocation: () => ({ unknown: 'pod team-a/billing-7f9 cannot be checked yet (cache not synced)' }) });
  await assert.rejects(async () => auth.authenticate(await sign(rsa)),
    (e: unknown) => e instanceof AuthUnavailableError && e.retryAfterSeconds === 1 && /cannot be checked yet/.test(e.message));
});

test('clock skew: exp and nbf within the tolerance pass, beyond it fail; the tolerance is capped at 60 s', async () => {
  const { rsa, keySet } = await setup();
  const mk = (tol: number) => new JwksAuthenticator(keySet, ['access-gateway'], 10, { now: () => clock, clockToleranceSeconds: tol });
  const late = await sign(rsa, { exp: nowS() - 20, jti: 'late' });
  const early = await sign(rsa, { nbf: nowS() + 20, iat: nowS() + 20, jti: 'early' });
  await assert.rejects(async () => mk(5).authenticate(late), is401);
  await assert.rejects(async () => mk(5).authenticate(early), is401);
  await mk(30).authenticate(late);
  await mk(30).authenticate(early);
  const old = await sign(rsa, { exp: nowS() - 90, jti: 'old' });
  await assert.rejects(async () => mk(3600).authenticate(old), is401); // capped at the apiserver's 60 s
});

test('the cache takes its entries from the namespace\'s budget, and gives them back when closed', async () => {
  const budget = new EntryBudget(1, () => clock);
  const { rsa, auth } = await setup({ cacheBudget: budget });
  const other = new TokenCache<string>({ now: () => clock, budget });
  await other.getOrLoad('x', async () => ({ value: 'x', ttlMs: 60_000 })); // the budget's one entry
  const token = await sign(rsa);
  await auth.authenticate(token);
  await auth.authenticate(token);
  assert.equal(auth.verifications, 2, 'nothing of its own to evict: not cached');
  other.close();
  await auth.authenticate(token);
  await auth.authenticate(token);
  assert.equal(auth.verifications, 3, 'cached once the budget had room');
  auth.close();
  await other.getOrLoad('y', async () => ({ value: 'y', ttlMs: 60_000 }));
  assert.equal(other.size, 0, 'a closed cache caches nothing more');
  const third = new TokenCache<string>({ now: () => clock, budget });
  await third.getOrLoad('z', async () => ({ value: 'z', ttlMs: 60_000 }));
  assert.equal(third.size, 1, 'the closed authenticator gave its entry back');
});

test('ttl 0 disables the cache', async () => {
  const { rsa, auth } = await setup({ ttl: 0 });
  const token = await sign(rsa);
  await auth.authenticate(token);
  await auth.authenticate(token);
  assert.equal(auth.verifications, 2);
});

test('revocationReason: bound objects must exist with the same uid and not be deleted for over 60 s; unknown is not revoked', () => {
  const now = Date.parse('2030-01-01T00:10:00Z');
  const c: BoundClaims = {
    namespace: 'ns', serviceaccount: { name: 'sa', uid: 'u1' }, pod: { name: 'p', uid: 'u2' }, secret: { name: 's', uid: 'u3' }, node: { name: 'n', uid: 'u4' },
  };
  const ok: RevocationLookups = { serviceAccount: () => ({ uid: 'u1' }), pod: () => ({ uid: 'u2' }), secret: () => ({ uid: 'u3' }), node: () => ({ uid: 'u4' }) };
  const revoked = (r: Revocation) => (r && 'revoked' in r ? r.revoked : `not revoked: ${JSON.stringify(r)}`);
  assert.equal(revocationReason(c, ok, now), null);
  assert.deepEqual(revocationReason(c, { ...ok, serviceAccount: () => null }, now), { unknown: 'service account ns/sa cannot be checked yet (cache not synced)' });
  assert.match(revoked(revocationReason(c, { ...ok, serviceAccount: () => undefined }, now)), /service account ns\/sa no longer exists/);
  assert.match(revoked(revocationReason(c, { ...ok, serviceAccount: () => ({ uid: 'other' }) }, now)), /service account ns\/sa has been recreated/);
  assert.match(revoked(revocationReason(c, { ...ok, pod: () => undefined }, now)), /pod ns\/p no longer exists/);
  assert.deepEqual(revocationReason(c, { ...ok, pod: () => null }, now), { unknown: 'pod ns/p cannot be checked yet (cache not synced)' });
  assert.match(revoked(revocationReason(c, { ...ok, secret: () => ({ uid: 'other' }) }, now)), /secret ns\/s has been recreated/);
  // nodes are cluster-scoped: looked up without a namespace
  assert.match(revoked(revocationReason(c, { ...ok, node: (ns, n) => (ns === '' && n === 'n' ? undefined : { uid: 'u4' }) }, now)), /^node n no longer exists/);
  assert.match(revoked(revocationReason(c, { ...ok, node: () => ({ uid: 'u5' }) }, now)), /node n has been recreated/);
  assert.deepEqual(revocationReason(c, { ...ok, node: () => null }, now), { unknown: 'node n cannot be checked yet (cache not synced)' });
  // issued under 15 s ago: a missing object, or one of another uid, may just not be watched yet
  // (503), unless the watch delivered its deletion (401); older tokens: 401 as above
  const fresh: BoundClaims = { ...c, iat: (now - 14_000) / 1000 };
  assert.deepEqual(revocationReason(fresh, { ...ok, pod: () => undefined }, now), { unknown: 'pod ns/p (uid u2) is not in the cache yet' });
  assert.deepEqual(revocationReason(fresh, { ...ok, serviceAccount: () => ({ uid: 'old' }) }, now), { unknown: 'service account ns/sa (uid u1) is not in the cache yet' });
  assert.match(revoked(revocationReason(fresh, { ...ok, pod: () => undefined, gone: (u) => u === 'u2' }, now)), /pod ns\/p no longer exists/);
  assert.match(revoked(revocationReason({ ...c, iat: (now - 16_000) / 1000 }, { ...ok, pod: () => undefined }, now)), /pod ns\/p no longer exists/);
  // deletionTimestamp: within 60 s still valid (the apiserver's leeway), older revokes like deletion
  const deleting = (ago: number) => ({ uid: 'u2', deletionTimestamp: new Date(now - ago).toISOString() });
  assert.equal(revocationReason(c, { ...ok, pod: () => deleting(59_000) }, now), null);
  assert.equal(revocationReason(c, { ...ok, pod: () => deleting(60_000) }, now), null);
  assert.match(revoked(revocationReason(c, { ...ok, pod: () => deleting(61_000) }, now)), /pod ns\/p is being deleted \(since 2030-01-01T00:08:59.000Z\)/);
  for (const kind of ['serviceAccount', 'secret', 'node'] as const) {
    const uid = { serviceAccount: 'u1', secret: 'u3', node: 'u4' }[kind];
    assert.match(revoked(revocationReason(c, { ...ok, [kind]: () => ({ uid, deletionTimestamp: new Date(now - 61_000).toISOString() }) }, now)), /is being deleted/, kind);
  }
  // Objects the token is not bound to are not looked up.
  const unbound: BoundClaims = { namespace: 'ns', serviceaccount: { name: 'sa', uid: 'u1' } };
  const boom = () => { throw new Error('not bound'); };
  assert.equal(revocationReason(unbound, { serviceAccount: () => ({ uid: 'u1' }), pod: boom, secret: boom, node: boom }, now), null);
});

test('JwksReadiness: ready only with keys loaded and caches synced; onReady fires once both are', async () => {
  const src = new FakeSource();
  src.keys = [(await keyPair('RS256', 'k1')).jwk];
  src.failing = true;
  const keySet = new JwksKeySet(src, { minRefreshIntervalMs: 50 });
  let markSynced!: () => void;
  const syncedP = new Promise<void>((r) => { markSynced = r; });
  let started = 0;
  const revocation: RevocationSource = {
    synced: false,
    start() { started++; },
    whenSynced: () => syncedP,
    check: () => null,
  };
  const readiness = new JwksReadiness(keySet, revocation);
  let fired = 0;
  readiness.onReady(() => fired++);
  assert.equal(readiness.ready(), false);
  assert.ok(started >= 1); // ready() starts the caches
  src.failing = false;
  await keySet.refresh().catch(() => {}); // the failing first attempt
  await keySet.refresh();
  assert.equal(readiness.ready(), false); // keys, but caches not synced
  (revocation as { synced: boolean }).synced = true;
  markSynced();
  await syncedP;
  await new Promise((r) => setImmediate(r));
  assert.equal(readiness.ready(), true);
  assert.equal(fired, 1);
  keySet.stop();
});

test('algFor infers from kty/crv and refuses symmetric or private keys', () => {
  assert.equal(algFor({ kty: 'RSA', n: 'x', e: 'AQAB' }), 'RS256');
  assert.equal(algFor({ kty: 'RSA', n: 'x', e: 'AQAB', alg: 'PS384' }), 'PS384');
  assert.equal(algFor({ kty: 'EC', crv: 'P-256' }), 'ES256');
  assert.equal(algFor({ kty: 'EC', crv: 'P-384' }), 'ES384');
  assert.equal(algFor({ kty: 'EC', crv: 'P-521' }), 'ES512');
  assert.equal(algFor({ kty: 'OKP', crv: 'Ed25519' }), 'EdDSA');
  assert.equal(algFor({ kty: 'OKP', crv: 'X25519' }), null);
  assert.equal(algFor({ kty: 'oct', k: 'c2VjcmV0' }), null);
  assert.equal(algFor({ kty: 'RSA', alg: 'HS256' }), null);
  assert.equal(algFor({ kty: 'RSA', n: 'x', e: 'AQAB', d: 'y' }), null);
  assert.equal(algFor({ kty: 'RSA', use: 'enc' }), null);
});

test('start() loads at once and refreshes every interval; stop() ends it (on a fake clock)', async () => {
  const src = new FakeSource();
  src.keys = [(await keyPair('RS256', 'k1')).jwk];
  const clock = new FakeClock();
  const keySet = new JwksKeySet(src, { refreshIntervalMs: 20_000, clock });
  keySet.start();
  await keySet.refreshIfAllowed(); // the first load, in flight
  assert.ok(keySet.loaded);
  assert.equal(keySet.fetches, 1);
  clock.advance(19_999);
  assert.equal(keySet.fetches, 1);
  clock.advance(1);
  assert.equal(keySet.fetches, 2);
  await keySet.refreshIfAllowed(); // joins the fetch in flight (within the minimum gap: no new one)
  assert.equal(keySet.fetches, 2);
  clock.advance(20_000);
  assert.equal(keySet.fetches, 3);
  await keySet.refreshIfAllowed();
  keySet.stop();
  assert.equal(clock.waiting, 0);
  clock.advance(100_000);
  assert.equal(keySet.fetches, 3);
});
