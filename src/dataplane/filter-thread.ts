// The filter thread: checks paths against routes' filters sent by FilterChecks (filter-checks.ts)
// off the event loop, with the same PathFilter. One check at a time, in the order sent.
import { GCProfiler, getHeapSpaceStatistics, type HeapSpaceStatistics } from 'node:v8';
import { createHash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { PathFilter, type FilterPass, type FilterRefusal, type FilterSpec } from './path.js';

/** `key`: the filter's PathFilter.digest (of its patterns), made once with the plan. */
export interface FilterJob { id: number; owner: string; field: string; key: string; spec: FilterSpec; method: string; path: string }
/** An answer, with the time its match took (ms), and the time compiling its filter took when that
 * was churn (`churnMs`, charged to `churnBy`): the filter pushed another out of the cache, or was
 * itself pushed out before by `churnBy` (a fresh thread's compiles are nobody's churn). `matching`:
 * its filter is compiled, its match begins (the quick lane's time counts from then). */
export type FilterAnswer = { id: number; refused: FilterRefusal | FilterPass; ms: number; churnMs: number; churnBy?: string } | { id: number; error: string } | { id: number; matching: true } | { ready: true };

/** Compiled filters by owner (least recently used first), each owner's by field and patterns
 * (least recently used first). An owner keeps at most `perOwner`, so a team changing its patterns
 * evicts only its own; all owners at most `kept`, and at most `keptBytes` (then the least recent
 * owner's oldest goes). A route's filter at the schema's bounds is ~1.3-2 MiB compiled (0.2-0.4 MiB
 * is usual): 32 of them were past the thread's heap bound, and a worker stopped by V8 for its
 * heap can take the whole process with it (nodejs/node#47224). No DFA state is kept between checks. */
const filters = new Map<string, Map<string, PathFilter>>();
const perOwner = 8;
const kept = 32;
let count = 0;
/** What the kept filters hold, estimated (`estimate`), and the most they may (FilterChecks sends
 * 30% of the thread's heap bound: garbage between collections was 10-15 MiB). */
let bytes = 0;
const sent = workerData as { keptBytes?: number; heapBytes?: number } | undefined;
let keptBytes: number = sent?.keptBytes ?? 24 << 20;
/** The thread's old-generation bound (FilterChecks' threadHeapMb). */
let heapBytes = sent?.heapBytes ?? 64 << 20;
/** What a compiled filter is taken to hold: a unit of its size ~740 bytes at most as measured (a
 * route's 1,810: 1.27 MiB), ~4.3 KiB a pattern whatever its size, its patterns' text twice (the
 * spec sent, its key: two bytes a character at worst), character ranges next to nothing (shared),
 * and a base (a review measured 1.84× the first estimate, without the patterns' share). */
const bytesPerUnit = 800;
const bytesPerPattern = 5 << 10;
const bytesPerFilter = 64 << 10;

function estimate(f: PathFilter): number {
  const { acceptPaths, rejectPaths, rejectMethods } = f.spec;
  return bytesPerFilter + f.size * bytesPerUnit + (acceptPaths.length + rejectPaths.length + rejectMethods.length) * bytesPerPattern + 4 * f.key.length;
}

/** Sets the bounds on what kept filters hold and on the heap (for tests, which call `check` in
 * their own thread). */
export function boundKeptBytes(n: number, heap = heapBytes): void {
  keptBytes = n;
  heapBytes = heap;
}

/** Who pushed each filter out, by owner, then key (an owner's most recent 32, of the 1,024 owners
 * pushed out most recently: a review flushed one map of 256 with a team's own cheap churn): its
 * owner compiling it again is that one's churn, not its own (sibling namespaces of one team
 * pushing each other's out too). */
const pushedOutBy = new Map<string, Map<string, Blame>>();
/** A compile that pushed filters out: its namespace, and how much more of others' compiling again
 * it may be charged (what it took, shared by all it pushed out and by what their compiles push out
 * in turn). `self`: what it pushed out of its own namespace (all of it its own churn). */
interface Blame { by: string; left: number; self?: true }
/** What a compile that pushes filters out may be charged for their compiling again beyond what it
 * took itself (ms; about two routes at the schema's bounds): capped at what it took, one team's
 * cheap compiles pushing out its sibling namespace's large filters had those compiled again
 * charged to no one, 6-10 times the quick lane's share (a review). Tests set it. */
export const pushedOutAllowance = { ms: 50 };

/** `churn`: set to whose churn compiling it was and for how long (see FilterAnswer), if anyone's.
 * - A compile that pushes filters out, or of a filter its own namespace pushed out, is its
 *   namespace's churn, all of it.
 * - A filter another namespace pushed out is that one's churn, for as long as that one's compile
 *   has left (what it took and pushedOutAllowance), and the rest is no one's: not the namespace
 *   whose filter was pushed out (a review: one team's cheap compiles made another pay its large
 *   recompiles).
 * - What that compile pushes out of other namespaces is the same pusher's, out of what it has
 *   left: one compile is charged at most that, however far its pushing out goes (a review: passed
 *   on whole, one team's own churn was charged to another for as long as it went on). Once that
 *   is spent, what it pushes out is its own namespace's, out of a budget of its own. */
function filterFor(job: FilterJob, churn?: { by?: string; ms?: number }): PathFilter {
  const key = `${job.field}\0${job.key}`;
  const mine = filters.get(job.owner) ?? new Map<string, PathFilter>();
  let f = mine.get(key);
  if (f) {
    mine.delete(key);
  } else {
    const compiling = performance.now();
    f = new PathFilter(job.spec, job.owner, job.field); // (a filter that does not compile keeps nothing)
    const ms = performance.now() - compiling;
    lastResort();
    const size = estimate(f);
    const earlier = pushedOutBy.get(job.owner)?.get(short(key));
    pushedOutBy.get(job.owner)?.delete(short(key));
    const own: Blame = { by: job.owner, left: ms + pushedOutAllowance.ms };
    const self: Blame = { by: job.owner, left: 0, self: true };
    // (a blame that came back to the namespace whose compile set it off is that compile's budget,
    // not its own churn: a review's chain charged a team 2.4× its compile)
    const another = earlier && !earlier.self ? earlier : undefined;
    const charged = another ? Math.min(ms, another.left) : 0;
    if (another) another.left -= charged;
    const before = count;
    // (a budget spent is not passed on: two namespaces pushing each other's out after one cheap
    // compile went on charged to no one, a review's 950 ms a second)
    const out = (owner: string, of: Map<string, PathFilter>) => pushOut(owner, of, owner === job.owner ? self : another && another.left > 0 ? another : own);
    if (mine.size >= perOwner) out(job.owner, mine);
    else if (count >= kept) out(...filters.entries().next().value!);
    while (count > 0 && bytes + size > keptBytes) out(...filters.entries().next().value!);
    if (churn && another) Object.assign(churn, charged > 0 ? { by: another.by, ms: charged } : {});
    else if (churn && (earlier || count < before)) Object.assign(churn, { by: job.owner, ms });
    count++;
    bytes += size;
  }
  mine.set(key, f);
  filters.delete(job.owner); // most recently used last
  filters.set(job.owner, mine);
  return f;
}

/** Drops the least recently used filter of `owner`'s `of` (and `of`, when it has no other),
 * remembered as pushed out by `by` (if anyone). */
function pushOut(owner: string, of: Map<string, PathFilter>, by: Blame | undefined): void {
  const [key, f] = of.entries().next().value!; // (an owner's map is never empty: made when its first filter compiled)
  of.delete(key);
  count--;
  bytes -= estimate(f);
  if (of.size === 0) filters.delete(owner);
  if (by !== undefined) blame(owner, short(key), by);
}

/** A filter's key as pushedOutBy keeps it: hashed when long (a review: 32,768 keys of ~1 KiB were
 * 36-68 MiB of the thread's heap that no bound counted). */
function short(key: string): string {
  return key.length <= 64 ? key : createHash('sha256').update(key).digest('base64url');
}

/** Remembers `by` as who pushed out `owner`'s filter `key` (see pushedOutBy). */
function blame(owner: string, key: string, by: Blame): void {
  const of = pushedOutBy.get(owner) ?? new Map<string, Blame>();
  pushedOutBy.delete(owner);
  pushedOutBy.set(owner, of);
  of.delete(key);
  of.set(key, by);
  if (of.size > 32) of.delete(of.keys().next().value!);
  if (pushedOutBy.size > 1_024) pushedOutBy.delete(pushedOutBy.keys().next().value!);
}

/** Filters kept now, by owner (for tests). */
export function keptFilters(): Record<string, number> {
  return Object.fromEntries([...filters].map(([owner, m]) => [owner, m.size]));
}

export function check(job: FilterJob, took?: { ms: number; churnMs?: number; churnBy?: string }, matching?: () => void): FilterRefusal | FilterPass {
  const churn: { by?: string; ms?: number } = {};
  const f = filterFor(job, churn);
  if (took) {
    took.churnMs = churn.ms ?? 0;
    took.churnBy = churn.by;
  }
  matching?.();
  const start = performance.now();
  try {
    return f.check(job.method, job.path);
  } finally {
    if (took) took.ms = performance.now() - start;
    f.forget(); // a costly filter's states are rebuilt by its next check, not kept (~32 KiB a pattern)
  }
}

/** Past this share of its old-generation bound, as the last major GC left it, the thread drops its
 * least recently used filters: should the estimates fall short, V8 stopping it for its heap can take
 * the process with it. (Garbage is not counted: read as it was, the bound dropped every filter 0-26
 * times in 120 checks of filters well within keptBytes, a review measured.) */
const heapShareKept = 0.7;

const collections = new GCProfiler();
collections.start();

/** What the old generation (the spaces its bound counts) held after the last major GC since the
 * last call, or 0 when there was none. */
function liveAfterMajorGc(): number {
  const { statistics } = collections.stop();
  collections.start();
  let live = 0;
  for (const gc of statistics) if (gc.gcType === 'MarkSweepCompact') live = oldGeneration(gc.afterGC.heapSpaceStatistics);
  return live;
}

function oldGeneration(spaces: HeapSpaceStatistics[]): number {
  let n = 0;
  for (const s of spaces) if (!s.spaceName.startsWith('new_') && s.spaceName !== 'read_only_space') n += s.spaceUsedSize;
  return n;
}

/** Past this share of its bound after a compile, garbage included, the thread drops filters as
 * it would after a major GC: a last resort (a thread's live set growing within one job, or
 * estimates far short, are read by no major GC before the next job). */
const heapShareLast = 0.9;

function lastResort(): void {
  let used = 0;
  for (const s of getHeapSpaceStatistics()) if (!s.space_name.startsWith('new_') && s.space_name !== 'read_only_space') used += s.space_used_size;
  if (used > heapShareLast * heapBytes) dropWhenHeapFull(used);
}

/** Drops the least recently used kept filters (owners least recently used first) by their
 * estimates until what `used` holds past `heapShareKept` of `bound` is freed. Nobody's churn: what
 * the estimates missed is no one owner's doing. */
export function dropWhenHeapFull(used = liveAfterMajorGc(), bound = heapBytes): boolean {
  const over = used - heapShareKept * bound;
  if (over <= 0) return false;
  for (let freed = 0; count > 0 && freed < over;) {
    const was = bytes;
    pushOut(...filters.entries().next().value!, undefined);
    freed += was - bytes;
  }
  return true;
}

parentPort?.on('message', (job: FilterJob) => {
  dropWhenHeapFull();
  let answer: FilterAnswer;
  try {
    const took: { ms: number; churnMs: number; churnBy?: string } = { ms: 0, churnMs: 0 };
    const refused = check(job, took, () => parentPort!.postMessage({ id: job.id, matching: true } satisfies FilterAnswer));
    answer = { id: job.id, refused, ms: took.ms, churnMs: took.churnMs, ...(took.churnBy === undefined ? {} : { churnBy: took.churnBy }) };
  } catch (err) {
    answer = { id: job.id, error: (err as Error).message };
  }
  parentPort!.postMessage(answer);
});
if (parentPort) {
  // warmed (a first match runs re2js's code cold, a few ms): a spare's first check is not slower
  const warm = new PathFilter({ acceptPaths: ['^/api/.*'], rejectPaths: ['^/api/.*/pods/.*/exec'], rejectMethods: [] }, '', 'warm');
  warm.check('GET', '/api/v1/namespaces/a/pods/' + 'x'.repeat(400));
  warm.forget();
  // loaded (re2js and all): checks are timed from now
  parentPort.postMessage({ ready: true } satisfies FilterAnswer);
}
