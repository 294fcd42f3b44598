import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { HandshakeShare, signCost } from '../../src/dataplane/handshake-share.js';

/** A share on a clock the test moves, with setTimeout mocked. */
function setup(t: TestContext, share = 0.5) {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const clock = { now: 0 };
  const errors: unknown[] = [];
  const s = new HandshakeShare(share, (err) => errors.push(err), () => clock.now);
  const started: string[] = [];
  const start = (ns: string, name: string, cost = 1, gone = false, source = '10.0.0.1') =>
    s.start(ns, source, () => cost, () => { if (!gone) started.push(name); return !gone; });
  /** `ms` pass, timers firing as they come due. */
  const pass = (ms: number) => {
    for (let i = 0; i < ms; i++) {
      clock.now++;
      t.mock.timers.tick(1);
    }
  };
  return { s, started, start, pass, errors };
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
  // each turn gives a namespace 1.5 ms: team-a's second turn holds two of its 1 ms handshakes
  assert.deepEqual(started.slice(2), ['a2', 'b0', 'c0', 'a3', 'a4', 'b1']);
});

test('TLS handshakes: namespaces take turns by time, so a costlier key does not buy more of it', (t) => {
  const { started, start, pass } = setup(t);
  for (let i = 0; i < 200; i++) start('team-a', `a${i}`, 3); // an RSA-4096 listener, say
  for (let i = 0; i < 400; i++) start('team-b', `b${i}`, 1);
  pass(600);
  const a = started.filter((n) => n.startsWith('a')).length * 3;
  const b = started.filter((n) => n.startsWith('b')).length;
  assert.ok(a + b >= 290 && a + b <= 310, `600 ms × 0.5: ${a + b} ms`);
  assert.ok(Math.abs(a - b) <= 6, `team-a spent ${a} ms, team-b ${b} ms`);
});

test('TLS handshakes: within a namespace, client addresses take turns, so a flood at a team\'s port holds back the flood', (t) => {
  const { started, start, pass } = setup(t);
  for (let i = 0; i < 20; i++) start('team-b', `x${i}`, 1, false, '10.9.9.9'); // someone else's pods, at team-b's port
  start('team-b', 'b0', 1, false, '10.0.0.2');
  start('team-b', 'b1', 1, false, '10.0.0.2');
  start('team-b', 'c0', 1, false, '10.0.0.3');
  pass(12);
  assert.deepEqual(started, ['x0', 'x1', 'x2', 'b0', 'c0', 'x3', 'b1', 'x4']);
});

test('TLS handshakes: what one costs is asked when it starts (its listener\'s key may have changed while it waited)', (t) => {
  const { started, start, pass, s } = setup(t);
  let cost = 1;
  for (let i = 0; i < 2; i++) start('team-a', `a${i}`);
  s.start('team-a', '10.0.0.1', () => cost, () => (started.push('costly'), true));
  start('team-a', 'after');
  cost = 3; // the key changed: the waiting one is charged the new cost
  pass(2);
  assert.deepEqual(started.slice(2), ['costly']);
  pass(5); // -2.5 after it: back above 0 at 8 ms (at 1 ms a handshake, 'after' would have started at 4)
  assert.deepEqual(started.slice(2), ['costly']);
  pass(1);
  assert.deepEqual(started.slice(2), ['costly', 'after']);
});

test('TLS handshakes: one that throws is reported, and the others still start', (t) => {
  const { s, started, start, pass, errors } = setup(t);
  start('team-a', 'a0');
  start('team-a', 'a1');
  s.start('team-a', '10.0.0.1', () => 1, () => { throw new Error('boom'); });
  start('team-b', 'b0');
  pass(4);
  assert.deepEqual(errors.map((e) => (e as Error).message), ['boom']);
  assert.deepEqual(started, ['a0', 'a1', 'b0']);
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

  const none = new HandshakeShare(1, () => {}, () => 0);
  let n = 0;
  for (let i = 0; i < 100; i++) assert.ok(none.start('team-a', '10.0.0.1', () => 10, () => (n++, true)));
  assert.equal(n, 100);
});

test('TLS handshakes: one charged past its start (a client chain checked during it) makes the share wait, and its namespace pays with later turns', (t) => {
  const { s, started, start, pass } = setup(t);
  start('team-a', 'a0');
  s.charge('team-a', '10.0.0.1', 10); // with nothing of team-a waiting: owed
  for (let i = 1; i <= 2; i++) start('team-a', `a${i}`);
  for (let i = 0; i < 10; i++) start('team-b', `b${i}`);
  pass(18);
  assert.deepEqual(started, ['a0'], 'the share is 9.5 ms overdrawn: 19 ms at half the time');
  pass(30);
  assert.deepEqual(started.slice(1, 11), ['b0', 'b1', 'b2', 'b3', 'b4', 'b5', 'b6', 'b7', 'b8', 'b9'], 'team-a waits until 10 ms of turns are paid');
  pass(10);
  assert.deepEqual(started.slice(11), ['a1', 'a2']);
});

test('TLS handshakes: a debt is forgiven once nothing waits and the share has its time back', (t) => {
  const { s, started, start, pass } = setup(t);
  start('team-a', 'a0');
  s.charge('team-a', '10.0.0.1', 10);
  pass(40); // the share is whole again
  assert.deepEqual([start('team-a', 'a1'), start('team-a', 'a2')], [true, true], 'nothing waits: they start at once');
  for (let i = 0; i < 4; i++) start('team-b', `b${i}`);
  start('team-a', 'a3');
  pass(20);
  assert.deepEqual(started.slice(3, 6), ['b0', 'a3', 'b1'], 'team-a takes its turn: it owes nothing now');
});

test('TLS handshakes: one charged while its namespace waits pays with that namespace\'s later turns', (t) => {
  const { s: s2, started: started2, start: start2, pass: pass2 } = setup(t);
  for (let i = 0; i < 4; i++) start2('team-a', `a${i}`);
  for (let i = 0; i < 6; i++) start2('team-b', `b${i}`);
  s2.charge('team-a', '10.0.0.1', 5);
  pass2(60);
  assert.deepEqual(started2.slice(2, 8), ['b0', 'b1', 'b2', 'b3', 'a2', 'b4'], JSON.stringify(started2));
});

test('TLS handshakes: within its namespace, an address that was charged lets the other addresses go first until it has paid', (t) => {
  const { s, started, start, pass } = setup(t);
  start('team-a', 'x0', 1, false, '10.0.0.9');
  s.charge('team-a', '10.0.0.9', 6); // x0's client sent a costly chain (the namespace pays too)
  for (let i = 1; i <= 3; i++) start('team-a', `x${i}`, 1, false, '10.0.0.9');
  for (let i = 0; i < 6; i++) start('team-a', `y${i}`, 1, false, '10.0.0.1');
  pass(200);
  // x is passed over 4 times (1.5 ms each) before it owes nothing: y's go first; then they take turns
  assert.deepEqual(started, ['x0', 'y0', 'y1', 'y2', 'y3', 'x1', 'y4', 'x2', 'y5', 'x3']);
  // charged again, then the share idles: forgiven, x waits its turn like any address
  s.charge('team-a', '10.0.0.9', 6);
  pass(40);
  for (const [name, source] of [['x4', '10.0.0.9'], ['x5', '10.0.0.9'], ['x6', '10.0.0.9'], ['y6', '10.0.0.1']]) start('team-a', name!, 1, false, source);
  pass(20);
  assert.deepEqual(started.slice(10), ['x4', 'x5', 'x6', 'y6']);
});

test('TLS handshakes: alone in its namespace, an address that owes still goes and pays as it goes; a turn its namespace cannot afford pays nothing', (t) => {
  const { s, started, start, pass } = setup(t);
  const [X, Y] = ['10.0.0.9', '10.0.0.1'];
  start('team-a', 'x0', 1, false, X);
  s.charge('team-a', X, 6); // team-a's next turns are skipped until paid; X owes 6 within them
  for (let i = 0; i < 100; i++) start('team-b', `b${i}`, 1, false, '10.0.1.1'); // the share stays busy: nothing is forgiven
  for (let i = 1; i <= 3; i++) start('team-a', `x${i}`, 1, false, X);
  for (let i = 0; i < 500 && !started.includes('x3'); i++) pass(1);
  assert.ok(started.includes('x3'), started.join(' '));
  // x1..x3 went alone, each paying 1.5: 1.5 is left, so X is passed over once
  for (const [name, source] of [['x4', X], ['y0', Y], ['y1', Y]] as const) start('team-a', name, 1, false, source);
  for (let i = 0; i < 500 && !started.includes('y1'); i++) pass(1);
  assert.deepEqual(started.filter((n) => /^[xy]/.test(n)).slice(4), ['y0', 'x4', 'y1']);
  assert.ok(started.filter((n) => n.startsWith('b')).length < 100, 'team-b still waiting: the share was never idle');
});

test('TLS handshakes: a namespace remembers at most 1,024 charged addresses, the oldest forgotten first; other namespaces keep theirs', (t) => {
  const { s } = setup(t);
  s.charge('team-b', '10.9.9.9', 1);
  for (let i = 0; i < 2000; i++) s.charge('team-a', `10.1.${i >> 8}.${i & 255}`, 1);
  const owed = (s as unknown as { sourceOwed: Map<string, Map<string, number>> }).sourceOwed;
  assert.equal(owed.get('team-a')!.size, 1024);
  assert.deepEqual([owed.get('team-a')!.has('10.1.0.0'), owed.get('team-a')!.has('10.1.7.207')], [false, true]);
  assert.deepEqual([...owed.get('team-b')!], [['10.9.9.9', 1]]);
});

test('TLS handshake cost: a signature with the key, measured; larger keys cost more; a key that cannot sign costs 20 ms', () => {
  const pem = (k: KeyObject) => k.export({ format: 'pem', type: 'pkcs8' }) as string;
  const rsa = signCost(pem(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey));
  const p256 = signCost(pem(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey));
  assert.ok(rsa > p256, `RSA-2048 ${rsa} ms, P-256 ${p256} ms`);
  assert.equal(signCost(pem(generateKeyPairSync('x25519').privateKey)), 20);
  assert.throws(() => new HandshakeShare(0, () => {}), RangeError);
});
