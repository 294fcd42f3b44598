import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AccessPolicy } from '../../src/auth/access.js';
import { serviceAccountOf } from '../../src/auth/identity.js';
import { FakeClock } from '../support/fake-clock.js';

const id = (username: string, groups: string[] = []) => ({ username, uid: '', groups, extra: {} });

test('service accounts, wildcards, groups and users match; routes restrict', () => {
  const p = new AccessPolicy([
    { serviceAccounts: [{ namespace: 'pay', name: 'billing' }], groups: [], users: [], routes: ['ledger'], notBefore: null, notAfter: null },
    { serviceAccounts: [{ namespace: 'ops', name: '*' }], groups: [], users: [], routes: null, notBefore: null, notAfter: null },
    { serviceAccounts: [], groups: ['auditors'], users: ['alice'], routes: ['kube-api'], notBefore: null, notAfter: null },
  ]);
  const billing = id('system:serviceaccount:pay:billing');
  assert.ok(p.mayUse(billing, 'ledger'));
  assert.ok(!p.mayUse(billing, 'kube-api'));
  assert.equal(p.allowed(id('system:serviceaccount:pay:other')), null);
  assert.equal(p.allowed(id('system:serviceaccount:ops:anyone')), 'all');
  assert.ok(p.mayUse(id('bob', ['auditors']), 'kube-api'));
  assert.ok(p.mayUse(id('alice'), 'kube-api'));
  assert.ok(!p.mayUse(id('alice'), 'ledger'));
  // a user named like a service account in another namespace does not match the wildcard
  assert.equal(p.allowed(id('system:serviceaccount:ops2:x')), null);
});

test('no rules: nobody', () => {
  assert.equal(new AccessPolicy([]).allowed(id('system:serviceaccount:a:b')), null);
});

test('service-account usernames parse strictly', () => {
  assert.deepEqual(serviceAccountOf('system:serviceaccount:a:b'), { namespace: 'a', name: 'b' });
  assert.equal(serviceAccountOf('system:serviceaccount:a:b:c'), null);
  assert.equal(serviceAccountOf('system:serviceaccount:a'), null);
  assert.equal(serviceAccountOf('alice'), null);
  // split as the apiserver splits: a bad namespace or name is a plain user's name
  assert.equal(serviceAccountOf('system:serviceaccount:team-a:Admin'), null);
  assert.equal(serviceAccountOf('system:serviceaccount:Team-A:x'), null);
  assert.equal(serviceAccountOf('system:serviceaccount:team-a:lead.'), null);
  assert.deepEqual(serviceAccountOf('system:serviceaccount:team-a:lead.x'), { namespace: 'team-a', name: 'lead.x' });
});

test('time-boxed rules match only inside their window; decisions follow the clock without a new policy', () => {
  const t0 = Date.parse('2026-12-01T09:00:00Z');
  const clock = new FakeClock(t0 - 60_000);
  const rule = (extra: object) => ({ serviceAccounts: [{ namespace: 'pay', name: 'billing' }], groups: [], users: [], routes: null, notBefore: null, notAfter: null, ...extra });
  const p = new AccessPolicy([
    rule({ notBefore: t0, notAfter: t0 + 3_600_000, routes: ['ledger'] }),
    rule({ notAfter: t0 + 1_800_000, routes: ['kube-api'] }),
  ], clock);
  const billing = id('system:serviceaccount:pay:billing'); // one identity object: the memo must not outlive a boundary
  assert.deepEqual(p.allowed(billing), new Set(['kube-api']), 'before notBefore: only the open-ended rule');
  clock.advance(59_999);
  assert.ok(!p.mayUse(billing, 'ledger'), 'notBefore is inclusive, 1 ms before it does not match');
  clock.advance(1);
  assert.deepEqual(p.allowed(billing), new Set(['kube-api', 'ledger']));
  clock.advance(1_800_000);
  assert.deepEqual(p.allowed(billing), new Set(['ledger']), 'notAfter is exclusive');
  clock.advance(1_800_000);
  assert.equal(p.allowed(billing), null, 'both expired');
  clock.advance(86_400_000);
  assert.equal(p.allowed(billing), null);
  // still a caller a rule names (its 403 and can-i say whose gateway this is), by any rule
  const later = new AccessPolicy([
    { serviceAccounts: [], groups: ['ops'], users: [], routes: null, notBefore: null, notAfter: t0 },
    { serviceAccounts: [], groups: [], users: ['alice'], routes: null, notBefore: null, notAfter: t0 },
  ], clock);
  assert.ok(later.knows(id('alice')) && later.knows(id('bob', ['ops'])) && !later.knows(id('carol', ['dev'])));
});

test('a policy without windows never reads the clock', () => {
  const clock = new FakeClock(0);
  clock.now = () => { throw new Error('read the clock'); };
  const p = new AccessPolicy([{ serviceAccounts: [], groups: [], users: ['alice'], routes: null, notBefore: null, notAfter: null }], clock);
  assert.equal(p.allowed(id('alice')), 'all');
});

// The rules naming a caller are looked up by its names (a red team: 64 rules of 64 service
// accounts of 253 characters sharing a prefix cost ~0.6 ms a request, compared one by one).
test('the rules naming a caller: by user, group, service account and namespace wildcard, in order; names of one kind never pass for another', () => {
  const rule = (over: Partial<{ serviceAccounts: { namespace: string; name: string }[]; groups: string[]; users: string[]; routes: string[] | null }>, notAfter: number | null = null) =>
    ({ serviceAccounts: [], groups: [], users: [], routes: null, notBefore: null, notAfter, ...over });
  const clock = new FakeClock(1000);
  const p = new AccessPolicy([
    rule({ users: ['g:ops', 'u:x'], routes: ['a'] }), // 0: users spelled like the lookup's other keys
    rule({ groups: ['ops'], routes: ['b'] }), // 1
    rule({ serviceAccounts: [{ namespace: 'pay', name: 'billing' }, { namespace: 'pay', name: 'billing' }], routes: ['c'] }), // 2
    rule({ serviceAccounts: [{ namespace: 'pay', name: '*' }], routes: ['d'] }, 500), // 3: its window ended
    rule({ users: ['system:serviceaccount:pay:billing'], groups: ['ops'], routes: ['e'] }), // 4
  ], clock);
  const billing = id('system:serviceaccount:pay:billing', ['ops', 'ops']);
  assert.deepEqual(p.explain(billing), { matching: [1, 2, 4], outsideWindow: [{ index: 3, ended: true }] });
  assert.deepEqual([...(p.allowed(billing) as Set<string>)].sort(), ['b', 'c', 'e']);
  // a user named g:ops is user g:ops, not a member of ops; group u:x names no user
  assert.deepEqual(p.explain(id('g:ops')).matching, [0]);
  assert.deepEqual(p.explain(id('bob', ['u:x', 'g:ops', 's:pay/billing'])).matching, []);
  assert.equal(p.allowed(id('bob', ['u:x'])), null);
  // the wildcard is a rule's only: a service account named `*` cannot be (DNS names), and another
  // namespace's wildcard does not match
  assert.deepEqual(p.explain(id('system:serviceaccount:pay:other')), { matching: [], outsideWindow: [{ index: 3, ended: true }] });
  assert.equal(p.allowed(id('system:serviceaccount:pay:other')), null, 'a rule names it, its window closed');
  assert.ok(p.knows(id('system:serviceaccount:pay:other')));
  assert.ok(!p.knows(id('system:serviceaccount:pay2:billing')));
  assert.equal(p.allowed(id('system:serviceaccount:pay2:billing')), null);
});
