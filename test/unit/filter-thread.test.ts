import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { boundKeptBytes, check, dropWhenHeapFull, estimate, idleness, keptFilters } from '../../src/dataplane/filter-thread.js';
import { compileRegex } from '../../src/api/regex.js';
import { PathFilter, type FilterSpec } from '../../src/dataplane/path.js';

// a pattern whose DFA builds ~10 states of ~3 KiB on a path of a and b
const chars = Array.from({ length: 180 }, (_, k) => String.fromCodePoint(0x400 + 2 * k)).join('');
const spec = (n: number): FilterSpec => ({ acceptPaths: [`q${n}[${chars}]|[ab]*a[ab]{4}/`], rejectPaths: [], rejectMethods: [] });
const keyOf = (s: FilterSpec) => JSON.stringify([s.acceptPaths, s.rejectPaths, s.rejectMethods]); // (as PathFilter.key)
const job = (owner: string, n: number, id = 0) => ({ id, owner, field: 'spec.routes[0].apiserver', key: keyOf(spec(n)), spec: spec(n), method: 'GET', path: '/abbabaabbbabaabab/' });
const bad: FilterSpec = { acceptPaths: ['(?<=a)'], rejectPaths: [], rejectMethods: [] };
// (this process's heap is not a thread's 64 MiB: its garbage is not to drop filters here)
boundKeptBytes(24 << 20, 2 ** 32);
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

test('the filter thread keeps a team\'s filters apart: a team changing its patterns evicts only its own, and no DFA state is kept', () => {
  assert.ok('accepted' in check(job('team-b', 0)));
  assert.ok('accepted' in check(job('team-b', 1)));
  // team-a sends 40 filters in turn
  for (let n = 0; n < 40; n++) assert.ok('accepted' in check(job('team-a', n)));
  assert.deepEqual(keptFilters(), { 'team-b': 2, 'team-a': 8 });
  // what a check built is dropped after it (the thread sees only costly filters)
  assert.equal(compileRegex(spec(39).acceptPaths[0]!, 'team-a').states, 0);
  assert.equal(compileRegex(spec(1).acceptPaths[0]!, 'team-b').keptBytes, 0);
  // a filter that does not compile (the thread is sent what translate admitted; defence only) keeps nothing
  for (let i = 0; i < 5; i++) assert.throws(() => check({ ...job(`bad-${i}`, 0), key: keyOf(bad), spec: bad }));
  assert.deepEqual(keptFilters(), { 'team-b': 2, 'team-a': 8 });
  // 40 namespaces with one filter each: 32 kept in all, the least recently used namespaces' go first
  for (let i = 0; i < 40; i++) check(job(`ns-${i}`, 0));
  const kept = keptFilters();
  assert.equal(Object.values(kept).reduce((a, b) => a + b, 0), 32);
  assert.equal(kept['team-b'], undefined, 'team-b was used least recently');
  assert.equal(kept['ns-7'], undefined);
  assert.equal(kept['ns-8'], 1);
  assert.equal(kept['ns-39'], 1);
});

test('the filter thread keeps filters within its bound on what they hold: a route\'s at the schema\'s bounds (~1.3 MiB) are fewer than 32, the least recently used of shares alike going first, and a share counts bytes', () => {
  dropWhenHeapFull(Infinity, 100); // (other tests' filters gone: one place each, they would stay)
  boundKeptBytes(8 << 20);
  try {
    // 10 patterns a route, 1,810 instructions (within a route's 2,048): each holds ~1.27 MiB compiled
    const route = (k: number): FilterSpec => ({ acceptPaths: Array.from({ length: 10 }, (_, i) => `^/api/v1/namespaces/[a-z0-9-]{1,63}/configmaps/r${k}-${i}-[a-z]{2,9}$`), rejectPaths: [], rejectMethods: [] });
    const big = (owner: string, k: number) => ({ id: 0, owner, field: `spec.routes[${k}].apiserver`, key: keyOf(route(k)), spec: route(k), method: 'GET', path: `/api/v1/namespaces/x/configmaps/r${k}-1-ab` });
    for (let n = 0; n < 3; n++) check(job('few', n)); // (3 of ~0.1 MiB: held first)
    for (let k = 0; k < 12; k++) assert.ok('accepted' in check(big(`team-${k}`, k)));
    const kept = keptFilters();
    const n = Object.entries(kept).filter(([o]) => o.startsWith('team-')).length;
    assert.ok(n >= 2 && n <= 6, `8 MiB holds 2 to 6 of them: ${JSON.stringify(kept)}`);
    assert.equal(kept['few'], 3, 'a share counts bytes as well as filters: one large filter is the larger share');
    assert.equal(kept['team-11'], 1, 'the newest kept');
    assert.equal(kept['team-0'], undefined, 'the least recently used gone');
    // a filter's patterns and their text count, whatever its size: 96 patterns of 2 instructions
    // and 230 control characters each (~135,000 characters of key, ~1.7 MiB estimated)
    const filler = '\u0001'.repeat(230);
    const long = (k: number): FilterSpec => ({ acceptPaths: Array.from({ length: 96 }, (_, i) => `[^\\x00-\\x{10FFFF}${filler}]|^/${k}-${i}`), rejectPaths: [], rejectMethods: [] });
    dropWhenHeapFull(Infinity, 100); // (the big ones, which would stay: they hold less each)
    for (let k = 0; k < 12; k++) check({ id: 0, owner: `long-${k}`, field: 'f', key: `long-${k}`, spec: long(k), method: 'GET', path: `/${k}-0` });
    const longs = Object.entries(keptFilters()).filter(([o]) => o.startsWith('long-')).length;
    assert.ok(longs >= 2 && longs <= 5, `8 MiB holds 2 to 5 of them: ${longs}`);
    for (let k = 0; k < 12; k++) assert.ok('accepted' in check(big(`team-${k}`, k)));
    // pushed out for its share (each team's one filter, alike: the least recently used goes),
    // team-0's compile again is its own churn
    const took: { ms: number; churnMs?: number } = { ms: 0 };
    check(big('team-0', 0), took);
    assert.ok(took.churnMs! > 0, 'its own churn');
  } finally {
    boundKeptBytes(24 << 20);
  }
});

test('the filter thread drops filters (the largest share\'s first) when its old generation is past 70% of its bound (should their estimates fall short), as much as it is past, and not before', () => {
  dropWhenHeapFull(Infinity, 100); // (other tests' filters gone)
  check(job('team-h', 0));
  check(job('team-big', 1));
  check(job('team-big', 2));
  assert.equal(dropWhenHeapFull(70, 100), false);
  assert.deepEqual(keptFilters(), { 'team-h': 1, 'team-big': 2 });
  assert.equal(dropWhenHeapFull(71, 100), true);
  assert.deepEqual(keptFilters(), { 'team-h': 1, 'team-big': 1 }, 'the largest share\'s oldest, as much as it is past by their estimates');
  assert.equal(dropWhenHeapFull(0.7 * (1 << 20) + (100 << 10), 1 << 20), true); // (100 KiB past: more than one's estimate, ~64 KiB)
  assert.deepEqual(keptFilters(), {});
  // their compiling again is no one's churn
  const took: { ms: number; churnMs?: number } = { ms: 0 };
  check(job('team-h', 0), took);
  assert.equal(took.churnMs, 0);
  dropWhenHeapFull(Infinity, 100);
  // and its count of them starts again from nothing: 32 more are kept
  for (let i = 0; i < 32; i++) check(job(`again-${i}`, 0));
  assert.equal(Object.values(keptFilters()).reduce((a, b) => a + b, 0), 32);
  dropWhenHeapFull(Infinity, 100);
});

test('the filter thread counts what its old generation held after the last major GC, not the garbage since: 32 MiB of it drops nothing', () => {
  check(job('team-g', 0));
  gc();
  const live = oldGeneration();
  let junk: number[] | undefined = new Array(4 << 20).fill(1.5); // (32 MiB in the large-object space)
  junk = undefined;
  const bound = (live + (16 << 20)) / 0.7; // (live well under 70% of it; live and the garbage over)
  assert.ok(oldGeneration() > 0.7 * bound && junk === undefined, 'the garbage is there');
  assert.equal(dropWhenHeapFull(undefined, bound), false);
  assert.deepEqual(keptFilters(), { 'team-g': 1 });
  // held, and a major GC after it: counted
  const held = new Array(4 << 20).fill(2.5);
  gc();
  assert.equal(dropWhenHeapFull(undefined, bound), true);
  assert.deepEqual(keptFilters(), {});
  assert.equal(dropWhenHeapFull(undefined, bound), false, 'once for each major GC');
  assert.equal(held.length, 4 << 20);
});

function oldGeneration(): number {
  let n = 0;
  for (const s of getHeapSpaceStatistics()) if (!s.space_name.startsWith('new_') && s.space_name !== 'read_only_space') n += s.space_used_size;
  return n;
}

// 10 patterns a route, 1,810 instructions: ~25 ms to compile, ~1.3 MiB
const route = (k: number): FilterSpec => ({ acceptPaths: Array.from({ length: 10 }, (_, i) => `^/api/v1/namespaces/[a-z0-9-]{1,63}/configmaps/r${k}-${i}-[a-z]{2,9}$`), rejectPaths: [], rejectMethods: [] });
const big = (owner: string, k: number) => ({ id: 0, owner, field: `spec.routes[${k}].apiserver`, key: keyOf(route(k)), spec: route(k), method: 'GET', path: `/api/v1/namespaces/x/configmaps/r${k}-1-ab` });

const took = () => ({ ms: 0 } as { ms: number; churnMs?: number });
const total = () => Object.values(keptFilters()).reduce((a, b) => a + b, 0);
/** How many of `jobs`, checked in order, were charged compiling. */
const churned = (jobs: ReturnType<typeof job>[]) => jobs.filter((j) => { const t = took(); check(j, t); return t.churnMs! > 0; }).length;

test('a team filling the cache from four namespaces does not push out another team\'s one filter: the largest share\'s oldest goes, and a namespace pushing out its own pays for it', async () => {
  dropWhenHeapFull(Infinity, 100);
  check(job('fill-b', 0));
  for (const ns of ['fill-1', 'fill-2', 'fill-3', 'fill-4']) for (let n = 0; n < 8; n++) check(job(ns, n));
  assert.equal(total(), 32);
  // the four cycle through new filters, team-b checking between: its one filter stays compiled
  for (let round = 0; round < 5; round++) {
    for (const ns of ['fill-1', 'fill-2', 'fill-3', 'fill-4']) for (let n = 0; n < 8; n++) check(job(ns, 100 * round + 100 + n));
    const b = took();
    check(job('fill-b', 0), b);
    assert.equal(keptFilters()['fill-b'], 1);
    assert.equal(b.churnMs, 0, 'never compiled again');
  }
  // a filler holding 8 compiling a ninth (its own filters in the way): its own churn
  const [full] = Object.entries(keptFilters()).find(([, n]) => n === 8)!;
  const own = took();
  check(job(full, 900), own);
  assert.ok(own.churnMs! > 0, `${full}'s ninth`);
  dropWhenHeapFull(Infinity, 100);
});

test('shares are counted by the bound that is full: four namespaces filling the count with small filters do not push out another\'s 3 large ones (8 places of bytes, 3 filters)', async () => {
  dropWhenHeapFull(Infinity, 100);
  boundKeptBytes(0.3 * (64 << 20)); // (as a thread of 64 MiB: a place is 0.6 MiB)
  try {
    for (let k = 0; k < 3; k++) check(big('cnt-v', k)); // (~1.5 MiB each estimated: 8 places of bytes)
    for (const ns of ['cnt-1', 'cnt-2', 'cnt-3']) for (let n = 0; n < 8; n++) check(job(ns, n));
    for (let n = 0; n < 5; n++) check(job('cnt-4', n));
    assert.equal(total(), 32);
    for (const ns of ['cnt-1', 'cnt-2', 'cnt-3']) for (let n = 0; n < 8; n++) check(job(ns, n)); // (cnt-v the least recently used)
    check(job('cnt-4', 100)); // the count full, not the bytes: the largest count's oldest goes
    assert.equal(keptFilters()['cnt-v'], 3);
    for (let round = 0; round < 5; round++) {
      for (let k = 0; k < 3; k++) {
        const t = took();
        check(big('cnt-v', k), t);
        assert.equal(t.churnMs, 0);
      }
    }
  } finally {
    boundKeptBytes(24 << 20);
    dropWhenHeapFull(Infinity, 100);
  }
});

test('a namespace holding as much as each of a team\'s four namespaces keeps its filters: pushed out once, it compiles that one again and pushes out one of theirs, not its own', async () => {
  dropWhenHeapFull(Infinity, 100);
  boundKeptBytes(0.3 * (64 << 20));
  try {
    for (let k = 0; k < 3; k++) check(big('tie-v', k)); // (8 places of bytes)
    for (const ns of ['tie-1', 'tie-2', 'tie-3']) for (let k = 0; k < 3; k++) check(big(ns, 10 + k)); // (8 places each)
    check(job('tie-4', 0));
    for (const ns of ['tie-1', 'tie-2', 'tie-3']) for (let k = 0; k < 3; k++) check(big(ns, 10 + k)); // (tie-v the least recently used)
    check(big('tie-4', 20)); // the bytes full: tie-v's oldest goes
    assert.equal(keptFilters()['tie-v'], 2);
    const compiled = churned(Array.from({ length: 15 }, (_, i) => big('tie-v', i % 3)));
    assert.equal(compiled, 1, 'compiled again once, then kept');
    assert.equal(keptFilters()['tie-v'], 3);
  } finally {
    boundKeptBytes(24 << 20);
    dropWhenHeapFull(Infinity, 100);
  }
});

test('a filter that others\' filters went for is kept, even when its own namespace\'s are in the way after them', () => {
  dropWhenHeapFull(Infinity, 100);
  const r = estimate(new PathFilter(route(0), 'x', 'f'));
  const sm = estimate(new PathFilter(spec(0), 'x', 'f'));
  // bytes such that ow-l (a small filter, oldest, and 2 routes) and ow-x with its new route (a
  // route and a small one) hold as many places; once ow-l's small one went, ow-x would hold more,
  // and the bytes are still past: its own are in the way then
  const places = (b: number, k: number) => Math.ceil((b * 32) / k);
  let k = 3 * r + 2 * sm;
  while (k < 4 * r + sm && places(2 * r + sm, k) <= places(2 * r, k)) k += 1024;
  assert.ok(k < 4 * r + sm && 3 * r + sm + r > k, 'such bytes exist');
  boundKeptBytes(k);
  try {
    check(job('ow-l', 0));
    check(big('ow-l', 1));
    check(big('ow-l', 2));
    check(big('ow-x', 3));
    check(job('ow-x', 4));
    assert.deepEqual(keptFilters(), { 'ow-l': 3, 'ow-x': 2 });
    check(big('ow-x', 5)); // ow-l's small one goes, then ow-x's own route: its new one kept
    assert.deepEqual(keptFilters(), { 'ow-l': 2, 'ow-x': 2 });
    const again = took();
    check(big('ow-x', 5), again);
    assert.equal(again.churnMs, 0, 'kept');
  } finally {
    boundKeptBytes(24 << 20);
    dropWhenHeapFull(Infinity, 100);
  }
});

test('a namespace cycling through one filter more than it has room for compiles one or two in a cycle again, not each: a filter its own filters are in the way of is kept when compiled a second time', () => {
  dropWhenHeapFull(Infinity, 100);
  const again = churned(Array.from({ length: 54 }, (_, i) => job('cyc', i % 9)));
  assert.equal(keptFilters()['cyc'], 8);
  assert.ok(again <= 12, `compiled again ${again} times in 6 passes of 9 (each, every pass after the first: 46)`);
  // a new filter, hot: kept when compiled a second time (the oldest goes), then not compiled again
  const hot = [took(), took(), took()];
  for (const t of hot) check(job('cyc', 50), t);
  assert.deepEqual(hot.map((t) => t.churnMs! > 0), [true, true, false]);
  dropWhenHeapFull(Infinity, 100);
});

test('a compile in a full cache is its namespace\'s churn, whoever\'s filter goes (the largest share\'s, or its own when it would hold more than the largest other); compiling that filter again is its owner\'s; with shares alike the least recently used goes', async () => {
  dropWhenHeapFull(Infinity, 100);
  for (let k = 0; k < 8; k++) check(big('sh-a', k)); // (large: 8 of ~1.3 MiB, more places than their count)
  for (const ns of ['sh-c', 'sh-d', 'sh-e']) for (let n = 0; n < 8; n++) check(job(ns, n));
  boundKeptBytes(2 ** 40); // (by count from here: sh-a holds 8 places like the others)
  try {
    assert.equal(total(), 32);
    const f = took();
    check(job('sh-f', 0), f); // 1 place: pushes out the least recently used of those holding 8, sh-a's oldest
    assert.ok(f.churnMs! > 0, 'its compile, in a full cache');
    assert.equal(keptFilters()['sh-a'], 7);
    await new Promise((r) => setImmediate(r));
    gc(); // (its programs are not shared by a kept filter: compiled again from nothing)
    const a = took();
    const start = performance.now();
    check(big('sh-a', 0), a); // 8 places again, like sh-c's (used less recently): pushes out sh-c's oldest
    const compiling = performance.now() - start - a.ms;
    assert.ok(a.churnMs! > 0.5 * compiling, `its own churn: ${a.churnMs} ms of ${compiling} ms compiling`);
    // sh-a would hold 8, no more than the largest others: the least recently used of those goes
    assert.deepEqual(keptFilters(), { 'sh-c': 7, 'sh-d': 8, 'sh-e': 8, 'sh-f': 1, 'sh-a': 8 });
    // sh-f's second to seventh push out the largest shares' (sh-d's, sh-e's, sh-a's, then of the
    // 7s sh-c's, sh-d's, sh-e's, the least recently used first); its eighth would hold more than
    // the largest others (sh-a's 7): its own filters are in the way, and so on
    for (let n = 1; n < 10; n++) {
      const t = took();
      check(job('sh-f', n), t);
      assert.ok(t.churnMs! > 0, `sh-f's ${n + 1}th`);
      assert.equal(keptFilters()['sh-f'], Math.min(n + 1, 7), `sh-f's ${n + 1}th: kept until it would hold more than the others (${JSON.stringify(keptFilters())})`);
    }
    assert.deepEqual(keptFilters(), { 'sh-c': 6, 'sh-d': 6, 'sh-e': 6, 'sh-f': 7, 'sh-a': 7 });
  } finally {
    boundKeptBytes(24 << 20);
    dropWhenHeapFull(Infinity, 100);
  }
});

test('two namespaces pushing each other\'s large filter out (sibling namespaces of one team) each pay for compiling theirs again, not no one', async () => {
  dropWhenHeapFull(Infinity, 100);
  boundKeptBytes(1 << 20); // (one of them at a time)
  try {
    // 96 patterns of a class of every character each: ~20-40 ms to compile, ~0.7 MiB estimated
    const filler = '\u0001'.repeat(230);
    const large = (owner: string, k: number) => {
      const spec: FilterSpec = { acceptPaths: Array.from({ length: 96 }, (_, i) => `[^\\x00-\\x{10FFFF}${filler}]|^/${k}-${i}`), rejectPaths: [], rejectMethods: [] };
      return { id: 0, owner, field: `spec.routes[${k}].apiserver`, key: keyOf(spec), spec, method: 'GET', path: '/x' };
    };
    check(large('pp-1', 0));
    let compiling = 0;
    let charged = 0;
    for (let c = 0; c < 6; c++) {
      for (const [ns, k] of [['pp-2', 1], ['pp-1', 0]] as const) {
        await new Promise((r) => setImmediate(r));
        gc();
        const t = took();
        const start = performance.now();
        check(large(ns, k), t); // pushes out the other's
        assert.deepEqual(keptFilters(), { [ns]: 1 });
        compiling += performance.now() - start - t.ms;
        charged += t.churnMs!;
      }
    }
    assert.ok(charged > 0.5 * compiling, `charged ${charged} of ${compiling} ms compiling`);
  } finally {
    boundKeptBytes(24 << 20);
    dropWhenHeapFull(Infinity, 100);
  }
});

test('an idle namespace\'s filters go first, before a larger share\'s, and the compile they made room for is no one\'s churn; one back from idleness does not push out its own', async (t) => {
  dropWhenHeapFull(Infinity, 100);
  t.after(() => { idleness.ms = 30_000; dropWhenHeapFull(Infinity, 100); });
  idleness.ms = 50;
  check(job('id-quiet', 0));
  await new Promise((r) => setTimeout(r, 60));
  for (const ns of ['id-1', 'id-2', 'id-3']) for (let n = 0; n < 8; n++) check(job(ns, n)); // (within 50 ms)
  for (let n = 0; n < 7; n++) check(job('id-4', n));
  assert.equal(total(), 32);
  const four = took();
  check(job('id-4', 7), four); // pushes out id-quiet's, idle: not id-1's 8
  assert.equal(keptFilters()['id-quiet'], undefined);
  assert.equal(keptFilters()['id-1'], 8);
  assert.equal(four.churnMs, 0);
  // one back from idleness, the least recently used: its compile does not push out its own
  dropWhenHeapFull(Infinity, 100);
  check(job('id-back', 0));
  check(job('id-back', 1));
  for (const ns of ['id-1', 'id-2', 'id-3', 'id-4']) for (let n = 0; n < (ns === 'id-4' ? 6 : 8); n++) check(job(ns, n));
  assert.equal(total(), 32);
  await new Promise((r) => setTimeout(r, 60));
  for (const ns of ['id-1', 'id-2', 'id-3', 'id-4']) for (let n = 0; n < (ns === 'id-4' ? 6 : 8); n++) check(job(ns, n)); // (kept: the others not idle)
  check(job('id-back', 2));
  assert.equal(keptFilters()['id-back'], 3);
  // one back from idleness does not hide the other idle namespaces: theirs go first
  dropWhenHeapFull(Infinity, 100);
  for (const ns of ['hid-a', 'hid-b']) for (let n = 0; n < 2; n++) check(job(ns, n));
  await new Promise((r) => setTimeout(r, 60));
  for (const ns of ['hid-c', 'hid-d', 'hid-e']) for (let n = 0; n < 8; n++) check(job(ns, n));
  for (let n = 0; n < 4; n++) check(job('hid-f', n));
  assert.equal(total(), 32);
  check(job('hid-a', 2)); // hid-a the least recently used, back: hid-b's go (idle), not hid-c's
  assert.equal(keptFilters()['hid-c'], 8);
  assert.equal(keptFilters()['hid-b'], 1);
});

test('a filter that went for its share is its namespace\'s churn compiled again, even in room; which went is kept per namespace: a team\'s own churn (300 cheap compiles) does not make the thread forget another\'s', () => {
  dropWhenHeapFull(Infinity, 100);
  boundKeptBytes(2 ** 40);
  try {
    check(job('fl-b', 0));
    for (let i = 0; i < 31; i++) check(job(`fl-${i}`, 0)); // 32 of one place each: fl-b's the least recently used
    check(job('fl-a', 0)); // pushes out fl-b's
    assert.equal(keptFilters()['fl-b'], undefined);
    for (let n = 1; n < 301; n++) check(job('fl-a', n)); // its own churn: its own in the way
    dropWhenHeapFull(Infinity, 100); // (room: only its going before makes compiling it again churn)
    const t = took();
    check(job('fl-b', 0), t);
    assert.ok(t.churnMs! > 0, 'compiled again, in room');
    const never = took();
    check(job('fl-1', 0), never); // (dropped for the heap: not for its share)
    assert.equal(never.churnMs, 0);
  } finally {
    boundKeptBytes(24 << 20);
    dropWhenHeapFull(Infinity, 100);
  }
});

test('past 90% of its heap bound after a compile, garbage included, the thread drops its least recently used filters then (a last resort between major GCs)', () => {
  dropWhenHeapFull(Infinity, 100);
  check(job('team-x', 0));
  check(job('team-y', 0));
  let used = 0;
  for (const s of getHeapSpaceStatistics()) if (!s.space_name.startsWith('new_') && s.space_name !== 'read_only_space') used += s.space_used_size;
  boundKeptBytes(24 << 20, Math.round(used / 0.95)); // (used now is 95% of it)
  try {
    check(job('team-z', 0));
    assert.deepEqual(keptFilters(), { 'team-z': 1 });
  } finally {
    boundKeptBytes(24 << 20, 2 ** 32);
    dropWhenHeapFull(Infinity, 100);
  }
});
