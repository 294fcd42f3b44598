import { test } from 'node:test';
import assert from 'node:assert/strict';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT } from 'jose';
import type { CryptoKey, JWK, JWTPayload } from 'jose';
import {
  algFor, JwksAuthenticator, JwksKeySet, revocationReason,
  type BoundClaims, type KeySource, type OidcDiscovery, type RevocationLookups,
} from '../../src/auth/jwks.js';
import { AuthUnavailableError, UnauthenticatedError } from '../../src/dataplane/errors.js';

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

async function setup(opts: { revocation?: (c: BoundClaims) => string | null; ttl?: number } = {}) {
  clock = T0;
  const rsa = await keyPair('RS256', 'k1');
  const src = new FakeSource();
  src.keys = [rsa.jwk];
  const keySet = new JwksKeySet(src, { now: () => clock });
  const auth = new JwksAuthenticator(keySet, ['access-gateway', 'other'], opts.ttl ?? 10, {
    now: () => clock,
    ...(opts.revocation ? { revocation: { check: opts.revocation } } : {}),
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
    ['expired', await sign(rsa, { exp: nowS() - 1 }), /"exp"/],
    ['nbf in the future', await sign(rsa, { nbf: nowS() + 60 }), /"nbf"/],
    ['wrong issuer', await sign(rsa, { iss: 'https://evil.example' }), /"iss"/],
    ['wrong audience', await sign(rsa, { aud: 'https://kubernetes.default.svc' }), /"aud"/],
    ['no audience', await sign(rsa, { aud: undefined }), /"aud"/],
    ['unknown kid', await sign(stranger), /unknown signing key k9/],
    ['alg none', `${b64({ alg: 'none', kid: 'k1' })}.${p}.`, /alg none/],
    ['HS256 with the public key as secret', await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', kid: 'k1' }).sign(hsSecret), /alg HS256/],
    ['RS384 header on an RS256 key', `${b64({ alg: 'RS384', kid: 'k1' })}.${p}.${s}`, /"alg" \(Algorithm\) Header Parameter value not allowed/],
    ['tampered payload', tampered, /signature/],
    ['no kubernetes.io claim', await sign(rsa, { 'kubernetes.io': undefined }), /kubernetes\.io/],
    ['sub not matching the claim', await sign(rsa, { sub: 'system:serviceaccount:team-a:other' }), /sub/],
    ['not a service account', await sign(rsa, { sub: 'alice' }), /sub/],
    ['garbage', 'a.b.c', /not a JWS/],
  ];
  for (const [name, token, msg] of cases) {
    await assert.rejects(auth.authenticate(token), (e: unknown) => is401(e) && msg.test((e as Error).message), name);
  }
  // Still accepted after all that; failures were not cached.
  await auth.authenticate(valid);
});

test('unknown kid: one rate-limited refresh, still unknown afterwards', async () => {
  const { auth, keySet } = await setup();
  await keySet.refresh();
  assert.equal(keySet.fetches, 1);
  const stranger = await keyPair('RS256', 'k9');
  clock += 11_000;
  const tokens = await Promise.all(Array.from({ length: 100 }, (_, i) => sign(stranger, { jti: `j${i}` })));
  const results = await Promise.allSettled(tokens.map((t) => auth.authenticate(t)));
  assert.ok(results.every((r) => r.status === 'rejected' && is401(r.reason)));
  assert.equal(keySet.fetches, 2); // concurrent callers shared one refresh
  for (const t of tokens) await assert.rejects(auth.authenticate(t), is401);
  assert.equal(keySet.fetches, 2); // still within the 10 s window
  clock += 10_000;
  await assert.rejects(auth.authenticate(tokens[0]!), is401);
  assert.equal(keySet.fetches, 3);
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
  await assert.rejects(auth.authenticate(await sign(rsa, { jti: 'new' })), is401);
});

test('the last good keys are kept when the source fails; never loaded ⇒ 503, not cached', async () => {
  const { rsa, src, auth, keySet } = await setup();
  src.failing = true;
  const token = await sign(rsa);
  await assert.rejects(auth.authenticate(token), (e: unknown) => e instanceof AuthUnavailableError && e.status === 503);
  await assert.rejects(auth.authenticate(token), AuthUnavailableError);
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
  const lookups: RevocationLookups = {
    serviceAccountUid: (ns, n) => sas.get(`${ns}/${n}`),
    podUid: (ns, n) => pods.get(`${ns}/${n}`),
    secretUid: () => undefined,
  };
  const { rsa, auth } = await setup({ revocation: (c) => revocationReason(c, lookups) });
  const token = await sign(rsa, { exp: nowS() + 5 });
  await auth.authenticate(token);
  await auth.authenticate(token);
  assert.equal(auth.verifications, 1);
  pods.delete('team-a/billing-7f9');
  await assert.rejects(auth.authenticate(token), (e: unknown) => is401(e) && /pod team-a\/billing-7f9 no longer exists/.test((e as Error).message));
  assert.equal(auth.verifications, 1); // it was a cache hit
  pods.set('team-a/billing-7f9', 'pod-uid');
  clock += 6_000; // past exp (5 s) before the ttl (10 s)
  await assert.rejects(auth.authenticate(token), (e: unknown) => is401(e) && /"exp"/.test((e as Error).message));
  assert.equal(auth.verifications, 2);
});

test('ttl 0 disables the cache', async () => {
  const { rsa, auth } = await setup({ ttl: 0 });
  const token = await sign(rsa);
  await auth.authenticate(token);
  await auth.authenticate(token);
  assert.equal(auth.verifications, 2);
});

test('revocationReason: bound objects must exist with the same uid; unknown fails closed', () => {
  const c: BoundClaims = { namespace: 'ns', serviceaccount: { name: 'sa', uid: 'u1' }, pod: { name: 'p', uid: 'u2' }, secret: { name: 's', uid: 'u3' } };
  const ok: RevocationLookups = { serviceAccountUid: () => 'u1', podUid: () => 'u2', secretUid: () => 'u3' };
  assert.equal(revocationReason(c, ok), null);
  assert.match(revocationReason(c, { ...ok, serviceAccountUid: () => null })!, /service account ns\/sa cannot be checked yet/);
  assert.match(revocationReason(c, { ...ok, serviceAccountUid: () => undefined })!, /service account ns\/sa no longer exists/);
  assert.match(revocationReason(c, { ...ok, serviceAccountUid: () => 'other' })!, /service account ns\/sa has been recreated/);
  assert.match(revocationReason(c, { ...ok, podUid: () => undefined })!, /pod ns\/p no longer exists/);
  assert.match(revocationReason(c, { ...ok, podUid: () => null })!, /pod ns\/p cannot be checked yet/);
  assert.match(revocationReason(c, { ...ok, secretUid: () => 'other' })!, /secret ns\/s has been recreated/);
  // Objects the token is not bound to are not looked up.
  const unbound: BoundClaims = { namespace: 'ns', serviceaccount: { name: 'sa', uid: 'u1' } };
  const boom = () => { throw new Error('not bound'); };
  assert.equal(revocationReason(unbound, { serviceAccountUid: () => 'u1', podUid: boom, secretUid: boom }), null);
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

test('start() loads at once and refreshes on an unref\'d timer; stop() ends it', async () => {
  const src = new FakeSource();
  src.keys = [(await keyPair('RS256', 'k1')).jwk];
  const keySet = new JwksKeySet(src, { refreshIntervalMs: 20 });
  keySet.start();
  await new Promise((r) => setTimeout(r, 70));
  keySet.stop();
  assert.ok(keySet.loaded);
  assert.ok(keySet.fetches >= 2, `fetches ${keySet.fetches}`);
  const n = keySet.fetches;
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(keySet.fetches, n);
});
