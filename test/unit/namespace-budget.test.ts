import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TurnShare, UnadmittedConnections, type Unadmitted } from '../../src/dataplane/namespace-budget.js';

/** Connections that record their own eviction, and a way to add them. */
function setup(limit: number) {
  const u = new UnadmittedConnections(limit);
  const evicted: string[] = [];
  const add = (namespace: string, source: string, name: string): Unadmitted => {
    const c: Unadmitted = { source, evict: () => { evicted.push(name); u.remove(namespace, c); } };
    u.add(namespace, c);
    return c;
  };
  return { u, evicted, add };
}

test('connections not admitted yet: past the limit the oldest of the address holding the most is closed', () => {
  const { evicted, add } = setup(3);
  add('team-a', '10.0.0.9', 'caller');
  for (let i = 0; i < 50; i++) add('team-a', '10.0.0.66', `flood${i}`);
  assert.deepEqual(evicted, Array.from({ length: 48 }, (_, i) => `flood${i}`), 'the flood closes only its own, oldest first');
  // a second connection of the caller: both addresses hold 2, and the oldest of those goes
  add('team-a', '10.0.0.9', 'caller2');
  assert.equal(evicted.at(-1), 'caller');
  add('team-a', '10.0.0.66', 'flood50');
  assert.equal(evicted.at(-1), 'flood48', 'the flood holds the most again');
});

test('connections not admitted yet: with one each, the oldest is closed; other namespaces are apart', () => {
  const { evicted, add } = setup(2);
  add('team-a', '10.0.0.1', 'a1');
  add('team-b', '10.0.0.1', 'b1');
  add('team-a', '10.0.0.2', 'a2');
  add('team-b', '10.0.0.2', 'b2');
  assert.deepEqual(evicted, []);
  add('team-a', '10.0.0.3', 'a3');
  assert.deepEqual(evicted, ['a1']);
});

test('connections not admitted yet: one admitted or closed gives its place and its address\'s share back', () => {
  const { u, evicted, add } = setup(2);
  const a = add('team-a', '10.0.0.1', 'a');
  add('team-a', '10.0.0.1', 'b');
  u.remove('team-a', a);
  u.remove('team-a', a); // closed after it was admitted: counted once
  add('team-a', '10.0.0.2', 'c');
  assert.deepEqual(evicted, []);
  // 10.0.0.1 holds 1 (b), 10.0.0.2 holds 1 (c): a third from 10.0.0.2 closes c, not b
  add('team-a', '10.0.0.2', 'd');
  assert.deepEqual(evicted, ['c']);
});

test('connections not admitted yet: limit 0 closes none', () => {
  const { evicted, add } = setup(0);
  for (let i = 0; i < 100; i++) add('team-a', '10.0.0.1', `c${i}`);
  assert.deepEqual(evicted, []);
});

const nextTurn = () => new Promise((r) => setImmediate(r));

test('requests per turn: a namespace starts that many per turn of the event loop, in order; another namespace starts at once', async () => {
  const s = new TurnShare(2);
  const ran: string[] = [];
  for (let i = 1; i <= 5; i++) s.run('team-a', () => ran.push(`a${i}`));
  s.run('team-b', () => ran.push('b1'));
  assert.deepEqual(ran, ['a1', 'a2', 'b1']);
  await nextTurn();
  assert.deepEqual(ran.slice(3), ['a3', 'a4']);
  s.run('team-a', () => ran.push('a6')); // behind the one still waiting
  s.run('team-b', () => ran.push('b2'));
  assert.deepEqual(ran.slice(5), ['b2']);
  await nextTurn();
  assert.deepEqual(ran.slice(6), ['a5', 'a6']);
  await nextTurn();
  s.run('team-a', () => ran.push('a7')); // nothing waiting, a new turn: at once
  assert.equal(ran.at(-1), 'a7');
});

test('requests per turn: 0 is no limit', () => {
  const s = new TurnShare(0);
  const ran: number[] = [];
  for (let i = 0; i < 100; i++) s.run('team-a', () => ran.push(i));
  assert.equal(ran.length, 100);
});
