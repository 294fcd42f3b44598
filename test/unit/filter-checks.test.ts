import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import assert from 'node:assert/strict';
import { defaultFilterLimits, FilterChecks, type FilterLimits } from '../../src/dataplane/filter-checks.js';
import { PathFilter, type FilterPass, type FilterRefusal } from '../../src/dataplane/path.js';
import { FilterUnavailableError, FiltersBusyError } from '../../src/errors.js';

const kubectlProxy = { acceptPaths: ['^.*'], rejectPaths: ['^/api/.*/pods/.*/exec', '^/api/.*/pods/.*/attach'], rejectMethods: [] };
// a pattern whose DFA builds a state per character of a path of a, b and /: milliseconds a check
const hostile = (owner: string) => new PathFilter({ acceptPaths: ['^.*'], rejectPaths: Array.from({ length: 4 }, (_, i) => `[ab/]*a[ab/]{${40 + i}}[0-9]`), rejectMethods: [] },
  owner, 'spec.routes[0].apiserver');
let seed = 7;
const longPath = () => '/' + Array.from({ length: 4000 }, () => 'ab'[(seed = (seed * 1103515245 + 12345) & 0x7fffffff) % 2]).join('') + '/x';

const limits = (l: Partial<FilterLimits>): FilterLimits => ({ ...defaultFilterLimits, ...l });
const sync = (v: unknown): FilterRefusal | FilterPass => {
  assert.ok(!(v instanceof Promise), 'answered at once, on the event loop');
  return v as FilterRefusal | FilterPass;
};

test('a cheap check runs on the event loop, at once; a costly one on the filter thread, with the same answer', async (t) => {
  const sent: string[] = [];
  const checks = new FilterChecks(defaultFilterLimits, { sent: (ns, why) => sent.push(`${ns} ${why}`) });
  t.after(() => checks.close());
  const f = new PathFilter(kubectlProxy, 'team-a', 'spec.routes[0].apiserver');
  assert.deepEqual(sync(checks.check(f, 'GET', '/api/v1/namespaces/a/pods')), { accepted: { field: 'spec.routes[0].apiserver.acceptPaths[0]', pattern: '^.*' } });
  assert.equal(checks.offThread, 0);
  // the same filter on a path long enough that size × length is over the bound
  const long = '/api/v1/namespaces/a/pods/p/exec/' + 'x'.repeat(1000);
  assert.ok(f.size * long.length > defaultFilterLimits.onThreadCost);
  const later = checks.check(f, 'GET', long);
  assert.ok(later instanceof Promise);
  assert.deepEqual(await later, f.check('GET', long));
  assert.match((await later as FilterRefusal).field, /rejectPaths\[0\]/);
  const passed = checks.check(f, 'GET', '/api/v1/' + 'y'.repeat(1000));
  assert.deepEqual(await passed, { accepted: { field: 'spec.routes[0].apiserver.acceptPaths[0]', pattern: '^.*' } });
  assert.equal(checks.offThread, 2);
  assert.deepEqual(sent, ['team-a cost', 'team-a cost']);
});

test('a namespace that used its event-loop time has its checks run on the filter thread; another namespace\'s stay on the loop', async (t) => {
  let now = 0;
  const over: string[] = [];
  // each check takes 30 ms of this clock: the 100 ms burst lasts four checks
  const clock = () => (now += 30);
  const checks = new FilterChecks(defaultFilterLimits, { overBudget: (ns) => over.push(ns) }, clock);
  t.after(() => checks.close());
  const a = new PathFilter(kubectlProxy, 'team-a');
  const b = new PathFilter(kubectlProxy, 'team-b');
  for (let i = 0; i < 4; i++) sync(checks.check(a, 'GET', '/api/v1/pods'));
  assert.deepEqual(over, ['team-a']);
  const moved = checks.check(a, 'GET', '/api/v1/pods');
  assert.ok(moved instanceof Promise, 'team-a is over its time: the filter thread');
  assert.ok('accepted' in await moved);
  sync(checks.check(b, 'GET', '/api/v1/pods'));
  // refilled (20 ms a second): after 10 s of the clock, team-a is back on the loop
  now += 10_000;
  sync(checks.check(a, 'GET', '/api/v1/pods'));
});

test('while the filter thread works on one team\'s hostile check, another team\'s cheap checks are answered at once', async (t) => {
  // (threadCheckMs long: a loaded machine's hostile check is not stopped)
  const checks = new FilterChecks(limits({ threadCheckMs: 60_000 }));
  t.after(() => checks.close());
  const a = hostile('team-a');
  const b = new PathFilter(kubectlProxy, 'team-b');
  const order: string[] = [];
  const slow = Promise.all([longPath(), longPath()].map((p) => Promise.resolve(checks.check(a, 'GET', p)).then(() => order.push('team-a'))));
  // team-b asks after team-a's checks were sent; it is answered before either
  await new Promise((r) => setImmediate(r));
  assert.ok('accepted' in sync(checks.check(b, 'GET', '/api/v1/namespaces/b/pods')));
  order.push('team-b');
  await slow;
  assert.deepEqual(order, ['team-b', 'team-a', 'team-a']);
  assert.equal(checks.offThread, 2);
});

test('namespaces take turns on the filter thread; a namespace with too many checks waiting gets 429', async (t) => {
  const refused: string[] = [];
  const checks = new FilterChecks(limits({ onThreadCost: 0, waitingPerNamespace: 2 }), { refused: (ns, r) => refused.push(`${ns} ${r}`) });
  t.after(() => checks.close());
  const a = new PathFilter(kubectlProxy, 'team-a');
  const b = new PathFilter(kubectlProxy, 'team-b');
  const order: string[] = [];
  const ask = (f: PathFilter, name: string) => Promise.resolve(checks.check(f, 'GET', '/api/v1/pods')).then(() => order.push(name));
  const all = [ask(a, 'a1'), ask(a, 'a2'), ask(a, 'a3')];
  // a1 is on the thread, a2 and a3 wait: a fourth is refused
  assert.throws(() => checks.check(a, 'GET', '/api/v1/pods'), (err: unknown) => err instanceof FiltersBusyError && err.status === 429 && err.retryAfterSeconds === 1);
  assert.deepEqual(refused, ['team-a busy']);
  all.push(ask(b, 'b1'));
  await Promise.all(all);
  assert.ok(order.indexOf('b1') < order.indexOf('a3'), `team-b waited for one of team-a's checks at most: ${order.join(' ')}`);
});

test('the filter thread fails closed: a check it cannot answer is 503, and so is one it was running when it stopped', async (t) => {
  const refused: string[] = [];
  const checks = new FilterChecks(limits({ onThreadCost: 0 }), { refused: (ns, r) => refused.push(`${ns} ${r}`) });
  t.after(() => checks.close());
  // a filter whose patterns the thread cannot compile (valid when made, changed after)
  const f = new PathFilter({ ...kubectlProxy }, 'team-a');
  (f.spec as { rejectPaths: string[] }).rejectPaths = ['(?<=x)'];
  await assert.rejects(Promise.resolve(checks.check(f, 'GET', '/x')), (err: unknown) => err instanceof FilterUnavailableError && err.status === 503);
  // 16 hostile patterns on a 4 KiB path: far over the 20 ms before the close, even on a warm thread
  // (4 of them could finish first: this run once saw no rejection)
  const slow = new PathFilter({ acceptPaths: ['^.*'], rejectPaths: Array.from({ length: 16 }, (_, i) => `[ab/]*a[ab/]{${40 + i}}[0-9]`), rejectMethods: [] }, 'team-a');
  const stopped = checks.check(slow, 'GET', longPath());
  await new Promise((r) => setTimeout(r, 20));
  checks.close();
  await assert.rejects(Promise.resolve(stopped), (err: unknown) => err instanceof FilterUnavailableError && /stopped/.test((err as Error).message));
  assert.deepEqual(refused, ['team-a failed', 'team-a failed']);
  // a later check starts a new thread
  assert.ok('accepted' in await checks.check(new PathFilter(kubectlProxy, 'team-a'), 'GET', '/x'));
});

test('a check that takes too long on the filter thread is stopped and answered 503; the next namespace\'s check runs on a new thread', async (t) => {
  // (quickCheckMs as long: no lane to give way to before the check is stopped)
  const checks = new FilterChecks(limits({ onThreadCost: 0, threadCheckMs: 30, quickCheckMs: 10_000 }));
  t.after(() => checks.close());
  // 16 hostile patterns on a 4 KiB path: far over 30 ms
  const slow = new PathFilter({ acceptPaths: ['^.*'], rejectPaths: Array.from({ length: 16 }, (_, i) => `[ab/]*a[ab/]{${40 + i}}[0-9]`), rejectMethods: [] }, 'team-a');
  // the thread is up (loaded) before the slow check: it is timed from when it is sent
  assert.ok('accepted' in await checks.check(new PathFilter(kubectlProxy, 'team-c'), 'GET', '/x'));
  const order: string[] = [];
  const a = Promise.resolve(checks.check(slow, 'GET', longPath())).then(() => order.push('a answered'), (err: unknown) => {
    order.push('a refused');
    assert.ok(err instanceof FilterUnavailableError && err.status === 503 && /took over 30 ms/.test(err.message), String(err));
  });
  const b = Promise.resolve(checks.check(new PathFilter(kubectlProxy, 'team-b'), 'GET', '/api/v1/pods')).then(() => order.push('b answered'));
  await Promise.all([a, b]);
  assert.deepEqual(order, ['a refused', 'b answered']);
});

test('a check whose client left while it waited for the filter thread is not sent', async (t) => {
  const checks = new FilterChecks(limits({ onThreadCost: 0 }));
  t.after(() => checks.close());
  const first = checks.check(hostile('team-a'), 'GET', longPath());
  const left = checks.check(new PathFilter(kubectlProxy, 'team-b'), 'GET', '/x', { destroyed: true });
  await first;
  await assert.rejects(Promise.resolve(left), (err: unknown) => err instanceof FilterUnavailableError && /client left/.test((err as Error).message));
  assert.equal(checks.offThread, 1);
});

test('a filter thread past its heap bound stops: its check is answered 503, and the next check runs on a new thread', async (t) => {
  const refused: string[] = [];
  // (what kept filters may hold not bounded here: the heap is)
  const checks = new FilterChecks(limits({ onThreadCost: 0, threadHeapMb: 16, threadKeptMb: 1_000, threadCheckMs: 10_000 }), { refused: (ns, why) => refused.push(`${ns} ${why}`) });
  t.after(() => checks.close());
  // ~1 MiB compiled a filter: 32 patterns, each a class of 180 separate characters
  const chars = (j: number) => Array.from({ length: 180 }, (_, k) => String.fromCodePoint(0x400 + 2 * k + (j % 2))).join('');
  const big = (ns: number) => new PathFilter({ acceptPaths: Array.from({ length: 32 }, (_, j) => `q${ns}_${j}[${chars(j)}]|[ab]*a[ab]{4}/`), rejectPaths: [], rejectMethods: [] }, `ns-${ns}`);
  let failed: unknown;
  for (let ns = 0; ns < 40 && !failed; ns++) {
    await Promise.resolve(checks.check(big(ns), 'GET', '/abbabaabbbabaabab/')).catch((err: unknown) => { failed = err; });
  }
  assert.ok(failed instanceof FilterUnavailableError && failed.status === 503 && /filter thread stopped/.test(failed.message), String(failed));
  assert.equal(refused.length, 1);
  assert.ok('accepted' in await checks.check(new PathFilter(kubectlProxy, 'team-b'), 'GET', '/x'));
});

test('the filter thread keeps what its compiled filters hold under its heap bound: 40 routes at the schema\'s bounds (~1.3 MiB each) do not take a 32 MiB thread past it', { timeout: 120_000 }, async (t) => {
  const refused: string[] = [];
  const checks = new FilterChecks(limits({ onThreadCost: 0, threadHeapMb: 32, threadCheckMs: 60_000, quickCheckMs: 60_000, slowCheckMs: 60_000 }), { refused: (ns, why) => refused.push(`${ns} ${why}`) });
  t.after(() => checks.close());
  // 10 patterns a route, 1,810 instructions (within a route's 2,048); 8 routes each of 5 namespaces
  const route = (ns: number, k: number) => new PathFilter({ acceptPaths: Array.from({ length: 10 }, (_, i) => `^/api/v1/namespaces/[a-z0-9-]{1,63}/configmaps/r${k}-${i}-[a-z]{2,9}$`), rejectPaths: [], rejectMethods: [] },
    `ns-${ns}`, `spec.routes[${k}].apiserver`);
  for (let ns = 0; ns < 5; ns++) {
    for (let k = 0; k < 8; k++) assert.ok('accepted' in await checks.check(route(ns, k), 'GET', `/api/v1/namespaces/x/configmaps/r${k}-1-ab`), `ns-${ns} route ${k}`);
  }
  assert.deepEqual(refused, []);
});

test('a filter thread\'s young generation is a quarter of its heap: V8\'s default (up to 192 MiB) stopped a 24 MiB thread keeping 30% each time, three rounds of 40 routes at the schema\'s bounds', { timeout: 120_000 }, async (t) => {
  const refused: string[] = [];
  const checks = new FilterChecks(limits({ onThreadCost: 0, threadHeapMb: 24, threadCheckMs: 60_000, quickCheckMs: 60_000, slowCheckMs: 60_000 }), { refused: (ns, why) => refused.push(`${ns} ${why}`) });
  t.after(() => checks.close());
  const young: number[] = [];
  const post = Worker.prototype.postMessage;
  t.mock.method(Worker.prototype, 'postMessage', function (this: Worker, m: unknown) { young.push(this.resourceLimits?.maxYoungGenerationSizeMb ?? -1); return post.call(this, m); });
  const route = (ns: number, k: number) => new PathFilter({ acceptPaths: Array.from({ length: 10 }, (_, i) => `^/api/v1/namespaces/[a-z0-9-]{1,63}/configmaps/r${k}-${i}-[a-z]{2,9}$`), rejectPaths: [], rejectMethods: [] },
    `ns-${ns}`, `spec.routes[${k}].apiserver`);
  for (let round = 0; round < 3; round++) {
    for (let ns = 0; ns < 5; ns++) {
      for (let k = 0; k < 8; k++) assert.ok('accepted' in await checks.check(route(ns, k), 'GET', `/api/v1/namespaces/x/configmaps/r${k}-1-ab`), `round ${round} ns-${ns} route ${k}`);
    }
  }
  assert.deepEqual(refused, []);
  assert.ok(young.length >= 120 && young.every((mb) => mb === 6), String([...new Set(young)]));
});

test('the filter thread keeps filters by a digest of their patterns, and counts their text: 600 filters of 96 long patterns (~135,000 characters of key each) do not take it past its heap', { timeout: 120_000 }, async (t) => {
  const refused: string[] = [];
  const checks = new FilterChecks(limits({ onThreadCost: 0, threadCheckMs: 60_000, quickCheckMs: 60_000, slowCheckMs: 60_000 }), { refused: (ns, why) => refused.push(`${ns} ${why}`) });
  t.after(() => checks.close());
  // each pattern 2 instructions (a class of every character), its text 230 control characters (6 in JSON each)
  const filler = '\u0001'.repeat(230);
  const long = (n: number) => new PathFilter({ acceptPaths: Array.from({ length: 96 }, (_, i) => `[^\\x00-\\x{10FFFF}${filler}]|^/${n}-${i}`), rejectPaths: [], rejectMethods: [] }, 'team-a', `spec.routes[${n % 16}].apiserver`);
  assert.ok(long(0).key.length > 130_000);
  const sent: number[] = [];
  const post = Worker.prototype.postMessage;
  t.mock.method(Worker.prototype, 'postMessage', function (this: Worker, m: { key?: string }) { if (m?.key !== undefined) sent.push(m.key.length); return post.call(this, m); });
  for (let n = 0; n < 600; n++) assert.ok('accepted' in await checks.check(long(n), 'GET', `/${n}-0`), `filter ${n}`);
  assert.deepEqual(refused, []);
  assert.ok(sent.length >= 600 && sent.every((n) => n === 45), 'each sent by its digest (256 long keys remembered were 66 MiB of the thread\'s heap)');
});

// 16 hostile patterns: on a 4 KiB path, a match of ~150 ms or more (a 14 KiB one ~600 ms)
const hostile16 = (owner: string) => new PathFilter({ acceptPaths: ['^.*'], rejectPaths: Array.from({ length: 16 }, (_, i) => `[ab/]*a[ab/]{${40 + i}}[0-9]`), rejectMethods: [] },
  owner, 'spec.routes[0].apiserver');
const turn = () => new Promise((r) => setImmediate(r));
async function spareLoaded(checks: FilterChecks): Promise<void> {
  const s = () => (checks as unknown as { spare?: { online: boolean } }).spare;
  for (let i = 0; i < 2000 && !s()?.online; i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(s()?.online, 'the spare thread loaded');
}

test('a check that runs long on the filter thread gives way to another namespace\'s: a loaded spare takes the lane, the long one runs again on the slow lane; twice, and its namespace is slow', async (t) => {
  const slowed: string[] = [];
  // (slowCheckMs long: only giving way twice makes team-a slow here; threadCheckMs long: nothing is refused)
  const checks = new FilterChecks(limits({ onThreadCost: 0, threadCheckMs: 60_000, slowCheckMs: 60_000 }), { slow: (ns) => slowed.push(ns) });
  t.after(() => checks.close());
  const a = hostile16('team-a');
  const b = new PathFilter(kubectlProxy, 'team-b');
  assert.ok('accepted' in await checks.check(b, 'GET', '/x'));
  await spareLoaded(checks);
  for (const round of [1, 2]) {
    const cold = checks.coldSends;
    const order: string[] = [];
    const path = longPath();
    const pa = Promise.resolve(checks.check(a, 'GET', path)).then((v) => { order.push('a'); return v; });
    await turn(); // team-a's check is on the thread
    const pb = Promise.resolve(checks.check(b, 'GET', '/api/v1/pods')).then(() => order.push('b'));
    const answer = await pa;
    await pb;
    assert.deepEqual(order, ['b', 'a'], `round ${round}`);
    assert.deepEqual(answer, a.check('GET', path), 'team-a\'s check answered from the slow lane, not refused');
    a.forget();
    // team-b's check went to the spare, loaded before; team-a's waited for the slow lane's thread (round 1) 
    assert.equal(checks.coldSends, cold + (round === 1 ? 1 : 0), `round ${round}: checks sent to a thread still loading`);
    assert.deepEqual(slowed, round === 1 ? [] : ['team-a'], `round ${round}`);
    if (round === 1) await spareLoaded(checks);
  }
  assert.ok(checks.isSlow('team-a') && !checks.isSlow('team-b'));
});

test('a namespace\'s checks on the slow lane take at most its share of that thread: past it they wait for its time again, and another slow namespace\'s go first', { timeout: 60_000 }, async (t) => {
  let clock = 0; // (stands still unless moved: a namespace's share refills only then)
  const checks = new FilterChecks(limits({ onThreadCost: 0, threadCheckMs: 60_000, quickCheckMs: 60_000, slowCheckMs: 20, slowMsPerSecond: 500, slowBurstMs: 50 }), {}, () => clock);
  t.after(() => checks.close());
  const a = hostile16('team-a');
  await checks.check(a, 'GET', longPath());
  await checks.check(hostile16('team-b'), 'GET', longPath());
  assert.ok(checks.isSlow('team-a') && checks.isSlow('team-b'));
  const order: string[] = [];
  const as = [1, 2, 3].map((i) => Promise.resolve(checks.check(a, 'GET', longPath())).then(() => order.push(`a${i}`)));
  await as[0]; // (~150 ms of the slow lane's thread: team-a's 50 spent)
  await checks.check(new PathFilter(kubectlProxy, 'team-b'), 'GET', '/api/v1/pods');
  order.push('b');
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(order, ['a1', 'b'], 'team-a\'s others wait while its share is spent');
  while (order.length < 4) {
    clock += 1_000;
    await new Promise((r) => setTimeout(r, 50));
  }
  await Promise.all(as);
  assert.deepEqual(order, ['a1', 'b', 'a2', 'a3']);
});

test('the slow lane wakes at the first namespace\'s refill: another\'s longer debt, waited for first, does not hold its turn', { timeout: 60_000 }, async (t) => {
  let clock = 0;
  const checks = new FilterChecks(limits({ onThreadCost: 0, threadCheckMs: 60_000, quickCheckMs: 60_000, slowCheckMs: 1, slowMsPerSecond: 100, slowBurstMs: 1 }), {}, () => clock);
  t.after(() => checks.close());
  const seen = checks as unknown as { slowWakeAt: number; slowTime: Map<string, { ms: number }> };
  const a = hostile16('team-a');
  const b = hostile('team-b'); // (a quarter of team-a's patterns: a shorter debt)
  await checks.check(a, 'GET', longPath());
  await checks.check(b, 'GET', longPath());
  assert.ok(checks.isSlow('team-a') && checks.isSlow('team-b'));
  const as = [1, 2].map(() => Promise.resolve(checks.check(a, 'GET', longPath())));
  await as[0];
  const refillOf = (ns: string) => (-seen.slowTime.get(ns)!.ms / 100) * 1000;
  assert.equal(seen.slowWakeAt, refillOf('team-a'), 'woken at team-a\'s refill, the only one waiting');
  const bs = [1, 2].map(() => Promise.resolve(checks.check(b, 'GET', longPath())));
  await bs[0];
  assert.ok(refillOf('team-b') < refillOf('team-a'), `team-b's debt the shorter (${refillOf('team-b')} ms, ${refillOf('team-a')} ms)`);
  assert.equal(seen.slowWakeAt, refillOf('team-b'), 'brought forward to team-b\'s');
  clock += 60_000;
  await Promise.all([...as, ...bs]);
});

test('a check that has waited maxWaitMs on the slow lane for its namespace\'s time is answered 429 (Retry-After: 1); another slow namespace\'s is answered', { timeout: 60_000 }, async (t) => {
  let clock = 0;
  const refused: string[] = [];
  const checks = new FilterChecks(limits({ onThreadCost: 0, threadCheckMs: 60_000, quickCheckMs: 60_000, slowCheckMs: 20, slowMsPerSecond: 1, slowBurstMs: 50, maxWaitMs: 1_000 }),
    { refused: (ns, why) => refused.push(`${ns} ${why}`) }, () => clock);
  t.after(() => checks.close());
  const a = hostile16('team-a');
  await checks.check(a, 'GET', longPath());
  await checks.check(hostile16('team-b'), 'GET', longPath());
  const a1 = Promise.resolve(checks.check(a, 'GET', longPath()));
  const a2 = Promise.resolve(checks.check(a, 'GET', longPath())).then(() => null, (err: unknown) => err);
  await a1; // (team-a's share spent: 150 s of debt at 1 ms a second)
  clock += 1_001;
  assert.ok('accepted' in await checks.check(new PathFilter(kubectlProxy, 'team-b'), 'GET', '/api/v1/pods'));
  const err = await a2;
  assert.ok(err instanceof FiltersBusyError && err.status === 429 && err.retryAfterSeconds === 1 && /waited 1001 ms/.test(err.message), String(err));
  assert.deepEqual(refused, ['team-a busy']);
});

/** FilterChecks on a clock of the test's (maxWaitMs 1 s), and team-a's second check waiting on the
 * slow lane, sent at 0: its first spent its share there (its refill ~150 s away). */
async function teamAWaiting(t: { after(f: () => void): void }) {
  const clock = { now: 0 };
  const checks = new FilterChecks(limits({ onThreadCost: 0, threadCheckMs: 60_000, quickCheckMs: 60_000, slowCheckMs: 20, slowMsPerSecond: 1, slowBurstMs: 50, maxWaitMs: 1_000 }), {}, () => clock.now);
  t.after(() => checks.close());
  const a = hostile16('team-a');
  await checks.check(a, 'GET', longPath());
  const a1 = Promise.resolve(checks.check(a, 'GET', longPath()));
  const a2 = Promise.resolve(checks.check(a, 'GET', longPath())).then(() => null, (err: unknown) => err);
  await a1;
  return { clock, checks, a2 };
}

test('the slow lane wakes when a check has waited maxWaitMs, with nothing else sent: answered 429 then, not at its namespace\'s refill', { timeout: 60_000 }, async (t) => {
  const { clock, a2 } = await teamAWaiting(t);
  clock.now += 1_001;
  assert.ok(await a2 instanceof FiltersBusyError);
});

test('a check waiting on the slow lane behind a newer one (a check that gave way goes first) is answered 429 at its own limit', { timeout: 10_000 }, async (t) => {
  const { clock, checks, a2 } = await teamAWaiting(t);
  clock.now = 500;
  // team-a's check sent at 500 gives way on the quick lane: first on the slow lane, ahead of a2
  const f = new PathFilter(kubectlProxy, 'team-a');
  const gave = { job: { id: 1, owner: 'team-a', field: f.field, key: f.digest, spec: f.spec, method: 'GET', path: '/x' }, cost: 1, began: true, over: true, since: 500,
    done: () => {}, fail: () => {}, client: undefined };
  const inner = checks as unknown as { quick: { running: unknown }; giveWay(w: unknown): void };
  inner.quick.running = gave;
  inner.giveWay(gave);
  clock.now = 1_001; // (a2's limit passed, not the newer one's: woken for a2's)
  const err = await a2;
  assert.ok(err instanceof FiltersBusyError && /waited 1001 ms/.test(err.message), String(err));
});

test('a namespace whose match took over slowCheckMs has its checks on the slow lane: another namespace\'s are answered before them, and no thread is stopped', async (t) => {
  const slowed: string[] = [];
  // (quickCheckMs long: no check gives way; only the lanes keep team-b from waiting)
  const checks = new FilterChecks(limits({ onThreadCost: 0, threadCheckMs: 120_000, quickCheckMs: 60_000, slowCheckMs: 20 }), { slow: (ns) => slowed.push(ns) });
  t.after(() => checks.close());
  const a = hostile16('team-a');
  const b = new PathFilter(kubectlProxy, 'team-b');
  await checks.check(a, 'GET', longPath());
  assert.deepEqual(slowed, ['team-a']);
  assert.ok(checks.isSlow('team-a') && !checks.isSlow('team-b'));
  await spareLoaded(checks);
  const started = checks.threadsStarted;
  const order: string[] = [];
  const pa = Promise.resolve(checks.check(a, 'GET', longPath())).then(() => order.push('a'));
  await turn();
  const pb = Promise.resolve(checks.check(b, 'GET', '/api/v1/pods')).then(() => order.push('b'));
  await Promise.all([pa, pb]);
  assert.deepEqual(order, ['b', 'a']);
  assert.equal(checks.threadsStarted, started + 1, 'the slow lane\'s own thread; none stopped or replaced');
});

test('a namespace whose check ran over threadCheckMs is refused (503, Retry-After) for a back-off, its waiting checks too, doubled while it keeps timing out; another namespace is not', async (t) => {
  let skew = 0;
  const refused: string[] = [];
  // (one check of a namespace may wait: a count of waiting checks left behind by a back-off would refuse the next)
  // (100 ms: a fresh thread compiling the filter, ~15 ms, may take several times that under load,
  // and a check still compiling at threadCheckMs is not backed off; a 12,000-character path's match takes ~150-350 ms)
  const checks = new FilterChecks(limits({ onThreadCost: 0, threadCheckMs: 100, quickCheckMs: 10_000, waitingPerNamespace: 1 }), { refused: (ns, r) => refused.push(`${ns} ${r}`) }, () => performance.now() + skew);
  t.after(() => checks.close());
  const a = hostile16('team-a');
  const longerPath = () => longPath() + longPath().slice(1) + longPath().slice(1);
  const b = new PathFilter(kubectlProxy, 'team-b');
  assert.ok('accepted' in await checks.check(b, 'GET', '/x'));
  const backedOff = (seconds: number) => (err: unknown) => err instanceof FilterUnavailableError && err.status === 503 && err.retryAfterSeconds === seconds && /refused for/.test(err.message);
  const tookOver = (err: unknown) => err instanceof FilterUnavailableError && /took over 100 ms/.test((err as Error).message);
  const first = Promise.resolve(checks.check(a, 'GET', longerPath()));
  const waiting = Promise.resolve(checks.check(a, 'GET', longerPath()));
  await assert.rejects(first, tookOver);
  await assert.rejects(waiting, backedOff(1));
  assert.throws(() => checks.check(a, 'GET', longerPath()), backedOff(1));
  assert.ok('accepted' in await checks.check(b, 'GET', '/api/v1/pods'), 'team-b is not refused');
  assert.deepEqual(refused, ['team-a failed', 'team-a backoff', 'team-a backoff']);
  // after its back-off team-a is checked again; timing out again at once doubles it
  skew += 1_001;
  await assert.rejects(Promise.resolve(checks.check(a, 'GET', longerPath())), tookOver);
  assert.throws(() => checks.check(a, 'GET', longerPath()), backedOff(2));
  // quiet for a back-off after it: back to 1 s
  skew += 4_001;
  await assert.rejects(Promise.resolve(checks.check(a, 'GET', longerPath())), tookOver);
  assert.throws(() => checks.check(a, 'GET', longerPath()), backedOff(1));
  // its back-off over, a check of its and one waiting behind it are taken (nothing left counted)
  skew += 1_001;
  const quickA = new PathFilter(kubectlProxy, 'team-a');
  const both = [checks.check(quickA, 'GET', '/api/v1/pods'), checks.check(quickA, 'GET', '/api/v1/pods')];
  for (const r of await Promise.all(both)) assert.ok('accepted' in r);
});

test('a check whose filter size × path length could not take threadCheckMs (its thread waited for a CPU) is answered 503 when it does, without backing off or slowing its namespace', async (t) => {
  const refused: string[] = [];
  const slowed: string[] = [];
  // (usPerCost tiny: the hostile patterns' real ~150 ms stands for a thread that waited for a CPU)
  const checks = new FilterChecks(limits({ onThreadCost: 0, threadCheckMs: 30, quickCheckMs: 10_000, usPerCost: 1e-9 }),
    { refused: (ns, r) => refused.push(`${ns} ${r}`), slow: (ns) => slowed.push(ns) });
  t.after(() => checks.close());
  const a = hostile16('team-a');
  assert.ok('accepted' in await checks.check(new PathFilter(kubectlProxy, 'team-b'), 'GET', '/x'));
  for (let i = 0; i < 2; i++) {
    await assert.rejects(Promise.resolve(checks.check(a, 'GET', longPath())),
      (err: unknown) => err instanceof FilterUnavailableError && err.status === 503 && err.retryAfterSeconds === undefined && /took over 30 ms/.test((err as Error).message));
  }
  assert.deepEqual(refused, ['team-a failed', 'team-a failed'], 'sent again, not refused');
  assert.deepEqual(slowed, []);
  assert.ok(!checks.isSlow('team-a'));
});

test('compiling a filter on a fresh thread is not held against its check: a large filter\'s quick match does not give way to another namespace', async (t) => {
  // (quickCheckMs 20: compiling these 40 patterns takes 50-100 ms; matching a short path under 3 ms)
  const checks = new FilterChecks(limits({ onThreadCost: 0, threadCheckMs: 60_000, quickCheckMs: 20, slowCheckMs: 60_000 }));
  t.after(() => checks.close());
  const b = new PathFilter(kubectlProxy, 'team-b');
  assert.ok('accepted' in await checks.check(b, 'GET', '/x'));
  await spareLoaded(checks);
  const big = new PathFilter({ acceptPaths: Array.from({ length: 40 }, (_, i) => `^/api/v1/namespaces/[a-z0-9-]{1,63}/configmaps/name-${i}-[a-z]{2,9}$`), rejectPaths: [], rejectMethods: [] },
    'team-c', 'spec.routes[0].apiserver');
  for (let round = 0; round < 3; round++) {
    const order: string[] = [];
    const path = `/api/v1/namespaces/x/configmaps/name-${round}-ab`;
    const pc = Promise.resolve(checks.check(big, 'GET', path)).then(() => order.push('c'));
    await turn();
    const pb = Promise.resolve(checks.check(b, 'GET', '/api/v1/pods')).then(() => order.push('b'));
    await Promise.all([pc, pb]);
    assert.deepEqual(order, ['c', 'b'], `round ${round}: team-c's check ran to its end on the quick lane`);
    await spareLoaded(checks);
  }
  assert.ok(!checks.isSlow('team-c'));
});

test('a check that gives way moves alone (its namespace\'s other checks stay on the quick lane), ahead of slow namespaces there; the thread it ran on is stopped', async (t) => {
  const checks = new FilterChecks(limits({ onThreadCost: 0, threadCheckMs: 60_000, slowCheckMs: 60_000 }));
  t.after(() => checks.close());
  const a = hostile16('team-a');
  const aQuick = new PathFilter(kubectlProxy, 'team-a');
  const b = new PathFilter(kubectlProxy, 'team-b');
  assert.ok('accepted' in await checks.check(b, 'GET', '/x'));
  await spareLoaded(checks);
  type W = { job: { owner: string; path: string } };
  type L = { thread?: { lane?: unknown }; running?: W; waiting: Map<string, W[]> };
  const inner = checks as unknown as { quick: L; slow: L; giveWay(w: W): void };
  const quick = inner.quick;
  // each give-way, and the lanes as it leaves them
  const name = (w: W | undefined) => w && (w.job.owner === 'team-b' ? 'b' : w.job.path === '/api/v1/pods' ? 'a quick' : 'a long');
  const waiting = (l: L) => [...l.waiting.values()].flat().map(name);
  const gave: { gave: string | undefined; quick: string | undefined; quickWaiting: unknown[]; slow: string | undefined; slowWaiting: unknown[] }[] = [];
  const giveWay = inner.giveWay.bind(checks);
  inner.giveWay = (w) => {
    const was = quick.running;
    giveWay(w);
    if (was === w) gave.push({ gave: name(w), quick: name(quick.running), quickWaiting: waiting(quick), slow: name(inner.slow.running), slowWaiting: waiting(inner.slow) });
  };
  const order: string[] = [];
  const pa = Promise.resolve(checks.check(a, 'GET', longPath())).then(() => order.push('a long'));
  await turn();
  const ran = quick.thread!;
  const pa2 = Promise.resolve(checks.check(aQuick, 'GET', '/api/v1/pods')).then(() => order.push('a quick'));
  const pb = Promise.resolve(checks.check(b, 'GET', '/api/v1/pods')).then(() => order.push('b'));
  await Promise.all([pa, pa2, pb]);
  // as it gave way: team-a's quick check had the quick lane (its turn first there), team-b's waited
  // there, and the slow lane had the long check alone
  assert.deepEqual(gave[0], { gave: 'a long', quick: 'a quick', quickWaiting: ['b'], slow: 'a long', slowWaiting: [] });
  if (gave.length === 1) assert.deepEqual(order, ['a quick', 'b', 'a long']);
  else {
    // (the quick check's thread waited for a CPU past quickCheckMs, team-b waiting: it gave way too,
    // not held against team-a, and waited on the slow lane for the long one: a loaded machine)
    assert.deepEqual(gave.map((g) => g.gave), ['a long', 'a quick']);
    assert.ok(order.indexOf('a long') < order.indexOf('a quick'));
  }
  assert.ok(!checks.isSlow('team-a'), 'one give-way does not make team-a slow');
  assert.equal(ran.lane, undefined, 'the thread that ran the long check was stopped');
  assert.notEqual(quick.thread, ran);
});

test('a check that gives way is not taken as matching on the slow lane until that thread says so (compiling there again is not its match: a timeout then is not backed off)', async (t) => {
  const checks = new FilterChecks(limits({ onThreadCost: 0, threadCheckMs: 60_000 }));
  t.after(() => checks.close());
  const f = new PathFilter(kubectlProxy, 'team-a');
  const w = { job: { id: 1, owner: 'team-a', field: f.field, key: f.digest, spec: f.spec, method: 'GET', path: '/x' }, cost: 1, began: true, over: true,
    done: () => {}, fail: () => {}, client: undefined };
  const inner = checks as unknown as { quick: { running: unknown }; giveWay(w: unknown): void };
  inner.quick.running = w;
  inner.giveWay(w);
  assert.equal(w.began, false);
});

test('a check that gives way, its namespace not slow, waits on the slow lane only for the check running there, not behind a slow namespace\'s waiting ones', async (t) => {
  const checks = new FilterChecks(limits({ onThreadCost: 0, threadCheckMs: 60_000, slowCheckMs: 50 }));
  t.after(() => checks.close());
  const s = hostile16('team-s');
  const a = hostile16('team-a');
  const b = new PathFilter(kubectlProxy, 'team-b');
  await checks.check(s, 'GET', longPath()); // a match over 50 ms: team-s is slow
  assert.ok(checks.isSlow('team-s'));
  await spareLoaded(checks);
  const order: string[] = [];
  const ps = [1, 2].map((i) => Promise.resolve(checks.check(s, 'GET', longPath())).then(() => order.push(`s${i}`)));
  await turn();
  const pa = Promise.resolve(checks.check(a, 'GET', longPath())).then(() => order.push('a'));
  await turn();
  const pb = Promise.resolve(checks.check(b, 'GET', '/api/v1/pods')).then(() => order.push('b'));
  await Promise.all([...ps, pa, pb]);
  assert.deepEqual(order, ['b', 's1', 'a', 's2']);
});

test('a namespace that spends more than its share of the quick lane\'s thread goes to the slow lane: compiling counts when it pushes out another of its own filters, not on a fresh thread', async (t) => {
  const slowed: string[] = [];
  // (a share of 1 µs, barely refilled: any compile charged passes it, however fast the machine;
  // usPerCost tiny: matches charge next to nothing; quickCheckMs long: nothing gives way)
  const checks = new FilterChecks(limits({ onThreadCost: 0, threadCheckMs: 60_000, quickCheckMs: 60_000, slowCheckMs: 60_000, quickMsPerSecond: 0.001, quickBurstMs: 0.001, usPerCost: 1e-9 }),
    { slow: (ns) => slowed.push(ns) });
  t.after(() => checks.close());
  const b = new PathFilter(kubectlProxy, 'team-b');
  for (let i = 0; i < 3; i++) assert.ok('accepted' in await checks.check(b, 'GET', '/api/v1/pods'));
  // (10 patterns a route, within a route's 2,048 instructions: 9 routes of 40 took the thread past its heap once)
  const route = (k: number) => new PathFilter({ acceptPaths: Array.from({ length: 10 }, (_, i) => `^/api/v1/namespaces/[a-z0-9-]{1,63}/configmaps/r${k}-${i}-[a-z]{2,9}$`), rejectPaths: [], rejectMethods: [] },
    'team-c', `spec.routes[${k}].apiserver`);
  // eight routes: compiled on this thread for the first time, as on any fresh thread: not counted
  for (let k = 0; k < 8; k++) await checks.check(route(k), 'GET', `/api/v1/namespaces/x/configmaps/r${k}-1-ab`);
  assert.deepEqual(slowed, [], 'a thread\'s first compiles');
  // a ninth: its compile pushes out one of the team's own, and counts; its check waiting on the
  // quick lane then waits on the slow lane, after team-b's
  const order: string[] = [];
  const c8 = Promise.resolve(checks.check(route(8), 'GET', '/api/v1/namespaces/x/configmaps/r8-1-ab')).then(() => order.push('c8'));
  await turn();
  const c0 = Promise.resolve(checks.check(route(0), 'GET', '/api/v1/namespaces/x/configmaps/r0-1-ab')).then(() => order.push('c0'));
  const pb = Promise.resolve(checks.check(b, 'GET', '/api/v1/pods')).then(() => order.push('b'));
  await Promise.all([c8, c0, pb]);
  assert.deepEqual(slowed, ['team-c']);
  assert.deepEqual(order, ['c8', 'b', 'c0']);
  assert.ok(checks.isSlow('team-c') && !checks.isSlow('team-b'));
});

test('a check whose size could not make it slow (its thread waited for a CPU) gives way at most once a second for its namespace, and costs it nothing', async (t) => {
  let skew = 0;
  // (usPerCost tiny: no give-way is blamed; a share of 1 ms: any charge would make team-a slow)
  const checks = new FilterChecks(limits({ onThreadCost: 0, threadCheckMs: 60_000, slowCheckMs: 60_000, usPerCost: 1e-9, quickMsPerSecond: 0.001, quickBurstMs: 1 }), {},
    () => performance.now() + skew);
  t.after(() => checks.close());
  const a = hostile16('team-a');
  const b = new PathFilter(kubectlProxy, 'team-b');
  assert.ok('accepted' in await checks.check(b, 'GET', '/x'));
  for (const [round, gives] of [[1, true], [2, false], [3, true]] as const) {
    if (round === 3) skew += 1_001;
    await spareLoaded(checks);
    const order: string[] = [];
    const pa = Promise.resolve(checks.check(a, 'GET', longPath())).then(() => order.push('a'));
    await turn();
    const started = checks.threadsStarted;
    const pb = Promise.resolve(checks.check(b, 'GET', '/api/v1/pods')).then(() => order.push('b'));
    await Promise.all([pa, pb]);
    assert.deepEqual(order, gives ? ['b', 'a'] : ['a', 'b'], `round ${round}`);
    assert.equal(checks.threadsStarted > started, gives, `round ${round}: a thread replaced`);
    assert.equal(checks.isSlow('team-a'), false, `round ${round}`);
  }
});

test('a check still compiling its filter at threadCheckMs is answered 503, but its namespace is not backed off or slowed (compiling is not its match)', async (t) => {
  const refused: string[] = [];
  const checks = new FilterChecks(limits({ onThreadCost: 0, threadCheckMs: 30, quickCheckMs: 10_000 }), { refused: (ns, r) => refused.push(`${ns} ${r}`) });
  t.after(() => checks.close());
  assert.ok('accepted' in await checks.check(new PathFilter(kubectlProxy, 'team-b'), 'GET', '/x'));
  // 120 patterns: compiling takes far over 30 ms; a path long enough that the match could take 30 ms
  const huge = new PathFilter({ acceptPaths: Array.from({ length: 120 }, (_, i) => `^/api/v1/namespaces/[a-z0-9-]{1,63}/configmaps/h${i}-[a-z]{2,9}$`), rejectPaths: [], rejectMethods: [] },
    'team-c', 'spec.routes[0].apiserver');
  await assert.rejects(Promise.resolve(checks.check(huge, 'GET', '/' + 'x'.repeat(200))), (err: unknown) => err instanceof FilterUnavailableError && err.retryAfterSeconds === undefined);
  assert.deepEqual(refused, ['team-c failed']);
  assert.ok(!checks.isSlow('team-c'));
  assert.doesNotThrow(() => { void Promise.resolve(checks.check(huge, 'GET', '/x')).catch(() => {}); }, 'not backed off');
});

test('compiling that is a namespace\'s churn (in the thread\'s full cache) is charged to its share: namespaces filling the cache are slowed, not one with one filter', async (t) => {
  const slowed: string[] = [];
  // (a share of 0.5 ms, barely refilled: any compile charged passes it; usPerCost tiny: matches
  // charge nothing; what kept filters hold not bounded: their count is)
  const checks = new FilterChecks(limits({ onThreadCost: 0, threadCheckMs: 60_000, quickCheckMs: 60_000, slowCheckMs: 60_000, quickMsPerSecond: 0.001, quickBurstMs: 0.5, usPerCost: 1e-9, threadKeptMb: 1_000 }),
    { slow: (ns) => slowed.push(ns) });
  t.after(() => checks.close());
  const filter = (ns: string, k: number) => new PathFilter({ acceptPaths: Array.from({ length: 10 }, (_, i) => `^/api/v1/namespaces/[a-z0-9-]{1,63}/${ns}-${k}-${i}/[a-z]{2,9}$`), rejectPaths: [], rejectMethods: [] },
    ns, `spec.routes[${k}].apiserver`);
  const victim = filter('team-v', 0);
  await checks.check(victim, 'GET', '/x');
  // four namespaces of eight filters each: 33 filters, the thread keeps 32: the 33rd compile, in a
  // full cache, is a3's churn; it pushes out a0's oldest (of the largest shares, the least
  // recently used; the victim's is the least recently used, and the smallest share)
  for (const ns of ['a0', 'a1', 'a2', 'a3']) for (let k = 0; k < 8; k++) await checks.check(filter(ns, k), 'GET', '/x');
  assert.deepEqual(slowed, ['a3']);
  await checks.check(victim, 'GET', '/x'); // still compiled
  await checks.check(filter('a1', 8), 'GET', '/x'); // a1's ninth: its own in the way
  assert.deepEqual(slowed, ['a3', 'a1']);
  assert.ok(!checks.isSlow('team-v'));
});
