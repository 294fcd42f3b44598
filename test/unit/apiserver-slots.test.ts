// ApiserverSlots (--max-apiserver-requests-per-namespace): a namespace's requests past the limit
// wait in order, each namespace apart; a release is given once; a request taken out never runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ApiserverSlots } from '../../src/dataplane/apiserver-slots.js';

function recorder() {
  const ran: string[] = [];
  const releases = new Map<string, () => void>();
  const go = (name: string) => (release: () => void) => {
    ran.push(name);
    releases.set(name, release);
  };
  return { ran, releases, go };
}

test('past the limit, a namespace\'s requests wait in order; each release lets one in, once', () => {
  const s = new ApiserverSlots(2);
  const r = recorder();
  assert.equal(s.take('a', r.go('a1')), undefined, 'ran at once');
  assert.equal(s.take('a', r.go('a2')), undefined);
  assert.equal(typeof s.take('a', r.go('a3')), 'function', 'waits');
  s.take('a', r.go('a4'));
  assert.deepEqual(r.ran, ['a1', 'a2']);
  assert.deepEqual(s.size('a'), { held: 2, waiting: 2 });
  r.releases.get('a2')!();
  r.releases.get('a2')!(); // a second release of the same slot gives nothing
  assert.deepEqual(r.ran, ['a1', 'a2', 'a3']);
  assert.deepEqual(s.size('a'), { held: 2, waiting: 1 });
  r.releases.get('a1')!();
  assert.deepEqual(r.ran, ['a1', 'a2', 'a3', 'a4']);
  for (const n of ['a3', 'a4']) r.releases.get(n)!();
  assert.deepEqual(s.size('a'), { held: 0, waiting: 0 });
});

test('namespaces are apart: one team\'s full slots hold none of another\'s requests', () => {
  const s = new ApiserverSlots(1);
  const r = recorder();
  s.take('a', r.go('a1'));
  s.take('a', r.go('a2'));
  assert.equal(s.take('b', r.go('b1')), undefined);
  assert.deepEqual(r.ran, ['a1', 'b1']);
  r.releases.get('b1')!();
  assert.deepEqual(r.ran, ['a1', 'b1'], 'b\'s release does not let a\'s in');
  r.releases.get('a1')!();
  assert.deepEqual(r.ran, ['a1', 'b1', 'a2']);
});

test('a request taken out of the line never runs, and takes no slot', () => {
  const s = new ApiserverSlots(1);
  const r = recorder();
  s.take('a', r.go('first'));
  const outs = Array.from({ length: 100 }, (_, i) => s.take('a', r.go(`gone${i}`))!);
  s.take('a', r.go('last'));
  for (const out of outs) out();
  outs[0]!(); // twice: nothing more
  assert.deepEqual(s.size('a'), { held: 1, waiting: 1 });
  r.releases.get('first')!();
  assert.deepEqual(r.ran, ['first', 'last']);
  // taken out after it ran: its slot stays held until released
  const s2 = new ApiserverSlots(1);
  s2.take('a', r.go('x'));
  const late = s2.take('a', r.go('y'))!;
  r.releases.get('x')!();
  late();
  assert.deepEqual(s2.size('a'), { held: 1, waiting: 0 });
  r.releases.get('y')!();
  assert.deepEqual(s2.size('a'), { held: 0, waiting: 0 });
});

test('a long line moves on in order (the front of the line is dropped as it is served)', () => {
  const s = new ApiserverSlots(1);
  const r = recorder();
  for (let i = 0; i < 3000; i++) s.take('a', r.go(String(i)));
  for (let i = 0; i < 3000; i++) r.releases.get(String(i))!();
  assert.equal(r.ran.length, 3000);
  assert.deepEqual(r.ran.slice(0, 3), ['0', '1', '2']);
  assert.equal(r.ran.at(-1), '2999');
  assert.deepEqual(s.size('a'), { held: 0, waiting: 0 });
});

test('no limit: every request runs at once, nothing is counted', () => {
  const s = new ApiserverSlots(0);
  const r = recorder();
  for (let i = 0; i < 5; i++) assert.equal(s.take('a', r.go(String(i))), undefined);
  assert.equal(r.ran.length, 5);
  assert.deepEqual(s.size('a'), { held: 0, waiting: 0 });
});

test('waiters whose clients left, each giving its slot back at once, are passed over without recursion', () => {
  const s = new ApiserverSlots(1);
  const r = recorder();
  s.take('a', r.go('first'));
  let ran = 0;
  for (let i = 0; i < 20_000; i++) s.take('a', (release) => { ran++; release(); });
  s.take('a', r.go('last'));
  r.releases.get('first')!();
  assert.equal(ran, 20_000);
  assert.deepEqual(r.ran, ['first', 'last']);
  r.releases.get('last')!();
  assert.deepEqual(s.size('a'), { held: 0, waiting: 0 });
});
