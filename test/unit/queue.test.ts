import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WorkQueue } from '../../src/controller/queue.js';
import { PortAllocator } from '../../src/controller/ports.js';
import { FakeClock } from '../support/fake-clock.js';

test('de-duplicates, and never hands out a key that is being processed', async () => {
  const q = new WorkQueue();
  q.add('a'); q.add('a'); q.add('b');
  assert.equal(q.depth, 2);
  const k = await q.get();
  assert.equal(k, 'a');
  q.add('a'); // while processing: remembered, not queued
  assert.equal(q.depth, 1);
  assert.equal(await q.get(), 'b');
  q.done('a'); // re-queued now
  assert.equal(q.depth, 1);
  assert.equal(await q.get(), 'a');
  q.done('a'); q.done('b');
  assert.equal(q.depth, 0);
  q.shutdown();
  assert.equal(await q.get(), undefined);
});

test('per-key exponential backoff (5 ms doubling to the cap), then the bucket; observed on a fake clock', async () => {
  const clock = new FakeClock();
  const q = new WorkQueue({ baseDelayMs: 5, maxDelayMs: 1000, qps: 10, burst: 3, clock });
  // each failure re-adds the key after its delay; it is processed, and fails again
  for (let i = 0; i < 9; i++) {
    q.addRateLimited('k');
    const delay = clock.delays.at(-1)!;
    clock.advance(delay - 1);
    assert.equal(q.depth, 0, 'nothing is queued before its delay has passed');
    clock.advance(1);
    assert.equal(await q.get(), 'k');
    q.done('k');
  }
  // per key: 5, 10, 20, ... capped at 1000; from the 4th re-add the bucket (burst 3, 10/s,
  // refilled as the clock moves) is empty: its wait counts when longer than the key's own
  assert.deepEqual(clock.delays.map(Math.round), [5, 10, 20, 65, 100, 160, 320, 640, 1000]);
  assert.equal(q.numRequeues('k'), 9);
  q.forget('k');
  assert.equal(q.numRequeues('k'), 0);
  q.addRateLimited('k'); // forgotten: back to the base delay (the bucket has refilled meanwhile)
  assert.equal(clock.delays.at(-1), 5);
  q.shutdown();
  assert.equal(clock.waiting, 0);
});

test('each namespace has a retry bucket of its own: one team\'s failing reconciles do not delay another team\'s retry', () => {
  const clock = new FakeClock();
  const q = new WorkQueue({ qps: 10, burst: 3, clock, groupOf: (k) => k.split('/')[0]! });
  // team-a: 100 gateways fail at once (its bucket of 3 runs 97 tokens short: 9.7 s)
  for (let i = 0; i < 100; i++) q.addRateLimited(`team-a/g${i}`);
  assert.equal(Math.round(clock.delays.at(-1)!), 9_700);
  q.addRateLimited('team-b/g'); // team-b's first failure: its own backoff only
  assert.equal(clock.delays.at(-1), 5);
  // team-a's bucket refills as the clock moves, as before
  clock.advance(20_000);
  q.addRateLimited('team-a/new');
  assert.equal(clock.delays.at(-1), 5);
  // what is kept: the namespaces that failed lately (past 1,024, the full buckets go)
  const buckets = () => (q as unknown as { buckets: Map<string, unknown> }).buckets.size;
  for (let i = 0; i < 2_000; i++) q.addRateLimited(`ns${i}/g`);
  assert.equal(buckets(), 2_001, 'none of them refilled yet: each is kept (team-a\'s too; team-b\'s, refilled, went at the first sweep)');
  clock.advance(1_000);
  q.addRateLimited('team-c/g');
  assert.equal(buckets(), 1, 'refilled buckets are dropped once 1,024 are kept');
  q.shutdown();
});

test('a key waits on one timer, the earliest asked for: re-adding it later piles up nothing', () => {
  const clock = new FakeClock();
  const q = new WorkQueue({ clock });
  for (let i = 0; i < 100; i++) q.addAfter('gw', 3_600_000 - i);
  assert.equal(clock.waiting, 1);
  q.addAfter('gw', 10); // earlier: replaces the far timer
  assert.equal(clock.waiting, 1);
  q.addAfter('other', 3_600_000);
  assert.equal(clock.waiting, 2);
  clock.advance(10);
  assert.equal(q.depth, 1);
  clock.advance(3_600_000);
  assert.equal(q.depth, 2, 'gw once (de-duplicated), and other');
  q.shutdown();
  assert.equal(clock.waiting, 0);
});

test('cancel drops a key\'s waiting time and its timer; other keys keep theirs', () => {
  const clock = new FakeClock();
  const q = new WorkQueue({ clock });
  q.addAfter('gone', 3_600_000);
  q.addAfter('kept', 3_600_000);
  q.cancel('gone');
  q.cancel('never-added');
  assert.equal(clock.waiting, 1);
  clock.advance(3_600_000);
  assert.equal(q.depth, 1, 'only kept');
  q.addAfter('gone', 10); // a later addAfter for the key works as before
  clock.advance(10);
  assert.equal(q.depth, 2);
  q.shutdown();
});

test('groups (namespaces) take turns: one team\'s thousands of keys do not make another team\'s key wait behind them', async () => {
  const q = new WorkQueue({ groupOf: (k) => k.split('/')[0]! });
  for (let i = 0; i < 1000; i++) q.add(`team-a/g${i}`);
  q.add('team-b/only');
  q.add('team-c/one'); q.add('team-c/two');
  assert.equal(q.depth, 1003);
  const first: string[] = [];
  for (let i = 0; i < 6; i++) first.push((await q.get())!);
  assert.deepEqual(first, ['team-a/g0', 'team-b/only', 'team-c/one', 'team-a/g1', 'team-c/two', 'team-a/g2']);
  // FIFO within a group, and de-duplicated as before
  q.add('team-a/g3');
  assert.equal(q.depth, 997);
  assert.equal(await q.get(), 'team-a/g3');
  // a group that empties and comes back joins the back of the turns
  q.add('team-b/again');
  assert.equal(await q.get(), 'team-a/g4');
  assert.equal(await q.get(), 'team-b/again');
  assert.equal(await q.get(), 'team-a/g5');
  q.shutdown();
});

test('ports: requested, allocated and kept; a held port is never taken away', () => {
  const p = new PortAllocator([100, 102]);
  assert.deepEqual(p.claim({ key: 'a', rank: '2' }), { port: 100 });
  assert.deepEqual(p.claim({ key: 'a', rank: '2' }), { port: 100 });
  assert.deepEqual(p.claim({ key: 'b', rank: '3', previous: 102 }), { port: 102 });
  assert.deepEqual(p.claim({ key: 'c', rank: '4', requested: 8080 }), { port: 8080 });
  assert.ok('conflict' in p.claim({ key: 'd', rank: '5', requested: 8080 }));
  // an older gateway asking for a held port does not get it: the holder keeps it
  assert.match((p.claim({ key: 'e', rank: '1', requested: 8080 }) as { conflict: string }).conflict, /used by AccessGateway c/);
  // nor does a newcomer asking explicitly for a port the range allocated to another
  assert.match((p.claim({ key: 'e', rank: '1', requested: 100 }) as { conflict: string }).conflict, /used by AccessGateway a/);
  assert.equal(p.portOf('a'), 100);
  // another namespace's gateway is not named
  const q = new PortAllocator([100, 102]);
  assert.deepEqual(q.claim({ key: 'team-b/b-gw', rank: '1' }), { port: 100 });
  assert.deepEqual(q.claim({ key: 'team-a/squat', rank: '2', requested: 100 }), { conflict: 'port 100 is used by a gateway of another namespace' });
  assert.deepEqual(q.claim({ key: 'team-b/other', rank: '3', requested: 100 }), { conflict: 'port 100 is used by AccessGateway team-b/b-gw' });
  assert.deepEqual(p.claim({ key: 'f', rank: '6' }), { port: 101 });
  assert.ok('conflict' in p.claim({ key: 'g', rank: '7' }));
  p.release('a');
  p.block(100);
  assert.ok('conflict' in p.claim({ key: 'g', rank: '7' }));
});

test('ports: a port given up stays its namespace\'s for the hold: another namespace waits (and is told when), the gateway made again gets it back', () => {
  let now = 1_000_000;
  const p = new PortAllocator([100, 102], () => now, 300_000);
  assert.deepEqual(p.claim({ key: 'team-b/b-gw', rank: '1', requested: 8080 }), { port: 8080 });
  assert.deepEqual(p.claim({ key: 'team-b/alloc', rank: '2' }), { port: 100 });
  p.release('team-b/b-gw');
  p.release('team-b/alloc');
  // another namespace's gateway asking for it waits, told until when
  const c = p.claim({ key: 'team-a/squat', rank: '3', requested: 8080 });
  assert.deepEqual(c, { conflict: 'port 8080 was given up by a gateway of another namespace less than 300 s ago; it stays that namespace\'s until 1970-01-01T00:21:40Z (--released-port-hold-seconds)', retryInMs: 300_000 });
  // nor does the range hand it out to another namespace
  assert.deepEqual(p.claim({ key: 'team-a/alloc', rank: '4' }), { port: 101 });
  // the namespace itself may: the gateway made again gets its port back, requested or allocated
  assert.deepEqual(p.claim({ key: 'team-b/b-gw', rank: '5', requested: 8080 }), { port: 8080 });
  assert.deepEqual(p.claim({ key: 'team-b/alloc', rank: '6' }), { port: 100 });
  // given up again, and the hold over: anyone's
  p.release('team-b/b-gw');
  now += 299_999;
  assert.equal((p.claim({ key: 'team-a/squat', rank: '3', requested: 8080 }) as { retryInMs: number }).retryInMs, 1);
  now += 1;
  assert.deepEqual(p.claim({ key: 'team-a/squat', rank: '3', requested: 8080 }), { port: 8080 });
  // a gateway moving to another port holds the one it left for its namespace
  assert.deepEqual(p.claim({ key: 'team-b/alloc', rank: '6', requested: 9090 }), { port: 9090 });
  assert.deepEqual(p.claim({ key: 'team-c/new', rank: '7' }), { port: 102 });
  assert.ok('conflict' in p.claim({ key: 'team-c/next', rank: '8' }), 'port 100 is held for team-b');
  assert.deepEqual(p.claim({ key: 'team-b/other', rank: '9' }), { port: 100 });
  // the gateway made again gets the port it gave up, not the lowest free one
  const r = new PortAllocator([100, 102], () => now, 300_000);
  r.claim({ key: 'team-b/x', rank: '1' });
  r.claim({ key: 'team-b/y', rank: '2' });
  r.release('team-b/y');
  r.release('team-b/x');
  assert.deepEqual(r.claim({ key: 'team-b/y', rank: '3' }), { port: 101 });
  // a namespace holds at most maxHeldPerNamespace ports it gave up (its oldest go first): one
  // gateway moved across the range holds 2 of them here, not the range
  const m = new PortAllocator([100, 109], () => now, 300_000, 2);
  for (let port = 100; port <= 109; port++) assert.deepEqual(m.claim({ key: 'team-a/mover', rank: '1', requested: port }), { port });
  assert.deepEqual(m.claim({ key: 'team-b/new', rank: '2' }), { port: 100 });
  assert.deepEqual(m.claim({ key: 'team-b/next', rank: '3' }), { port: 101 });
  assert.match((m.claim({ key: 'team-b/on-held', rank: '4', requested: 108 }) as { conflict: string }).conflict, /given up by a gateway of another namespace/);
  // a namespace that held more at once lately (no gateway limit: its 5 gateways deleted) keeps
  // all of them held
  const d = new PortAllocator([200, 209], () => now, 300_000, 2);
  for (let i = 0; i < 5; i++) d.claim({ key: `team-x/g${i}`, rank: String(i) });
  for (let i = 0; i < 5; i++) d.release(`team-x/g${i}`);
  for (let port = 200; port <= 204; port++) assert.match((d.claim({ key: 'team-y/s', rank: '9', requested: port }) as { conflict: string }).conflict, /given up/, `port ${port}`);
  // by default (and with 0, no gateway limit) a namespace keeps 16 ports it gave up
  for (const cap of [undefined, 0]) {
    const s = new PortAllocator([300, 399], () => now, 300_000, cap);
    for (let port = 300; port < 330; port++) s.claim({ key: 'team-a/mover', rank: '1', requested: port });
    s.release('team-a/mover');
    const held = [];
    for (let port = 300; port < 330; port++) if ('conflict' in s.claim({ key: `team-b/p${port}`, rank: '2', requested: port })) held.push(port);
    assert.deepEqual(held, Array.from({ length: 16 }, (_, i) => 314 + i), `cap ${cap}`);
  }
  // the range full but for ports held for another namespace: tried again when the first hold ends
  for (let port = 102; port <= 106; port++) m.claim({ key: `team-c/g${port}`, rank: '5', requested: port });
  now += 1000; // (107 and 108 were given up at the same moment)
  assert.deepEqual(m.claim({ key: 'team-b/more', rank: '6' }), { conflict: 'no free port left in the range 100-109', retryInMs: 299_000 });
  // a gateway holding its own port (taken while following) keeps it as leader, held for another namespace or not
  const f = new PortAllocator([100, 102], () => now, 300_000);
  f.claim({ key: 'team-b/b', rank: '1', requested: 8080 });
  f.release('team-b/b');
  assert.deepEqual(f.follow('team-a/a', 8080, '2'), { port: 8080 });
  assert.deepEqual(f.claim({ key: 'team-a/a', rank: '2', requested: 8080 }), { port: 8080 });
  // without a hold (the default): at once
  const q = new PortAllocator([100, 102]);
  q.claim({ key: 'team-b/b-gw', rank: '1', requested: 8080 });
  q.release('team-b/b-gw');
  assert.deepEqual(q.claim({ key: 'team-a/squat', rank: '2', requested: 8080 }), { port: 8080 });
});

test('ports: after a restart, the ports in status go back to their holders before any claim', () => {
  const p = new PortAllocator([100, 102]);
  p.seed([
    { key: 'young', rank: '5', previous: 101 },
    { key: 'explicit', rank: '3', requested: 8080, previous: 8080 },
    { key: 'stale', rank: '9', previous: 101 }, // same port as young, younger: loses the tie
    { key: 'moved', rank: '2', requested: 9090, previous: 100 }, // its spec asks for another port now
  ]);
  assert.equal(p.portOf('young'), 101);
  assert.equal(p.portOf('explicit'), 8080);
  assert.equal(p.portOf('stale'), undefined);
  assert.equal(p.portOf('moved'), undefined);
  // an older gateway reconciled first cannot take young's port
  assert.ok('conflict' in p.claim({ key: 'old', rank: '1', requested: 101 }));
  assert.deepEqual(p.claim({ key: 'young', rank: '5', previous: 101 }), { port: 101 });
});

test('ports: two records of one port (one stale: its gateway moved off and its status was not written): the one given it last has it, after a restart and on a follower', () => {
  let now = Date.parse('2026-01-01T00:00:00Z');
  const leader = new PortAllocator([100, 102], () => now);
  assert.deepEqual(leader.claim({ key: 'team-a/a', rank: '1' }), { port: 100 });
  assert.equal(leader.sinceOf('team-a/a'), '2026-01-01T00:00:00.000Z', 'given now');
  now += 5_000;
  assert.deepEqual(leader.claim({ key: 'team-a/a', rank: '1' }), { port: 100 });
  assert.equal(leader.sinceOf('team-a/a'), '2026-01-01T00:00:00.000Z', 'kept: not given again');
  const stale = { key: 'team-a/a', rank: '1', previous: 100, since: '2026-01-01T00:00:00.000Z' };
  const last = { key: 'team-b/b', rank: '2', previous: 100, since: '2026-01-01T00:06:00.000Z' };
  const seeded = new PortAllocator([100, 102]);
  seeded.seed([stale, last]);
  assert.deepEqual([seeded.portOf('team-a/a'), seeded.portOf('team-b/b')], [undefined, 100]);
  assert.equal(seeded.sinceOf('team-b/b'), last.since, 'the record, kept');
  // a record of before there were times loses to one with a time; two of one time: the older gateway
  const untimed = new PortAllocator([100, 102]);
  untimed.seed([{ key: 'team-a/a', rank: '1', previous: 100 }, last]);
  assert.equal(untimed.portOf('team-b/b'), 100);
  const tie = new PortAllocator([100, 102]);
  tie.seed([{ ...last, rank: '3' }, { ...stale, since: last.since }]);
  assert.equal(tie.portOf('team-a/a'), 100);
  // a follower holding the stale record gives the port up to the later one; not the other way
  const f = new PortAllocator([100, 102]);
  assert.deepEqual(f.follow('team-a/a', 100, '1', stale.since), { port: 100 });
  assert.deepEqual(f.follow('team-b/b', 100, '2', last.since), { port: 100, moved: 'team-a/a' });
  assert.equal(f.portOf('team-a/a'), undefined);
  assert.deepEqual(f.follow('team-a/a', 100, '1', stale.since), { conflict: 'port 100, recorded by the leader, is still held on this replica by a gateway that moves off it', holder: 'team-b/b' });
  assert.ok('conflict' in f.follow('team-c/c', 100, '0'), 'a record without a time takes nothing');
  // a's port given to it again meanwhile (updates missed): its new record is what a later one is judged by
  const g = new PortAllocator([100, 102]);
  g.follow('team-a/a', 100, '1', stale.since);
  g.follow('team-a/a', 100, '1', '2026-01-01T00:20:00.000Z');
  assert.ok('conflict' in g.follow('team-b/b', 100, '2', last.since));
  // a port held from a record of before there were times is given one by the leader
  const u = new PortAllocator([100, 102], () => now);
  u.seed([{ key: 'team-c/c', rank: '1', previous: 101 }]);
  assert.equal(u.sinceOf('team-c/c'), new Date(now).toISOString());
  // a leader whose clock is behind the one that gave a port before stamps it after that record
  const behind = new PortAllocator([100, 102], () => Date.parse('2026-01-01T00:01:00Z'));
  assert.deepEqual(behind.claim({ key: 'team-b/b', rank: '2', requested: 8080 }), { port: 8080 });
  behind.claim({ key: 'team-a/a', rank: '1', previous: 100, since: '2026-01-01T00:03:00.000Z', requested: 9090 });
  assert.deepEqual(behind.claim({ key: 'team-b/c', rank: '3' }), { port: 100 });
  assert.equal(behind.sinceOf('team-b/c'), '2026-01-01T00:03:00.001Z');
});

test('a group past its share of event-loop time waits until it is back; other groups go on meanwhile, and a waiting worker gets its key when the pause ends', async () => {
  const clock = new FakeClock();
  const q = new WorkQueue({ groupOf: (k) => k.split('/')[0]!, groupTime: { msPerSecond: 100, burstMs: 1000 }, clock });
  for (let i = 0; i < 3; i++) q.add(`costly/g${i}`);
  q.add('quiet/a');
  assert.equal(await q.get(), 'costly/g0');
  q.charge('costly', 1200); // 200 ms past the burst: 2 s at 100 ms a second
  q.done('costly/g0');
  assert.equal(await q.get(), 'quiet/a', 'another team goes on');
  q.done('quiet/a');
  q.add('quiet/b');
  assert.equal(await q.get(), 'quiet/b');
  q.done('quiet/b');
  // only the paused team's keys left: a worker waits
  let got: string | undefined;
  void q.get().then((k) => { got = k; });
  clock.advance(1_900);
  await Promise.resolve();
  assert.equal(got, undefined, 'still paused');
  q.add('costly/g3');
  await Promise.resolve();
  assert.equal(got, undefined, 'a key added to a paused group waits too');
  q.add('quiet/c'); // a key of another group goes to the waiting worker at once
  await Promise.resolve();
  assert.equal(got, 'quiet/c');
  q.done('quiet/c');
  void q.get().then((k) => { got = k; });
  clock.advance(200);
  await Promise.resolve();
  assert.equal(got, 'costly/g1', 'the pause ended: handed to the waiting worker');
  q.done('costly/g1');
  assert.equal(await q.get(), 'costly/g2');
  q.done('costly/g2');
  assert.equal(await q.get(), 'costly/g3');
  q.done('costly/g3');
  // small charges within the share never pause
  q.charge('quiet', 5);
  q.add('quiet/d');
  assert.equal(await q.get(), 'quiet/d');
  q.shutdown();
});

test('a wall clock stepped back pauses a group no longer than its debt: not for the hour', () => {
  const clock = new FakeClock();
  const q = new WorkQueue({ groupOf: (k) => k.split('/')[0]!, groupTime: { msPerSecond: 100, burstMs: 1000 }, clock });
  q.charge('costly', 1100); // 100 ms past the burst: 1 s at 100 ms a second
  const paused = (g: string) => (q as unknown as { isPaused(g: string): boolean }).isPaused(g);
  assert.equal(paused('costly'), true);
  clock.advance(-3_600_000);
  assert.equal(paused('costly'), true);
  clock.advance(1_001);
  assert.equal(paused('costly'), false);
});

test('a group\'s reading charges made while it waits, for hours, keep it waiting at most a minute after the last; its reconciles count whole', () => {
  const clock = new FakeClock();
  const q = new WorkQueue({ groupOf: (k) => k.split('/')[0]!, groupTime: { msPerSecond: 100, burstMs: 1000 }, clock });
  const paused = (g: string) => (q as unknown as { isPaused(g: string): boolean }).isPaused(g);
  // three hours of 30 charges of 3.7 ms a second (a large gateway's watch events): 111 ms/s
  for (let s = 0; s < 3 * 3600; s++) {
    for (let i = 0; i < 30; i++) q.charge('flood', 3.7, true); // (reading)
    clock.advance(1000);
  }
  assert.equal(paused('flood'), true);
  clock.advance(58_900); // (a second after its last charge already)
  assert.equal(paused('flood'), true, 'still in debt');
  clock.advance(101);
  assert.equal(paused('flood'), false, 'not for the 1,178 s its charges added up to');
  // one charge out of debt counts whole: 20 s of work, 19 s past the burst, is 190 s; and a
  // reading charge while it waits does not shorten it
  q.charge('costly', 20_000);
  clock.advance(100_000);
  q.charge('costly', 1, true);
  clock.advance(89_900);
  assert.equal(paused('costly'), true);
  clock.advance(111);
  assert.equal(paused('costly'), false);
  // two reconciles of 6 s at once (two workers), charged one after the other: 120 s, not 60
  q.charge('pair', 6_000);
  q.charge('pair', 6_000);
  clock.advance(109_900);
  assert.equal(paused('pair'), true);
  clock.advance(101);
  assert.equal(paused('pair'), false);
  q.shutdown();
});

test('drop takes back a waiting key, its timer and its failures; one being processed is added again', async () => {
  const clock = new FakeClock();
  const q = new WorkQueue({ groupOf: (k) => k.split('/')[0]!, clock });
  for (const k of ['a/1', 'a/2', 'b/1', 'a/3']) q.add(k);
  q.drop('a/2');
  q.drop('b/1'); // its group's only key: the group leaves the turns
  q.drop('a/9'); // not waiting: nothing
  assert.equal(q.depth, 2);
  q.addRateLimited('c/1');
  q.drop('c/1');
  clock.advance(10_000);
  assert.equal(q.numRequeues('c/1'), 0);
  const first = await q.get();
  assert.equal(first, 'a/1');
  q.drop('a/1'); // being processed: added again, after its reconcile
  q.done('a/1');
  const rest: string[] = [];
  while (q.depth) { const k = (await q.get())!; rest.push(k); q.done(k); }
  assert.deepEqual(rest, ['a/3', 'a/1']);
  q.add('b/1'); // dropped keys come back as any other
  assert.equal(await q.get(), 'b/1');
  q.shutdown();
});

test('within a group, keys go first in, first out: a dropped key added again goes last; keys added while the group drains come after', async () => {
  const q = new WorkQueue({ groupOf: (k) => k.split('/')[0]! });
  for (const k of ['a/1', 'a/2', 'a/3', 'a/4']) q.add(k);
  q.drop('a/2');
  q.add('a/2');
  const order: string[] = [];
  const next = async () => { const k = (await q.get())!; order.push(k); q.done(k); };
  await next(); // a/1
  q.add('a/5');
  q.drop('a/3');
  await next(); // a/4
  q.add('a/1'); // taken already: added again, last
  while (q.depth) await next();
  assert.deepEqual(order, ['a/1', 'a/4', 'a/2', 'a/5', 'a/1']);
  assert.equal(q.depth, 0);
  q.add('a/9'); // the group made anew once it emptied
  await next();
  assert.deepEqual(order.at(-1), 'a/9');
});
