import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { boundKeptBytes, check, dropWhenHeapFull, keptFilters, pushedOutAllowance } from '../../src/dataplane/filter-thread.js';
import { compileRegex } from '../../src/api/regex.js';
import type { FilterSpec } from '../../src/dataplane/path.js';

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

test('the filter thread keeps filters within its bound on what they hold: a route\'s at the schema\'s bounds (~1.3 MiB) are fewer than 32, the least recently used going first', () => {
  boundKeptBytes(8 << 20);
  try {
    // 10 patterns a route, 1,810 instructions (within a route's 2,048): each holds ~1.27 MiB compiled
    const route = (k: number): FilterSpec => ({ acceptPaths: Array.from({ length: 10 }, (_, i) => `^/api/v1/namespaces/[a-z0-9-]{1,63}/configmaps/r${k}-${i}-[a-z]{2,9}$`), rejectPaths: [], rejectMethods: [] });
    const big = (owner: string, k: number) => ({ id: 0, owner, field: `spec.routes[${k}].apiserver`, key: keyOf(route(k)), spec: route(k), method: 'GET', path: `/api/v1/namespaces/x/configmaps/r${k}-1-ab` });
    for (let k = 0; k < 12; k++) assert.ok('accepted' in check(big(`team-${k}`, k)));
    const kept = keptFilters();
    const n = Object.values(kept).reduce((a, b) => a + b, 0);
    assert.ok(n >= 2 && n <= 6, `8 MiB holds 2 to 6 of them: ${JSON.stringify(kept)}`);
    assert.equal(kept['team-11'], 1, 'the newest kept');
    assert.equal(kept['team-0'], undefined, 'the least recently used gone');
    // a filter's patterns and their text count, whatever its size: 96 patterns of 2 instructions
    // and 230 control characters each (~135,000 characters of key, ~1.7 MiB estimated)
    const filler = '\u0001'.repeat(230);
    const long = (k: number): FilterSpec => ({ acceptPaths: Array.from({ length: 96 }, (_, i) => `[^\\x00-\\x{10FFFF}${filler}]|^/${k}-${i}`), rejectPaths: [], rejectMethods: [] });
    for (let k = 0; k < 12; k++) check({ id: 0, owner: `long-${k}`, field: 'f', key: `long-${k}`, spec: long(k), method: 'GET', path: `/${k}-0` });
    const longs = Object.entries(keptFilters()).filter(([o]) => o.startsWith('long-')).length;
    assert.ok(longs >= 2 && longs <= 5, `8 MiB holds 2 to 5 of them: ${longs}`);
    for (let k = 0; k < 12; k++) assert.ok('accepted' in check(big(`team-${k}`, k)));
    // who pushed a filter out pays for its compile again
    const took: { ms: number; churnMs?: number; churnBy?: string } = { ms: 0 };
    check(big('team-0', 0), took);
    assert.ok(took.churnBy !== undefined && /^team-([1-9]|1[01])$/.test(took.churnBy), `team-0's filter was pushed out by another's: ${took.churnBy}`);
  } finally {
    boundKeptBytes(24 << 20);
  }
});

test('the filter thread drops its least recently used filters when its old generation is past 70% of its bound (should their estimates fall short), as much as it is past, and not before', () => {
  dropWhenHeapFull(Infinity, 100); // (other tests' filters gone)
  check(job('team-h', 0));
  check(job('team-big', 1));
  check(job('team-big', 2));
  assert.equal(dropWhenHeapFull(70, 100), false);
  assert.deepEqual(keptFilters(), { 'team-h': 1, 'team-big': 2 });
  assert.equal(dropWhenHeapFull(71, 100), true);
  assert.deepEqual(keptFilters(), { 'team-big': 2 }, 'the least recently used, as much as it is past by their estimates');
  assert.equal(dropWhenHeapFull(0.7 * (1 << 20) + (100 << 10), 1 << 20), true); // (100 KiB past: more than one's estimate, ~64 KiB)
  assert.deepEqual(keptFilters(), {});
  // their compiling again is no one's churn
  const took: { ms: number; churnMs?: number; churnBy?: string } = { ms: 0 };
  check(job('team-h', 0), took);
  assert.equal(took.churnBy, undefined);
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

test('a filter pushed out by another namespace\'s compile is that one\'s churn for at most what its compile took, in all (what compiling it again pushes out of others too), the rest no one\'s; one pushed out by its own namespace is its own, all of it', async (t) => {
  dropWhenHeapFull(Infinity, 100);
  pushedOutAllowance.ms = 0; // (what a compile took, no more)
  t.after(() => { pushedOutAllowance.ms = 50; });
  const took = () => ({ ms: 0 } as { ms: number; churnMs?: number; churnBy?: string });
  for (let k = 0; k < 8; k++) check(big('team-a', k)); // (team-a's large filters: the least recently used)
  for (const ns of ['team-c', 'team-d', 'team-e']) for (let n = 0; n < 8; n++) check(job(ns, n));
  assert.equal(Object.values(keptFilters()).reduce((a, b) => a + b, 0), 32);
  const f = took();
  check(job('team-f', 0), f); // pushes out team-a's oldest
  assert.equal(f.churnBy, 'team-f');
  assert.equal(keptFilters()['team-a'], 7);
  check(big('team-a', 1)); // (team-a used last: team-c's are the least recently used)
  await new Promise((r) => setImmediate(r));
  gc(); // (its programs are not shared by a kept filter: compiled again from nothing)
  const a = took();
  check(big('team-a', 0), a); // compiled again: team-f's churn, at most team-f's compile; pushes out team-c's oldest
  assert.ok(a.churnBy === 'team-f' && a.churnMs! <= f.churnMs!, `charged ${a.churnBy} ${a.churnMs} ms, team-f's compile took ${f.churnMs} ms`);
  const c = took();
  check(job('team-c', 0), c);
  // pushed out by the compile team-f caused: team-f's, out of what its compile has left; once that
  // is spent, team-a's own
  assert.ok(c.churnBy === 'team-f' ? c.churnMs! + a.churnMs! <= f.churnMs! + 1e-9 : c.churnBy === 'team-a', `${c.churnBy} ${c.churnMs}`);
  // team-a's filter pushed out by team-a's own compile: all of its compiling again is team-a's
  dropWhenHeapFull(Infinity, 100);
  for (let k = 0; k < 8; k++) check(big('team-a', k));
  check(job('team-a', 0)); // (its 9th: pushes out its own oldest, large one)
  await new Promise((r) => setImmediate(r));
  gc();
  const own = took();
  const start = performance.now();
  check(big('team-a', 0), own);
  const real = performance.now() - start;
  assert.equal(own.churnBy, 'team-a');
  assert.ok(own.churnMs! > 0.5 * (real - own.ms), `charged ${own.churnMs} ms of ${real - own.ms} ms compiling`);
  dropWhenHeapFull(Infinity, 100);
});

test('a team\'s cheap compile pushing out its sibling namespace\'s large filter is charged that filter\'s compiling again (up to 50 ms more than its own), not no one; a blame come back to the namespace that set it off is that compile\'s, not its own again', async () => {
  dropWhenHeapFull(Infinity, 100);
  boundKeptBytes(2 ** 40);
  try {
    const took = () => ({ ms: 0 } as { ms: number; churnMs?: number; churnBy?: string });
    check(big('sib-1', 0));
    for (const ns of ['sib-f1', 'sib-f2', 'sib-f3']) for (let n = 0; n < 8; n++) check(job(ns, n));
    for (let n = 0; n < 7; n++) check(job('sib-2', n)); // 32 kept: sib-1's large one the least recently used
    check(job('sib-2', 100)); // cheap: pushes out sib-1's
    assert.equal(keptFilters()['sib-1'], undefined);
    for (const ns of ['sib-f1', 'sib-f2', 'sib-f3', 'sib-2']) check(job(ns, ns === 'sib-2' ? 100 : 0));
    await new Promise((r) => setImmediate(r));
    gc();
    const again = took();
    const start = performance.now();
    check(big('sib-1', 0), again);
    const compiling = performance.now() - start - again.ms;
    assert.equal(again.churnBy, 'sib-2');
    assert.ok(again.churnMs! > 0.5 * compiling, `charged ${again.churnMs} ms of ${compiling} ms`);
    // team-b's compile pushes out ch-1's; ch-1's compiling again pushes out team-b's own: team-b is
    // charged its compile and, in all, what that compile had left (none here), not each again
    pushedOutAllowance.ms = 0;
    dropWhenHeapFull(Infinity, 100);
    check(big('ch-1', 0));
    check(big('ch-b', 1));
    check(big('ch-b', 2));
    for (const ns of ['ch-f1', 'ch-f2', 'ch-f3']) for (let n = 0; n < 8; n++) check(job(ns, n));
    for (let n = 0; n < 5; n++) check(job('ch-f4', n)); // 32: ch-1's the least recently used, then ch-b's
    const charged: Record<string, number> = {};
    const run = async (j: ReturnType<typeof big>) => {
      await new Promise((r) => setImmediate(r));
      gc();
      const t = took();
      check(j, t);
      if (t.churnBy) charged[t.churnBy] = (charged[t.churnBy] ?? 0) + t.churnMs!;
      return t;
    };
    const z = await run(big('ch-b', 3)); // pushes out ch-1's
    assert.equal(z.churnBy, 'ch-b');
    for (const ns of ['ch-f1', 'ch-f2', 'ch-f3', 'ch-f4']) check(job(ns, 0));
    await run(big('ch-1', 0)); // pushes out ch-b's oldest
    assert.equal(keptFilters()['ch-b'], 2);
    await run(big('ch-b', 1));
    assert.ok(charged['ch-b']! <= 2 * z.churnMs! + 1e-9, `charged ${charged['ch-b']} ms for a compile of ${z.churnMs} ms`);
  } finally {
    pushedOutAllowance.ms = 50;
    boundKeptBytes(24 << 20);
    dropWhenHeapFull(Infinity, 100);
  }
});

test('a pushing compile\'s budget spent is not passed on: two namespaces pushing each other\'s large filter out after one cheap compile are charged for it, not no one', async () => {
  dropWhenHeapFull(Infinity, 100);
  boundKeptBytes(2 ** 40);
  try {
    const fill = ['pp-f1', 'pp-f2', 'pp-f3', 'pp-f4'];
    // 96 patterns of a class of every character each: ~20-40 ms to compile
    const filler = '\u0001'.repeat(230);
    const large = (owner: string, k: number) => {
      const spec: FilterSpec = { acceptPaths: Array.from({ length: 96 }, (_, i) => `[^\\x00-\\x{10FFFF}${filler}]|^/${k}-${i}`), rejectPaths: [], rejectMethods: [] };
      return { id: 0, owner, field: `spec.routes[${k}].apiserver`, key: keyOf(spec), spec, method: 'GET', path: '/x' };
    };
    check(large('pp-1', 0));
    check(large('pp-2', 1));
    for (const ns of fill) for (let n = 0; n < (ns === 'pp-f4' ? 6 : 8); n++) check(job(ns, n));
    const touch = () => { for (const ns of fill) check(job(ns, 0)); };
    check(large('pp-2', 1));
    touch(); // (pp-1's the least recently used)
    check(job('pp-f4', 77)); // the one cheap compile: pushes out pp-1's
    const charged: Record<string, number> = {};
    let compiling = 0;
    for (let c = 0; c < 6; c++) {
      for (const [ns, k] of [['pp-1', 0], ['pp-2', 1]] as const) {
        touch();
        await new Promise((r) => setImmediate(r));
        gc();
        const t = { ms: 0 } as { ms: number; churnMs?: number; churnBy?: string };
        const start = performance.now();
        check(large(ns, k), t); // compiled again: pushes out the other's
        compiling += performance.now() - start - t.ms;
        if (t.churnBy) charged[t.churnBy] = (charged[t.churnBy] ?? 0) + t.churnMs!;
      }
    }
    const all = Object.values(charged).reduce((a, b) => a + b, 0);
    assert.ok(all > 0.5 * compiling, `charged ${JSON.stringify(charged)} of ${compiling} ms compiling`);
  } finally {
    boundKeptBytes(24 << 20);
    dropWhenHeapFull(Infinity, 100);
  }
});

test('who pushed a filter out is kept per namespace: a team\'s own churn (300 cheap compiles) does not make the thread forget that it pushed out another\'s', () => {
  dropWhenHeapFull(Infinity, 100);
  boundKeptBytes(2 ** 40);
  try {
    check(job('fl-b', 0));
    for (const ns of ['fl-f1', 'fl-f2', 'fl-f3']) for (let n = 0; n < 8; n++) check(job(ns, n));
    for (let n = 0; n < 7; n++) check(job('fl-a', n)); // 32: fl-b's the least recently used
    check(job('fl-a', 7)); // pushes out fl-b's
    assert.equal(keptFilters()['fl-b'], undefined);
    for (let n = 8; n < 308; n++) check(job('fl-a', n)); // its own churn: each pushes out its own oldest
    const took = { ms: 0 } as { ms: number; churnMs?: number; churnBy?: string };
    check(job('fl-b', 0), took);
    assert.equal(took.churnBy, 'fl-a');
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
