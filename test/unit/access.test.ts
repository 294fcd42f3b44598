import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AccessPolicy } from '../../src/auth/access.js';
import { serviceAccountOf } from '../../src/auth/identity.js';

const id = (username: string, groups: string[] = []) => ({ username, uid: '', groups, extra: {} });

test('service accounts, wildcards, groups and users match; routes restrict', () => {
  const p = new AccessPolicy([
    { serviceAccounts: [{ namespace: 'pay', name: 'billing' }], groups: [], users: [], routes: ['ledger'] },
    { serviceAccounts: [{ namespace: 'ops', name: '*' }], groups: [], users: [], routes: null },
    { serviceAccounts: [], groups: ['auditors'], users: ['alice'], routes: ['kube-api'] },
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
});
