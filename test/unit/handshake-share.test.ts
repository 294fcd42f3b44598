import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { HandshakeShare, signCost } from '../../src/dataplane/handshake-share.js';

/** A share on a clock the test moves, with setTimeout mocked. */
function setup(t: TestContext, share = 0.5) {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const clock = { now: 0 };
  const s = new HandshakeShare(share, () => clock.now);
  const started: string[] = [];
  const start = (ns: string, name: string, cost = 1, gone = false) =>
    s.start(ns, cost, () => { if (!gone) started.push(name); return !gone; });
  /** `ms` pass, timers firing as they come due. */
  const pass = (ms: number) => {
    for (let i = 0; i < ms; i++) {
      clock.now++;
      t.mock.timers.tick(1);
    }
  };
  return { s, started, start, pass };
}

test('TLS handshakes: within the share they start at once; past it they wait their time', (t) => {
  const { started, start, pass } = setup(t);
  const now = ['a0', 'a1', 'a2', 'a3', 'a4', 'a5'].map((a) => start('team-a', a));
  assert.deepEqual(now, [true, true, false, false, false, false], 'a 1.5 ms burst');
  assert.deepEqual(started, ['a0', 'a1']);
  pass(2); // half of 2 ms: one more
  assert.deepEqual(started.slice(2), ['a2']);
  pass(4);
  assert.deepEqual(started.slice(2), ['a2', 'a3', 'a4']);
});

test('TLS handshakes: they take at most the share of the time', (t) => {
  const { started, start, pass } = setup(t, 0.25);
  for (let i = 0; i < 1000; i++) start('team-a', `a${i}`, 2);
  const before = started.length;
  pass(800);
  assert.equal(started.length - before, 100, '800 ms × 0.25 / 2 ms');
});

test('TLS handshakes: waiting ones take turns by namespace, so one team\'s flood does not hold back another\'s', (t) => {
  const { started, start, pass } = setup(t);
  for (let i = 0; i < 20; i++) start('team-a', `a${i}`);
  start('team-b', 'b0');
  start('team-b', 'b1');
  start('team-c', 'c0');
  assert.equal(started.length, 2);
  pass(12);
  assert.deepEqual(started.slice(2), ['a2', 'b0', 'c0', 'a3', 'b1', 'a4']);
});

test('TLS handshakes: one whose client left while it waited costs nothing', (t) => {
  const { started, start, pass } = setup(t);
  for (let i = 0; i < 6; i++) start('team-a', `a${i}`, 1, i === 2);
  pass(2);
  assert.deepEqual(started.slice(2), ['a3'], 'a2 left: skipped, and a3 starts in its place');
});

test('TLS handshakes: a refund (a resumed session) lets the next one start sooner; share 1 is no bound', (t) => {
  const { s, started, start } = setup(t);
  for (let i = 0; i < 3; i++) start('team-a', `a${i}`);
  s.refund(1.5);
  t.mock.timers.tick(1); // no time has passed on the clock: only the refund lets a2 start
  assert.deepEqual(started.slice(2), ['a2']);

  const none = new HandshakeShare(1, () => 0);
  let n = 0;
  for (let i = 0; i < 100; i++) assert.ok(none.start('team-a', 10, () => (n++, true)));
  assert.equal(n, 100);
});

test('TLS handshake cost: a signature, measured once per kind and size of key; larger keys cost more', () => {
  const pem = (k: KeyObject) => k.export({ format: 'pem', type: 'pkcs8' }) as string;
  const rsa4096 = signCost(pem(generateKeyPairSync('rsa', { modulusLength: 4096 }).privateKey));
  const p256 = signCost(pem(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey));
  assert.ok(rsa4096 > p256 * 3, `RSA-4096 ${rsa4096} ms, P-256 ${p256} ms`);
  const other = pem(generateKeyPairSync('rsa', { modulusLength: 4096 }).privateKey);
  assert.equal(signCost(other), rsa4096, 'another key of the same kind and size: not measured again');
});
