import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TokenReviewAuthenticator } from '../../src/auth/authenticator.js';
import { bearerToken } from '../../src/auth/bearer.js';
import type { ReviewResult, TokenReviewer } from '../../src/auth/identity.js';
import { AuthUnavailableError, UnauthenticatedError } from '../../src/dataplane/errors.js';

const user = { username: 'system:serviceaccount:a:b', uid: 'u', groups: ['g'], extra: {} };

function jwt(exp: number): string {
  const b = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b({ alg: 'RS256' })}.${b({ exp })}.sig`;
}

class FakeReviewer implements TokenReviewer {
  calls = 0;
  constructor(public answer: () => Promise<ReviewResult>) {}
  review(): Promise<ReviewResult> {
    this.calls++;
    return this.answer();
  }
}

test('positive results are cached for min(ttl, exp); concurrent misses share one review', async () => {
  let now = 1_000_000_000;
  const r = new FakeReviewer(async () => ({ authenticated: true, user, audiences: ['gw'] }));
  const a = new TokenReviewAuthenticator(r, ['gw'], 10, () => now);
  const token = jwt(now / 1000 + 5); // expires in 5 s, ttl is 10 s
  const [x, y] = await Promise.all([a.authenticate(token), a.authenticate(token)]);
  assert.equal(r.calls, 1);
  assert.equal(x, y);
  now += 4_000;
  await a.authenticate(token);
  assert.equal(r.calls, 1);
  now += 2_000; // past exp
  await a.authenticate(token);
  assert.equal(r.calls, 2);
});

test('ttl 0 disables the cache', async () => {
  const r = new FakeReviewer(async () => ({ authenticated: true, user, audiences: ['gw'] }));
  const a = new TokenReviewAuthenticator(r, ['gw'], 0);
  await a.authenticate('t');
  await a.authenticate('t');
  assert.equal(r.calls, 2);
});

test('an answer whose audiences miss the gateway is refused', async () => {
  const r = new FakeReviewer(async () => ({ authenticated: true, user, audiences: ['https://kubernetes.default.svc'] }));
  await assert.rejects(new TokenReviewAuthenticator(r, ['gw'], 10).authenticate('t'), UnauthenticatedError);
});

test('failures are not cached; an unreachable reviewer fails closed with 503', async () => {
  let fail = true;
  const r = new FakeReviewer(async () => {
    if (fail) throw new Error('ECONNREFUSED');
    return { authenticated: true, user, audiences: ['gw'] };
  });
  const a = new TokenReviewAuthenticator(r, ['gw'], 10);
  await assert.rejects(a.authenticate('t'), (e: unknown) => e instanceof AuthUnavailableError && e.status === 503);
  fail = false;
  assert.equal((await a.authenticate('t')).username, user.username);
  const denied = new TokenReviewAuthenticator(new FakeReviewer(async () => ({ authenticated: false, error: 'bad' })), ['gw'], 10);
  await assert.rejects(denied.authenticate('t'), UnauthenticatedError);
});

test('bearer extraction', () => {
  assert.equal(bearerToken('Bearer abc.def-_~+/='), 'abc.def-_~+/=');
  assert.equal(bearerToken('bearer abc'), 'abc');
  for (const bad of [undefined, '', 'Basic abc', 'Bearer', 'Bearer a b', 'Bearer a\u00e9']) {
    assert.throws(() => bearerToken(bad), UnauthenticatedError, String(bad));
  }
});
