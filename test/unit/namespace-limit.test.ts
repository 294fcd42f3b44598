// The per-namespace limit's bookkeeping (pure logic): the oldest N of each namespace are served,
// and each change names only the gateways whose place it changed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NamespaceLimit } from '../../src/controller/namespace-limit.js';

const served = (l: NamespaceLimit, keys: string[]) => keys.filter((k) => l.served(k));

test('the oldest N of each namespace are served, whatever order they are seen in; other namespaces are not counted', () => {
  const l = new NamespaceLimit(2);
  assert.deepEqual(l.set('a/g3', '3'), []);
  assert.deepEqual(l.set('a/g2', '2'), []);
  // an older one seen later pushes out the newest served one: only that one is named
  assert.deepEqual(l.set('a/g1', '1'), ['a/g3']);
  assert.deepEqual(l.set('a/g4', '4'), []);
  assert.deepEqual(served(l, ['a/g1', 'a/g2', 'a/g3', 'a/g4']), ['a/g1', 'a/g2']);
  assert.deepEqual(l.set('b/x', '0'), []);
  assert.deepEqual(l.set('b/y', '9'), []);
  assert.deepEqual(served(l, ['b/x', 'b/y']), ['b/x', 'b/y']);
  // an update that keeps the rank changes nothing
  assert.deepEqual(l.set('a/g1', '1'), []);
});

test('deleting a served gateway serves the oldest waiting one, and names only it; deleting a waiting one names none', () => {
  const l = new NamespaceLimit(2);
  for (const [k, r] of [['a/g1', '1'], ['a/g2', '2'], ['a/g3', '3'], ['a/g4', '4']] as const) l.set(k, r);
  assert.deepEqual(l.delete('a/g4'), []);
  assert.deepEqual(l.delete('a/g1'), ['a/g3']);
  assert.deepEqual(served(l, ['a/g2', 'a/g3']), ['a/g2', 'a/g3']);
  assert.deepEqual(l.delete('a/g2'), []);
  assert.deepEqual(l.delete('a/g3'), []);
  assert.deepEqual(l.delete('a/g3'), [], 'a second delete is a no-op');
  // the namespace is empty again: new gateways are served
  assert.deepEqual(l.set('a/g9', '9'), []);
  assert.ok(l.served('a/g9'));
});

test('a key seen again with a new rank (deleted and created again while the watch was away) takes its new place', () => {
  const l = new NamespaceLimit(1);
  l.set('a/old', '1');
  l.set('a/new', '2');
  assert.ok(!l.served('a/new'));
  // a/old came back younger than a/new: a/new is served now, a/old waits
  assert.deepEqual(l.set('a/old', '3'), ['a/new']);
  assert.deepEqual(served(l, ['a/old', 'a/new']), ['a/new']);
});

test('without a limit every gateway is served and nothing is kept', () => {
  const l = new NamespaceLimit(0);
  for (let i = 0; i < 100; i++) assert.deepEqual(l.set(`a/g${i}`, String(i)), []);
  assert.ok(l.served('a/g99'));
  assert.deepEqual(l.delete('a/g0'), []);
});

test('10,000 gateways in one namespace: 16 served; deleting a waiting one names none, deleting a served one names the next', () => {
  const l = new NamespaceLimit(16);
  for (let i = 0; i < 10_000; i++) l.set(`a/g${String(i).padStart(5, '0')}`, String(i).padStart(5, '0'));
  assert.equal(served(l, Array.from({ length: 10_000 }, (_, i) => `a/g${String(i).padStart(5, '0')}`)).length, 16);
  assert.deepEqual(l.delete('a/g09999'), []);
  assert.deepEqual(l.delete('a/g00000'), ['a/g00016']);
});
