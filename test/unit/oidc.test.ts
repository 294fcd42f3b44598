// OIDC issuer configuration (the apiserver's JWT authenticator shape) and claim mapping, as pure
// logic: what is refused at configuration time, and the identity a token's claims give.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:https';
import { createServer as createPlainServer } from 'node:http';
import { Agent } from 'undici';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { getJSON, OidcIssuer, OidcIssuers, type JwtAuthenticator } from '../../src/auth/oidc.js';
import { AuthUnavailableError, UnauthenticatedError } from '../../src/errors.js';
import { makeCA, makeLeaf } from '../support/certs.js';

const base = (m: Partial<JwtAuthenticator> = {}): JwtAuthenticator => ({
  issuer: { url: 'https://idp.example.com', audiences: ['kubernetes'] },
  claimMappings: { username: { claim: 'email', prefix: 'idp:' }, groups: { claim: 'groups', prefix: 'idp:' } },
  ...m,
});

test('configuration is checked as the apiserver checks it, with the compiler message for CEL', () => {
  const problems: [Partial<JwtAuthenticator>, RegExp][] = [
    [{ issuer: { url: 'http://idp.example.com', audiences: ['k'] } }, /issuer.url: an https URL/],
    [{ issuer: { url: 'https://idp.example.com', audiences: [] } }, /issuer.audiences: at least one/],
    [{ claimMappings: { username: { claim: 'sub' } } }, /claimMappings.username.prefix: required when claim is set/],
    [{ claimMappings: { username: { claim: 'sub', prefix: '', expression: 'claims.sub' } } }, /mutually exclusive/],
    [{ claimMappings: { username: { expression: 'claims.(' } } }, /claimMappings.username.expression: .*expecting/],
    [{ claimMappings: { username: { expression: 'claims.sub' }, extra: [{ key: 'access-gateway.io/caller', valueExpression: "'x'" }] } }, /is the gateway's own/],
    [{ claimMappings: { username: { expression: 'claims.sub' }, extra: [{ key: 'NoDomain', valueExpression: "'x'" }] } }, /domain-prefixed/],
    [{ userValidationRules: [{ expression: 'user.(' }] }, /userValidationRules\[0\].expression/],
  ];
  for (const [m, why] of problems) assert.throws(() => new OidcIssuer(base(m)), why, JSON.stringify(m));
  const all = new OidcIssuers({ jwt: [base(), base(), { ...base(), issuer: { url: 'https://b.example.com', audiences: ['k'] }, claimMappings: { username: { expression: 'claims.(' } } }] });
  assert.match(all.states()['https://idp.example.com']!, /configured twice/);
  assert.match(all.states()['https://b.example.com']!, /jwt\[2\] \(https:\/\/b.example.com\): claimMappings.username.expression/);
});

test('a username expression reading claims.email needs claims.email_verified read too (the apiserver refuses it at load), read from the parsed expression', () => {
  const withMappings = (username: string, more: Partial<JwtAuthenticator['claimMappings']> = {}, rules?: JwtAuthenticator['claimValidationRules']) =>
    base({ claimMappings: { username: { expression: username }, ...more }, ...(rules ? { claimValidationRules: rules } : {}) });
  const unverified = /claimMappings.username.expression: it reads claims.email, so claims.email_verified must be read/;
  // the bypass: an unverified address became a username (claim: email is checked per token)
  for (const username of ["'idp:' + claims.email", "'idp:' + claims[\"email\"]", "has(claims.email) ? 'idp:' + claims.email : claims.sub",
    "[claims.sub, claims.email].filter(x, x != '')[0]", "claims.emailx == '' ? claims.email : claims.sub"]) {
    assert.throws(() => new OidcIssuer(withMappings(username)), unverified, username);
  }
  // reading the flag where only groups or uid are mapped does not count, as in the apiserver
  assert.throws(() => new OidcIssuer(withMappings("'idp:' + claims.email", { groups: { expression: 'claims.email_verified ? claims.groups : []' } })), unverified);
  assert.throws(() => new OidcIssuer(withMappings("'idp:' + claims.email", { uid: { expression: 'string(claims.email_verified)' } })), unverified);
  // the claim form of a validation rule does not count either (the apiserver reads only expressions)
  assert.throws(() => new OidcIssuer(withMappings("'idp:' + claims.email", {}, [{ claim: 'email_verified', requiredValue: 'true' }])), unverified);
  // the flag read in the username, an extra or a claim rule (select or index) is what the apiserver takes
  const ok: JwtAuthenticator[] = [
    withMappings("claims.email_verified ? 'idp:' + claims.email : ''"),
    withMappings("'idp:' + claims.email", {}, [{ expression: 'claims.email_verified == true', message: 'verified emails only' }]),
    withMappings("'idp:' + claims.email", {}, [{ expression: "claims['email_verified']" }]),
    withMappings("'idp:' + claims.email", { extra: [{ key: 'example.com/verified', valueExpression: 'string(claims.email_verified)' }] }),
    // no claims.email read: another claim, a longer name, a string, another variable's field
    withMappings("'idp:' + claims.emailx + 'claims.email'"),
    withMappings("'idp:' + claims.sub", { groups: { expression: '[claims.email]' } }),
  ];
  for (const cfg of ok) assert.doesNotThrow(() => new OidcIssuer(cfg), JSON.stringify(cfg));
  assert.throws(() => new OidcIssuer(ok[1]!).identity({ email: 'ceo@example.com', email_verified: false }), /verified emails only/);
  assert.equal(new OidcIssuer(ok[1]!).identity({ email: 'a@example.com', email_verified: true }).username, 'idp:a@example.com');
  // an issuer so configured is a problem of its own (the gateway naming it: Accepted=False, InvalidIssuer)
  const all = new OidcIssuers({ jwt: [withMappings("'idp:' + claims.email")] });
  assert.match(all.states()['https://idp.example.com']!, /^jwt\[0\] \(https:\/\/idp.example.com\): claimMappings.username.expression: it reads claims.email/);
});

test('claims map to the identity; system: names and failed rules are refused', () => {
  const i = new OidcIssuer(base({
    claimValidationRules: [{ claim: 'hd', requiredValue: 'example.com' }],
    claimMappings: {
      username: { claim: 'email', prefix: 'idp:' }, groups: { claim: 'groups', prefix: 'idp:' }, uid: { claim: 'sub' },
      extra: [{ key: 'example.com/team', valueExpression: "claims.groups.filter(g, g.startsWith('team-'))" }],
    },
    userValidationRules: [{ expression: "!user.username.contains('+')", message: 'no plus addresses' }],
  }));
  const claims = { email: 'a@example.com', email_verified: true, hd: 'example.com', sub: '42', groups: ['devs', 'team-x', 'devs'] };
  assert.deepEqual(i.identity(claims), { username: 'idp:a@example.com', uid: '42', groups: ['idp:devs', 'idp:team-x'], extra: { 'example.com/team': ['team-x'] } });
  assert.throws(() => i.identity({ ...claims, hd: 'other.org' }), /claim hd must be "example.com"/);
  assert.throws(() => i.identity({ ...claims, email_verified: false }), /email_verified is not true/);
  assert.throws(() => i.identity({ ...claims, email: 'a+b@example.com' }), /no plus addresses/);
  const raw = new OidcIssuer(base({ claimMappings: { username: { expression: 'claims.sub' }, groups: { expression: 'claims.groups' } } }));
  assert.throws(() => raw.identity({ sub: 'system:admin', groups: [] }), /may not name system: users/);
  assert.throws(() => raw.identity({ sub: 'bob', groups: ['system:masters'] }), /may not name system: groups \(system:masters\)/);
  // team: names are a team's client CA's: an issuer naming them would act as that team's people
  assert.throws(() => raw.identity({ sub: 'team:team-b:alice', groups: [] }), /may not name team: users \(team:team-b:alice\)/);
  assert.throws(() => raw.identity({ sub: 'bob', groups: ['devs', 'team:team-b:oncall'] }), /may not name team: groups \(team:team-b:oncall\)/);
  assert.deepEqual(raw.identity({ sub: 'teams:x', groups: ['my-team:x'] }).groups, ['my-team:x']);
  assert.throws(() => raw.identity({ sub: 1, groups: [] } as never), /gives no username/);
  // what the apiserver's header parser would trim into a system: name, or cut into two headers
  assert.throws(() => raw.identity({ sub: '\tsystem:kube-controller-manager', groups: [] }), /mapped username .* has surrounding whitespace/);
  assert.throws(() => raw.identity({ sub: 'bob', groups: [' system:masters'] }), /mapped group .* has surrounding whitespace/);
  assert.throws(() => raw.identity({ sub: 'bob\r\nx: y', groups: [] }), /holds control characters|surrounding whitespace/);
  assert.throws(() => raw.identity({ sub: 'bob', groups: [''] }), /mapped group "" is empty/);
  assert.throws(() => raw.identity({ sub: 'bob', groups: [1] } as never), /groups are not strings/);
  assert.deepEqual(raw.identity({ sub: 'bob', groups: ['ops'] }).groups, ['ops']);
  // a Service backend may split X-Remote-Group on commas (Node joins repeated headers with ", ")
  assert.throws(() => raw.identity({ sub: 'bob', groups: ['ops,system:masters'] }), /mapped group "ops,system:masters" holds a comma/);
  assert.throws(() => new OidcIssuer(base()).identity({ email: 'a@example.com', groups: ['x, idp:admins'] }), /holds a comma/);
  // a single string claim is one group, as in the apiserver
  assert.deepEqual(new OidcIssuer(base()).identity({ email: 'a@example.com', groups: 'devs' }).groups, ['idp:devs']);
});

test('CEL: nested comprehensions, overlong expressions and huge results are refused', async () => {
  const { compileCel } = await import('../../src/auth/cel.js');
  assert.deepEqual(compileCel("claims.groups.filter(g, g in claims.admins)").run({ claims: { groups: ['a', 'b'], admins: ['b'] } }), ['b']);
  assert.throws(() => compileCel('claims.a.filter(x, claims.b.exists(y, y == x))'), /deeper than 1: too costly/);
  assert.throws(() => compileCel(`'${'x'.repeat(5000)}'`), /longer than 4096/);
  const square = compileCel('claims.g.map(x, claims.g)');
  assert.throws(() => square.run({ claims: { g: Array.from({ length: 40 }, (_, i) => `g${i}`) } }), /more than 1024 elements/);
});

/** A signing key of the test IdP. */
async function signingKey(kid: string) {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  return { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' } };
}

/** An OIDC issuer over HTTPS on loopback: its discovery document and the keys in `state.published`
 * (503 while `state.failing`), counting key-set fetches. */
async function testIdP(t: { after(fn: () => void): void }, first: Awaited<ReturnType<typeof signingKey>>) {
  const dir = mkdtempSync(join(tmpdir(), 'agw-oidc-'));
  const ca = makeCA(dir, 'ca');
  const leaf = makeLeaf(dir, ca, 'idp', { cn: 'idp', ips: ['127.0.0.1'] });
  const state = { published: [first], failing: false, fetches: 0, url: '' };
  const server = createServer({ cert: leaf.cert, key: leaf.key }, (req, res) => {
    res.setHeader('content-type', 'application/json');
    if (req.url === '/.well-known/openid-configuration') return res.end(JSON.stringify({ issuer: state.url, jwks_uri: `${state.url}/jwks` }));
    state.fetches++;
    if (state.failing) {
      res.statusCode = 503;
      return res.end('down');
    }
    res.end(JSON.stringify({ keys: state.published.map((k) => k.jwk) }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => server.close());
  state.url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { state, ca };
}

test('a kid the keys fetched under 10 s ago lack: 503 until they may be fetched again, unless the token predates them (401)', async (t) => {
  const key = signingKey;
  const idp = await testIdP(t, await key('k1'));
  const { url } = idp.state;
  const ca = idp.ca;
  const issuer = new OidcIssuer({ ...base(), issuer: { url, audiences: ['kubernetes'], certificateAuthority: ca.cert } });
  const now = Math.floor(Date.now() / 1000);
  const sign = (k: Awaited<ReturnType<typeof key>>, iat = now) => new SignJWT({ email: 'alice@example.com', groups: ['devs'] })
    .setProtectedHeader({ alg: 'ES256', kid: k.kid }).setIssuer(url).setAudience('kubernetes').setIssuedAt(iat).setExpirationTime(now + 600)
    .sign(k.privateKey);

  const k1 = idp.state.published[0]!;
  assert.equal((await issuer.authenticate(await sign(k1))).id.username, 'idp:alice@example.com');
  assert.equal(idp.state.fetches, 1);
  // the issuer rotates; a token of the new key arrives within the 10 s since the last fetch
  const k2 = await key('k2');
  idp.state.published = [k2];
  const early = await issuer.authenticate(await sign(k2)).then(() => null, (e: unknown) => e);
  assert.ok(early instanceof AuthUnavailableError, `a rotation not fetched yet is not the token's fault: ${String(early)}`);
  assert.ok(early.retryAfterSeconds! >= 1 && early.retryAfterSeconds! <= 10, String(early.retryAfterSeconds));
  assert.equal(idp.state.fetches, 1, 'no fetch during the cooldown');
  // a token issued before the keys were fetched, with a kid they lack, is refused
  const stale = await issuer.authenticate(await sign(k2, now - 3600)).then(() => null, (e: unknown) => e);
  assert.ok(stale instanceof UnauthenticatedError, String(stale));
  // ...and so is one "issued" in the future: forged, not a 503 anyone could ask for
  const future = await issuer.authenticate(await sign(k2, now + 100_000_000)).then(() => null, (e: unknown) => e);
  assert.ok(future instanceof UnauthenticatedError, String(future));
});

test('an issuer\'s keys are fetched at most every 10 s whether the fetch works or fails (a flood of made-up kids while it is down costs one); a failed fetch keeps the last good keys, also past 10 minutes', async (t) => {
  const key = signingKey;
  const k1 = await key('k1');
  const idp = await testIdP(t, k1);
  const { url } = idp.state;
  const ca = idp.ca;
  let clock = Date.now();
  const issuer = new OidcIssuer({ ...base(), issuer: { url, audiences: ['kubernetes'], certificateAuthority: ca.cert } }, () => clock);
  const now = Math.floor(Date.now() / 1000);
  const sign = (k: Awaited<ReturnType<typeof key>>) => new SignJWT({ email: 'alice@example.com' })
    .setProtectedHeader({ alg: 'ES256', kid: k.kid }).setIssuer(url).setAudience('kubernetes').setIssuedAt(now).setExpirationTime(now + 3600)
    .sign(k.privateKey);
  const good = await sign(k1);
  const madeUp = await sign(await key('made-up'));
  const outcome = (token: string) => issuer.authenticate(token).then(() => 'ok', (e: unknown) => (e as Error).constructor.name);

  assert.equal(await outcome(good), 'ok');
  assert.equal(idp.state.fetches, 1);
  // the issuer's keys go down; past the 10 s, a flood of made-up kids
  idp.state.failing = true;
  clock += 11_000;
  const flood = await Promise.all(Array.from({ length: 50 }, () => outcome(madeUp)));
  for (let i = 0; i < 50; i++) flood.push(await outcome(madeUp));
  assert.equal(idp.state.fetches, 2, 'one fetch for the whole flood');
  assert.ok(flood.every((o) => o === 'AuthUnavailableError'), `tokens newer than the keys, no keys loaded for them: the issuer's fault, not theirs: ${flood.join()}`);
  assert.equal(await outcome(good), 'ok', 'the last good keys still verify');
  // 10 minutes on, still down: the old keys are kept, fetched again once; a token of a key the
  // issuer rotated to meanwhile is 503 (its fetch failed), not 401
  clock += 11 * 60_000;
  const k2 = await key('k2');
  assert.equal(await outcome(await sign(k2)), 'AuthUnavailableError');
  assert.equal(await outcome(good), 'ok');
  assert.equal(await outcome(good), 'ok');
  assert.equal(idp.state.fetches, 3);
  // back up, and rotated: the new kid is fetched once the 10 s have passed
  idp.state.failing = false;
  idp.state.published = [k1, k2];
  clock += 11_000;
  assert.equal(await outcome(await sign(k2)), 'ok');
  assert.equal(idp.state.fetches, 4);
});

test('an issuer\'s documents: redirects followed only to https, and not past 3; at most 1 MiB read', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'agw-oidc-'));
  const ca = makeCA(dir, 'ca');
  const leaf = makeLeaf(dir, ca, 'idp', { cn: 'idp', ips: ['127.0.0.1'] });
  let plainHits = 0;
  const plain = createPlainServer((_req, res) => { plainHits++; res.end('{}'); });
  await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
  t.after(() => plain.close());
  const plainURL = `http://127.0.0.1:${(plain.address() as AddressInfo).port}/internal`;
  const server = createServer({ cert: leaf.cert, key: leaf.key }, (req, res) => {
    const go = (to: string) => { res.statusCode = 302; res.setHeader('location', to); res.end(); };
    if (req.url === '/doc') return res.end(JSON.stringify({ ok: true }));
    if (req.url === '/to-doc') return go('/doc');
    if (req.url === '/to-plain') return go(plainURL);
    if (req.url === '/loop') return go('/loop');
    if (req.url === '/big') return res.end(JSON.stringify({ pad: 'x'.repeat(1 << 20) }));
    res.statusCode = 404;
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => server.close());
  const base = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const dispatcher = new Agent({ connect: { ca: ca.cert } });
  t.after(() => dispatcher.close());
  assert.deepEqual(await getJSON(`${base}/to-doc`, dispatcher), { ok: true });
  await assert.rejects(getJSON(`${base}/to-plain`, dispatcher), /redirected to http: \(only https is followed\)/);
  assert.equal(plainHits, 0, 'the plain-http address is never asked');
  await assert.rejects(getJSON(`${base}/loop`, dispatcher), /more than 3 redirects/);
  await assert.rejects(getJSON(`${base}/big`, dispatcher), /longer than 1048576 bytes/);
  await assert.rejects(getJSON(`${base}/nothing`, dispatcher), /HTTP 404/);
});

test('a token without a kid, or with a kid several keys share, is checked against each of them (as the apiserver does): the one that signed it passes; a key not published is refused', async (t) => {
  const k1 = await signingKey('shared');
  const k2 = await signingKey('shared');
  const { kid: _a, ...noKid1 } = k1.jwk;
  const { kid: _b, ...noKid2 } = k2.jwk;
  const idp = await testIdP(t, { ...k1, jwk: noKid1 as typeof k1.jwk });
  idp.state.published.push({ ...k2, jwk: noKid2 as typeof k2.jwk });
  const { url } = idp.state;
  const issuer = new OidcIssuer({ ...base(), issuer: { url, audiences: ['kubernetes'], certificateAuthority: idp.ca.cert } });
  const now = Math.floor(Date.now() / 1000);
  const sign = (k: Awaited<ReturnType<typeof signingKey>>, kid?: string, exp = now + 600) => new SignJWT({ email: 'alice@example.com', groups: ['devs'] })
    .setProtectedHeader({ alg: 'ES256', ...(kid ? { kid } : {}) }).setIssuer(url).setAudience('kubernetes').setIssuedAt(now).setExpirationTime(exp)
    .sign(k.privateKey);
  assert.equal((await issuer.authenticate(await sign(k2))).id.username, 'idp:alice@example.com', 'signed by the second key');
  assert.equal((await issuer.authenticate(await sign(k1))).id.username, 'idp:alice@example.com', 'signed by the first');
  const other = await signingKey('other');
  assert.ok((await issuer.authenticate(await sign(other)).then(() => null, (e: unknown) => e)) instanceof UnauthenticatedError);
  // a key that signed it decides its claims too: expired is refused, not tried on
  const expired = await issuer.authenticate(await sign(k2, undefined, now - 60)).then(() => null, (e: unknown) => e);
  assert.ok(expired instanceof UnauthenticatedError && /exp/.test(expired.message), String(expired));
  // a kid two keys share
  idp.state.published = [k1, k2];
  const shared = new OidcIssuer({ ...base(), issuer: { url, audiences: ['kubernetes'], certificateAuthority: idp.ca.cert } });
  assert.equal((await shared.authenticate(await sign(k2, 'shared'))).id.username, 'idp:alice@example.com');
});
