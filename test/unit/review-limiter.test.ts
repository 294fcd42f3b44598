import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FairLimiter, knownAddressesPerNamespace, LimitedReviewer } from '../../src/auth/review-limiter.js';
import { FakeClock } from '../support/fake-clock.js';
import type { ReviewResult } from '../../src/auth/identity.js';
import { AuthUnavailableError } from '../../src/errors.js';

/** A review that finishes when the test says so. */
function gate() {
  let open!: () => void;
  const p = new Promise<void>((r) => { open = r; });
  return { p, open };
}

const flush = () => new Promise((r) => setImmediate(r));

/** How `p` has settled by the time pending callbacks have run: its value, its error, or 'pending'. */
function outcome<T>(p: Promise<T>): Promise<T | unknown> {
  return Promise.race([p.then((v) => v, (e: unknown) => e), flush().then(() => 'pending')]);
}
const isRefusal = (e: unknown) => e instanceof AuthUnavailableError && e.status === 503 && e.retryAfterSeconds === 1;
// a broken limiter may leave a caller waiting for ever: fail, do not hang
const opts = { timeout: 10_000 };

function setup(opts: { maxInFlight?: number; maxQueue?: number; maxWaitMs?: number } = {}) {
  const timers = new FakeClock();
  const events = { inFlight: [] as number[], refused: [] as string[], namespaces: [] as string[], postponed: 0, postponedFor: [] as string[] };
  const limiter = new FairLimiter({
    maxInFlight: opts.maxInFlight ?? 2, maxQueue: opts.maxQueue ?? 64, maxWaitMs: opts.maxWaitMs ?? 5_000, clock: timers,
    onInFlight: (n) => events.inFlight.push(n),
    onRefused: (ns, reason) => events.refused.push(`${ns}:${reason}`),
    onNamespace: (ns) => events.namespaces.push(ns),
    onPostponed: (ns) => { events.postponed++; events.postponedFor.push(ns); },
  });
  const order: string[] = [];
  const gates = new Map<string, ReturnType<typeof gate>>();
  const run = (ns: string, id: string, source?: string) => limiter.run(ns, async () => {
    order.push(id);
    const g = gate();
    gates.set(id, g);
    await g.p;
    return id;
  }, source);
  const finish = async (id: string) => {
    gates.get(id)!.open();
    await flush();
  };
  return { limiter, timers, events, order, run, finish };
}

test('never more than maxInFlight at once; waiters start as slots free', opts, async () => {
  const { limiter, order, run, finish, events } = setup({ maxInFlight: 2 });
  const all = ['a1', 'a2', 'a3', 'a4'].map((id) => run('a', id));
  await flush();
  assert.deepEqual(order, ['a1', 'a2']);
  assert.equal(limiter.inFlight, 2);
  assert.equal(limiter.waiting('a'), 2);
  await finish('a1');
  assert.deepEqual(order, ['a1', 'a2', 'a3']);
  assert.equal(limiter.inFlight, 2);
  await finish('a2');
  await finish('a3');
  await finish('a4');
  assert.deepEqual(await Promise.all(all), ['a1', 'a2', 'a3', 'a4']);
  assert.equal(limiter.inFlight, 0);
  assert.ok(Math.max(...events.inFlight) <= 2);
  assert.equal(events.inFlight.at(-1), 0);
  assert.deepEqual(events.namespaces, ['a']);
});

test("a flooding namespace does not make another namespace's first caller wait behind the flood", opts, async () => {
  const { order, run, finish } = setup({ maxInFlight: 1 });
  const flood = Array.from({ length: 20 }, (_, i) => run('team-a', `a${i}`));
  await flush();
  const b = run('team-b', 'b0');
  await flush();
  assert.deepEqual(order, ['a0']);
  await finish('a0');
  // the next slot: team-a had been waiting longer, so a1; then team-b, not a2…a19
  await finish('a1');
  assert.deepEqual(order, ['a0', 'a1', 'b0']);
  await finish('b0');
  assert.equal(await b, 'b0');
  for (let i = 2; i < 20; i++) await finish(`a${i}`);
  await Promise.all(flood);
});

test('round-robin between waiting namespaces', opts, async () => {
  const { order, run, finish } = setup({ maxInFlight: 1 });
  const p = [run('x', 'x0'), run('a', 'a1'), run('a', 'a2'), run('a', 'a3'), run('b', 'b1'), run('b', 'b2'), run('c', 'c1')];
  await flush();
  for (const id of ['x0', 'a1', 'b1', 'c1', 'a2', 'b2', 'a3']) await finish(id);
  await Promise.all(p);
  assert.deepEqual(order, ['x0', 'a1', 'b1', 'c1', 'a2', 'b2', 'a3']);
});

test('a full namespace queue refuses at once with 503 and Retry-After; other namespaces still queue', opts, async () => {
  const { run, finish, events, limiter } = setup({ maxInFlight: 1, maxQueue: 3 });
  const first = run('a', 'a0');
  const queued = [run('a', 'a1'), run('a', 'a2'), run('a', 'a3')];
  await flush();
  const refused = await outcome(run('a', 'a4'));
  assert.ok(isRefusal(refused), String(refused));
  assert.deepEqual(events.refused, ['a:queue_full']);
  const b = run('b', 'b0');
  await flush();
  assert.equal(limiter.waiting('b'), 1);
  for (const id of ['a0', 'a1', 'b0', 'a2', 'a3']) await finish(id);
  await Promise.all([first, ...queued, b]);
});

test('one client address holds at most an eighth of a namespace\'s queue: a flood of tokens from it leaves room for the team\'s callers', opts, async () => {
  const { run, finish, events, limiter } = setup({ maxInFlight: 1, maxQueue: 16 });
  const first = run('b', 'b0', '10.0.0.9');
  // the flood's address: 2 waiting (16 / 8), the third refused at once
  const flood = [run('b', 'f1', '10.0.0.9'), run('b', 'f2', '10.0.0.9')];
  await flush();
  const third = await outcome(run('b', 'f3', '10.0.0.9'));
  assert.ok(isRefusal(third), String(third));
  assert.match((third as Error).message, /too many token reviews are waiting for this client address/);
  assert.deepEqual(events.refused, ['b:source_full']);
  // the team's own callers, from other addresses, still queue
  const mine = [run('b', 'm1', '10.0.0.20'), run('b', 'm2', '10.0.0.21')];
  await flush();
  assert.equal(limiter.waiting('b'), 4);
  // the same address of another namespace's gateway is counted apart
  const other = run('c', 'c1', '10.0.0.9');
  for (const id of ['b0', 'f1', 'c1', 'f2', 'm1', 'm2']) await finish(id);
  await Promise.all([first, ...flood, ...mine, other]);
  // once its callers were served, the address may wait again: two of them behind a review in flight
  const busy = run('b', 'x0');
  await flush();
  const again = [run('b', 'f4', '10.0.0.9'), run('b', 'f5', '10.0.0.9')];
  await flush();
  assert.equal(limiter.waiting('b'), 2);
  for (const id of ['x0', 'f4', 'f5']) await finish(id);
  assert.deepEqual(await Promise.all([busy, ...again]), ['x0', 'f4', 'f5']);
});

test('forged tokens from many addresses fill a namespace\'s queue, not the lane of addresses whose last review there named an admitted caller: those go first; a refusal ends it; a full first lane spills over', opts, async () => {
  const timers = new FakeClock();
  const limiter = new FairLimiter({ maxInFlight: 1, maxQueue: 16, clock: timers });
  const results = new Map<string, ReviewResult>([['good', { authenticated: true, user: { username: 'u', uid: '', groups: [], extra: {} }, audiences: ['gw'] }]]);
  const order: string[] = [];
  const gates: ReturnType<typeof gate>[] = [];
  const limited = new LimitedReviewer({ review: async (token: string) => {
    order.push(token);
    const g = gate();
    gates.push(g);
    await g.p;
    return results.get(token.split('#')[0]!) ?? { authenticated: false, error: 'forged' };
  } }, limiter);
  // as the authenticator tells it: a caller spec.access names (here: good) vouches for its address
  const r = { review: async (token: string, aud: string[], ns: string, address: string) => {
    const res = await limited.review(token, aud, ns, address);
    limited.vouch(ns, address, res.authenticated && token.startsWith('good'));
    return res;
  } };
  const next = async () => { gates.shift()!.open(); await flush(); };
  // the team's caller at 10.1.0.5 authenticates once
  const first = r.review('good#1', ['gw'], 'team-b', '10.1.0.5');
  await flush();
  await next();
  assert.equal((await first).authenticated, true);
  // a review in flight; 16 addresses fill team-b's queue with forged tokens (one each)
  const busy = r.review('x#0', ['gw'], 'team-b', '10.9.0.99');
  await flush();
  const flood = Array.from({ length: 16 }, (_, i) => r.review(`forged#${i}`, ['gw'], 'team-b', `10.9.0.${i}`));
  await flush();
  const refused = await outcome(r.review('forged#x', ['gw'], 'team-b', '10.9.0.50'));
  assert.ok(isRefusal(refused), String(refused));
  // the known address still queues, and is served before the flood
  const mine = r.review('good#2', ['gw'], 'team-b', '10.1.0.5');
  await flush();
  assert.equal(limiter.waiting('team-b'), 17);
  await next(); // x#0 ends
  assert.equal(order.at(-1), 'good#2');
  await next();
  assert.equal((await mine).authenticated, true);
  // a forged token from the known address: served first once more, then it is known no longer
  const forged = r.review('forged#k', ['gw'], 'team-b', '10.1.0.5');
  await flush();
  assert.equal(order.at(-1), 'forged#0');
  await next(); // forged#0 ends: the known lane goes next
  assert.equal(order.at(-1), 'forged#k');
  await next();
  assert.equal((await forged).authenticated, false);
  // the rest's lane full again (forged#0 and forged#1 have left it)
  flood.push(r.review('forged#y', ['gw'], 'team-b', '10.9.0.60'), r.review('forged#z', ['gw'], 'team-b', '10.9.0.61'));
  await flush();
  const after = await outcome(r.review('good#3', ['gw'], 'team-b', '10.1.0.5'));
  assert.ok(isRefusal(after), 'the address waits with the rest now, whose lane is full');
  while (gates.length) await next();
  await Promise.all([busy, ...flood]);
  assert.equal(timers.waiting, 0);
  // a first lane that is full spills into the other (not refused while that has room)
  const spill = new FairLimiter({ maxInFlight: 1, maxQueue: 2, clock: timers });
  for (const a of ['10.1.0.1', '10.1.0.2', '10.1.0.3']) spill.vouch('team-b', a, true);
  const hold = gate();
  const running = spill.run('team-b', () => hold.p, '10.9.9.9');
  const waiting = ['10.1.0.1', '10.1.0.2', '10.1.0.3'].map((a) => spill.run('team-b', async () => a, a));
  await flush();
  assert.equal(spill.waiting('team-b'), 3, 'two in the first lane, the third in the other');
  hold.open();
  assert.deepEqual(await Promise.all(waiting), ['10.1.0.1', '10.1.0.2', '10.1.0.3']);
  await running;
});

// A red team: 8 addresses keeping the other callers' lane full held a team's new pods (new
// addresses, not vouched for yet) out for as long as the flood lasted. A review: making room by
// the address holding the most let another team's fresh addresses refuse the team's own waiters.
test('a full lane of the other callers makes room by refusing the oldest waiter of an address whose last review named no one admitted; never one without such a review', opts, async () => {
  const { run, events, limiter } = setup({ maxInFlight: 1, maxQueue: 64 }); // (8 an address)
  const busy = run('b', 'busy', '10.9.9.9');
  await flush();
  const waiting = new Map<string, Promise<unknown>>();
  const wait = (id: string, address: string) => {
    const p = run('b', id, address);
    p.catch(() => {});
    waiting.set(id, p);
  };
  // 8 addresses whose last review was refused (forged tokens), and a new pod's 8 first requests
  for (let i = 0; i < 8; i++) limiter.vouch('b', `10.9.0.${i}`, false);
  for (let i = 0; i < 8; i++) wait(`p${i}`, '10.1.0.1'); // (the oldest)
  for (let i = 0; i < 56; i++) wait(`f${i}`, `10.9.0.${i % 8}`);
  await flush();
  assert.equal(limiter.waiting('b'), 64);
  // a new address: f0, the oldest waiter of a refused address, makes room
  wait('pod2', '10.1.0.2');
  await flush();
  assert.ok(isRefusal(await outcome(waiting.get('f0')!)), 'f0 refused');
  assert.deepEqual(events.refused, ['b:queue_full']);
  // a refused address takes room only from an address holding more than it would: here 7 each
  // against its 8 (7 waiting and itself), none
  assert.ok(isRefusal(await outcome(run('b', 'again', '10.9.0.3'))));
  // fresh addresses refuse only the refused ones' waiters: the new pod's stay
  for (let i = 0; i < 10; i++) wait(`x${i}`, `10.7.0.${i}`);
  await flush();
  for (let i = 1; i <= 10; i++) assert.ok(isRefusal(await outcome(waiting.get(`f${i}`)!)), `f${i} refused`);
  assert.equal(await outcome(waiting.get('f11')!), 'pending');
  for (let i = 0; i < 8; i++) assert.equal(await outcome(waiting.get(`p${i}`)!), 'pending', `p${i} waits on`);
  assert.equal(limiter.waiting('b'), 64);
  // an address at its share of the queue is refused as such, before any room is made
  const before = limiter.waiting('b');
  assert.ok(isRefusal(await outcome(run('b', 'p9', '10.1.0.1'))));
  assert.equal(events.refused.at(-1), 'b:source_full');
  assert.equal(limiter.waiting('b'), before);
  void busy;
  // a review: one forged token sent from a team's address (its SNAT neighbour) made it refused,
  // and a flood from 8 addresses then kept its callers out for as long as it lasted
  const s2 = setup({ maxInFlight: 1, maxQueue: 64 });
  const busy2 = s2.run('b', 'busy', '10.9.9.9');
  await flush();
  for (let i = 0; i < 8; i++) s2.limiter.vouch('b', `10.9.0.${i}`, false);
  s2.limiter.vouch('b', '10.1.0.9', false); // the team's address, after the neighbour's forged token
  const flood = Array.from({ length: 64 }, (_, i) => { const p = s2.run('b', `g${i}`, `10.9.0.${i % 8}`); p.catch(() => {}); return p; });
  await flush();
  assert.equal(s2.limiter.waiting('b'), 64);
  const mine = s2.run('b', 'mine', '10.1.0.9');
  mine.catch(() => {});
  await flush();
  assert.ok(isRefusal(await outcome(flood[0]!)), 'the oldest of an address holding 8 gave way');
  assert.equal(await outcome(mine), 'pending');
  void busy2;
});

test('a namespace remembers at most 1024 addresses as having authenticated, the least recent going first', () => {
  const limiter = new FairLimiter({ maxInFlight: 1 });
  for (let i = 0; i < 1_025; i++) limiter.vouch('team-a', `10.0.${i >> 8}.${i & 255}`, true);
  limiter.vouch('team-a', '10.0.0.1', true); // used again: the most recent
  limiter.vouch('team-a', 'x', true);
  const known = (limiter as unknown as { known: Map<string, Set<string>> }).known.get('team-a')!;
  assert.equal(known.size, knownAddressesPerNamespace);
  assert.ok(!known.has('10.0.0.0') && !known.has('10.0.0.2') && known.has('10.0.0.1') && known.has('x'));
});

test('a caller waiting longer than maxWaitMs gets 503 with Retry-After and leaves the queue', opts, async () => {
  const { run, finish, events, limiter, timers, order } = setup({ maxInFlight: 1, maxWaitMs: 5_000 });
  const first = run('a', 'a0');
  const late = run('b', 'b0');
  await flush();
  timers.advance(4_999);
  assert.equal(await outcome(late), 'pending');
  assert.equal(limiter.waiting('b'), 1);
  timers.advance(1);
  const err = await outcome(late);
  assert.ok(isRefusal(err), String(err));
  assert.deepEqual(events.refused, ['b:timeout']);
  assert.equal(limiter.waiting('b'), 0);
  // the slot it never took goes to the next caller; no stale timers are left
  const next = run('c', 'c0');
  await finish('a0');
  await finish('c0');
  assert.equal(await first, 'a0');
  assert.equal(await next, 'c0');
  assert.deepEqual(order, ['a0', 'c0']);
  assert.equal(timers.waiting, 0);
});

test('a failing review frees its slot', opts, async () => {
  const limiter = new FairLimiter({ maxInFlight: 1, clock: new FakeClock() });
  await assert.rejects(limiter.run('a', async () => { throw new Error('boom'); }), /boom/);
  assert.equal(limiter.inFlight, 0);
  assert.equal(await limiter.run('a', async () => 'ok'), 'ok');
});

test('LimitedReviewer queues by the namespace it is given', opts, async () => {
  const seen: string[] = [];
  const limiter = new FairLimiter({ maxInFlight: 1, onNamespace: (ns) => seen.push(ns) });
  const inner = { review: async (): Promise<ReviewResult> => ({ authenticated: false, error: 'no' }) };
  const r = new LimitedReviewer(inner, limiter);
  assert.deepEqual(await r.review('t', ['gw'], 'team-a'), { authenticated: false, error: 'no' });
  await r.review('t', ['gw']);
  assert.deepEqual(seen, ['team-a', '']);
});

test('maxInFlight must be a positive integer', opts, () => {
  for (const bad of [0, -1, 1.5, NaN]) assert.throws(() => new FairLimiter({ maxInFlight: bad }), /positive integer/);
});

test('perSecond: calls start at most a second\'s worth at once, then as the rate allows, namespaces in turn', opts, async () => {
  const timers = new FakeClock();
  const refused: string[] = [];
  const limiter = new FairLimiter({ maxInFlight: 100, perSecond: 4, clock: timers, onRefused: (ns, r) => refused.push(`${ns}:${r}`) });
  const started: string[] = [];
  const run = (ns: string, id: string) => limiter.run(ns, async () => { started.push(id); return id; });
  // team a floods with 10; team b asks for 2 after it
  const all = [...Array.from({ length: 10 }, (_, i) => run('a', `a${i}`)), run('b', 'b0'), run('b', 'b1')];
  await flush();
  assert.deepEqual(started, ['a0', 'a1', 'a2', 'a3'], 'a second\'s worth at once');
  timers.advance(250);
  await flush();
  assert.deepEqual(started.slice(4), ['a4'], 'then one a quarter second');
  timers.advance(250);
  await flush();
  assert.deepEqual(started.slice(5), ['b0'], 'b\'s turn next, not after a\'s flood');
  timers.advance(250);
  await flush();
  timers.advance(250);
  await flush();
  assert.deepEqual(started.slice(6), ['a5', 'b1']);
  timers.advance(4_000);
  await flush();
  assert.equal(started.length, 12);
  await Promise.all(all);
  assert.deepEqual(refused, []);
  // idle for a while: a full second's worth again, never more
  timers.advance(10_000);
  const more = Array.from({ length: 6 }, (_, i) => run('c', `c${i}`));
  await flush();
  assert.deepEqual(started.slice(12), ['c0', 'c1', 'c2', 'c3']);
  timers.advance(500);
  await flush();
  await Promise.all(more);
});

test('perSecond: a call held back by the rate starts when it allows, though nothing in flight finishes', opts, async () => {
  const timers = new FakeClock();
  const limiter = new FairLimiter({ maxInFlight: 100, perSecond: 1, clock: timers });
  const started: string[] = [];
  const held = gate();
  void limiter.run('a', async () => { started.push('a0'); await held.p; });
  const second = limiter.run('b', async () => { started.push('b0'); });
  await flush();
  assert.deepEqual(started, ['a0']);
  timers.advance(1_000);
  await flush();
  assert.deepEqual(started, ['a0', 'b0']);
  await second;
  held.open();
});

test('perSecond: a wall clock stepped back holds nothing back for longer than the rate does', opts, async () => {
  const timers = new FakeClock();
  const limiter = new FairLimiter({ maxInFlight: 100, perSecond: 4, clock: timers });
  const started: string[] = [];
  const run = (id: string) => limiter.run('a', async () => { started.push(id); });
  await Promise.all(['a0', 'a1', 'a2', 'a3'].map(run));
  timers.advance(-3_600_000); // an NTP step back of an hour
  const late = run('late');
  timers.advance(250);
  await flush();
  assert.deepEqual(started.at(-1), 'late');
  await late;
});

test('a background review (tryRun) runs only in a slot free now with nobody waiting, else is refused at once: it never queues, never counts as a refusal (it counts as postponed), and frees its slot for the waiters', opts, async () => {
  const { limiter, events, order, run, finish } = setup({ maxInFlight: 2 });
  const background = gate();
  const ran = limiter.tryRun('a', async () => { await background.p; return 'renewed'; });
  assert.equal(limiter.inFlight, 1);
  assert.equal(events.postponed, 0, 'one that runs is not postponed');
  const a1 = run('a', 'a1');
  await flush();
  assert.equal(limiter.inFlight, 2);
  await assert.rejects(limiter.tryRun('a', async () => 'x'), /not made in the background: no slot free now/);
  const a2 = run('a', 'a2'); // waits
  await flush();
  assert.equal(limiter.waiting('a'), 1);
  await finish('a1');
  await assert.rejects(limiter.tryRun('b', async () => 'x'), /no slot free now/, 'a2 took the freed slot');
  assert.equal(events.postponed, 2);
  assert.deepEqual(events.postponedFor, ['a', 'b'], 'each counted under its namespace');
  background.open();
  assert.equal(await ran, 'renewed');
  await finish('a2');
  assert.deepEqual(await Promise.all([a1, a2]), ['a1', 'a2']);
  assert.deepEqual(order, ['a1', 'a2']);
  assert.deepEqual(events.refused, []);
  assert.equal(limiter.inFlight, 0);
});

test('LimitedReviewer: a background review goes through tryRun, a request\'s through the queue', opts, async () => {
  const limiter = new FairLimiter({ maxInFlight: 1 });
  const g = gate();
  const inner = { review: async (): Promise<ReviewResult> => { await g.p; return { authenticated: false, error: 'x' }; } };
  const r = new LimitedReviewer(inner, limiter);
  const first = r.review('t', ['gw'], 'a');
  await assert.rejects(r.review('t', ['gw'], 'a', undefined, true), /no slot free now/);
  const queued = r.review('t', ['gw'], 'a');
  assert.equal(limiter.waiting('a'), 1);
  g.open();
  await Promise.all([first, queued]);
});

test('with a rate: a background review refused takes no rate token, and never the token a waiter is owed (its timer late)', opts, async () => {
  {
    const clock = new FakeClock(0);
    const l = new FairLimiter({ maxInFlight: 1, perSecond: 1, clock });
    const g = gate();
    const a1 = l.run('a', () => g.p);
    await flush();
    clock.advance(1000); // the bucket refills while a1 holds the only slot
    await assert.rejects(l.tryRun('b', async () => 'x'), /no slot free now/);
    g.open();
    await a1;
    let started = false;
    const a2 = l.run('a', async () => { started = true; });
    await flush();
    assert.equal(started, true, 'the refused background review took no token');
    await a2;
  }
  {
    const clock = new FakeClock(0);
    const l = new FairLimiter({ maxInFlight: 2, perSecond: 1, clock });
    const g = gate();
    const a1 = l.run('a', () => g.p);
    let a2started = false;
    const a2 = l.run('a', async () => { a2started = true; });
    await flush();
    clock.advanceLate(1000); // refilled; the waiter's dispatch timer has not fired yet
    await assert.rejects(l.tryRun('b', async () => 'ran'), /no slot free now/);
    clock.advance(0);
    await flush();
    assert.equal(a2started, true, 'the waiter got the token');
    g.open();
    await Promise.all([a1, a2]);
  }
});
