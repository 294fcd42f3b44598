// The filter thread: checks paths against routes' filters sent by FilterChecks (filter-checks.ts)
// off the event loop, with the same PathFilter. One check at a time, in the order sent.
import { GCProfiler, getHeapSpaceStatistics, type HeapSpaceStatistics } from 'node:v8';
import { createHash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { PathFilter, type FilterPass, type FilterRefusal, type FilterSpec } from './path.js';

/** `key`: the filter's PathFilter.digest (of its patterns), made once with the plan. */
export interface FilterJob { id: number; owner: string; field: string; key: string; spec: FilterSpec; method: string; path: string }
/** An answer, with the time its match took (ms), and the time compiling its filter took when that
 * was its namespace's churn (`churnMs`: see filterFor). `matching`: its filter is compiled, its
 * match begins (the quick lane's time counts from then). */
export type FilterAnswer = { id: number; refused: FilterRefusal | FilterPass; ms: number; churnMs: number } | { id: number; error: string } | { id: number; matching: true } | { ready: true };

/** An owner's compiled filters by field and patterns (least recently used first), what they hold
 * (estimated) and when it last checked. */
interface Held { filters: Map<string, PathFilter>; bytes: number; at: number }

/** Compiled filters by owner (least recently used first). An owner keeps at most `perOwner`; all
 * owners at most `kept`, and at most `keptBytes`. Past those, a share each: the filter that goes
 * is an idle owner's (see idleness), else the oldest of the owner holding the largest share (see
 * `share`; the least recently used of those holding as much), the new filter's own owner's first
 * when it would hold more (a team filling the cache from four namespaces made another team compile
 * its one filter again at each check; with as much, a namespace holding as much as each of a
 * team's four namespaces compiled its filters again and paid for it, a review). A route's filter
 * at the schema's bounds is ~1.3-2 MiB compiled (0.2-0.4 MiB is usual): 32 of them were past the
 * thread's heap bound, and a worker stopped by V8 for its heap can take the whole process with it
 * (nodejs/node#47224). No DFA state is kept between checks. */
const filters = new Map<string, Held>();
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

/** What `f` is taken to hold compiled (exported for tests). */
export function estimate(f: PathFilter): number {
  const { acceptPaths, rejectPaths, rejectMethods } = f.spec;
  return bytesPerFilter + f.size * bytesPerUnit + (acceptPaths.length + rejectPaths.length + rejectMethods.length) * bytesPerPattern + 4 * f.key.length;
}

/** Sets the bounds on what kept filters hold and on the heap (for tests, which call `check` in
 * their own thread). */
export function boundKeptBytes(n: number, heap = heapBytes): void {
  keptBytes = n;
  heapBytes = heap;
}

/** An owner none of whose checks came for this long (ms) is idle: its filters go first, not for
 * its share (compiling one again is churn only as any compile in a full cache is). Tests set it. */
export const idleness = { ms: 30_000 };

/** The filters pushed out of each owner for its share (its most recent 32, of the 1,024 owners
 * pushed out most recently), by a short key: compiling one again is its owner's churn. */
const pushedOut = new Map<string, Set<string>>();

/** Filters compiled and not kept, by owner (as pushedOut): one is kept when compiled again. */
const tried = new Map<string, Set<string>>();

/** `churn.ms`: set to how long compiling took when that was its namespace's churn: it pushed a
 * filter out for its share (another's, that held as much or more, which pays for compiling it
 * again: a review's team compiling fresh filters from whichever of its namespaces held the least
 * was charged nothing), its own filters were in the way (it held its 8, or would hold more than
 * any other), or it compiled one again that was pushed out for its share. Any other compile with
 * room (a fresh thread's, or in room an idle namespace's filters or the heap's bound made) is no
 * one's churn. When its own filters are in the way, a filter is kept only when compiled a second
 * time (its owner's oldest goes then), or when others' filters went for it already: a namespace
 * cycling through one filter more than it has room for missed at every check (a review), now one
 * or two a cycle. */
function filterFor(job: FilterJob, churn?: { ms?: number }): PathFilter {
  const key = `${job.field}\0${job.key}`;
  const now = performance.now();
  const mine = filters.get(job.owner) ?? { filters: new Map<string, PathFilter>(), bytes: 0, at: now };
  // (not idle, and most recently used: one back from idleness pushed out its own, then paid for
  // compiling it again, and hid other idle namespaces behind it, two reviews)
  mine.at = now;
  if (filters.delete(job.owner)) filters.set(job.owner, mine);
  let f = mine.filters.get(key);
  if (f) {
    mine.filters.delete(key);
    mine.filters.set(key, f);
  } else {
    f = new PathFilter(job.spec, job.owner, job.field); // (a filter that does not compile keeps nothing)
    const ms = performance.now() - now;
    lastResort();
    const size = estimate(f);
    const again = pushedOut.get(job.owner)?.delete(short(key)) ?? false;
    let full = false; // (a filter went for a share, or its own were in the way: its churn)
    let keep: boolean | undefined; // (whether to keep it when its own filters are in the way)
    const ownInTheWay = () => {
      full = true;
      keep ??= tried.get(job.owner)?.delete(short(key)) ?? false;
      if (!keep) remember(tried, job.owner, short(key));
      return keep;
    };
    while (mine.filters.size >= perOwner && ownInTheWay()) pushOut(job.owner, mine, 'share');
    while (keep !== false && count > 0 && (count >= kept || bytes + size > keptBytes)) {
      const [owner, held] = victim(job.owner, mine, size, now, { count: count >= kept, bytes: bytes + size > keptBytes });
      // (its own are never idle; once others' filters went for it, it is kept: a review saw them
      // pushed out, then nothing kept)
      if (owner === job.owner && !full && !ownInTheWay()) break;
      const why = now - held.at >= idleness.ms ? 'idle' : 'share';
      pushOut(owner, held, why);
      if (why === 'share') full = true;
    }
    if (churn && (again || full)) churn.ms = ms;
    if (keep !== false) {
      count++;
      mine.bytes += size;
      bytes += size;
      mine.filters.set(key, f);
    }
  }
  // (a new owner, or one emptied and kept again: most recently used last, as it is moved above)
  if (mine.filters.size > 0) filters.set(job.owner, mine);
  return f;
}

/** The owner whose filter goes for `owner`'s new one of `size` (see filters), by the bounds that
 * are `full`: with no owner, for the heap's bound. */
function victim(owner: string | undefined, mine: Held | undefined, size: number, now: number, full: { count: boolean; bytes: boolean }): [string, Held] {
  const [oldest, idle] = filters.entries().next().value!;
  if (now - idle.at >= idleness.ms) return [oldest, idle];
  let most: [string, Held] | undefined;
  let largest = -1;
  for (const [o, held] of filters) {
    const s = share(held.filters.size, held.bytes, full);
    if (o !== owner && s > largest) [most, largest] = [[o, held], s];
  }
  if (owner && mine && mine.filters.size > 0 && (!most || share(mine.filters.size + 1, mine.bytes + size, full) > largest)) return [owner, mine];
  return most!;
}

/** What `n` filters holding `b` bytes take of the cache's bounds that are `full`, in its 32 places
 * (each 1/32 of keptBytes; the more of the two when both are: a review's four namespaces filling
 * the count with small filters made another's 3 large ones, 3 filters but 8 places of bytes, the
 * largest share; whole places, so that owners alike tie and the least recently used goes). */
function share(n: number, b: number, full: { count: boolean; bytes: boolean }): number {
  return Math.max(full.count ? n : 0, full.bytes ? Math.ceil((b * kept) / keptBytes) : 0);
}

/** Drops the least recently used filter of `owner`'s (and `owner`, when it has no other); one that
 * went for its share is remembered (see pushedOut). */
function pushOut(owner: string, held: Held, why: 'share' | 'idle' | 'heap'): void {
  const [key, f] = held.filters.entries().next().value!; // (an owner kept is never empty: made when its first filter compiled)
  held.filters.delete(key);
  const size = estimate(f);
  count--;
  bytes -= size;
  held.bytes -= size;
  if (held.filters.size === 0) filters.delete(owner);
  if (why === 'share') remember(pushedOut, owner, short(key));
}

/** A filter's key as pushedOut keeps it: hashed when long (a review: 32,768 keys of ~1 KiB were
 * 36-68 MiB of the thread's heap that no bound counted). */
function short(key: string): string {
  return key.length <= 64 ? key : createHash('sha256').update(key).digest('base64url');
}

/** Adds `key` to `owner`'s in `of` (its most recent 32, of the 1,024 owners added to most recently). */
function remember(of: Map<string, Set<string>>, owner: string, key: string): void {
  const keys = of.get(owner) ?? new Set<string>();
  of.delete(owner);
  of.set(owner, keys);
  keys.delete(key);
  keys.add(key);
  if (keys.size > 32) keys.delete(keys.values().next().value!);
  if (of.size > 1_024) of.delete(of.keys().next().value!);
}

/** Filters kept now, by owner (for tests). */
export function keptFilters(): Record<string, number> {
  return Object.fromEntries([...filters].map(([owner, held]) => [owner, held.filters.size]));
}

export function check(job: FilterJob, took?: { ms: number; churnMs?: number }, matching?: () => void): FilterRefusal | FilterPass {
  const churn: { ms?: number } = {};
  const f = filterFor(job, churn);
  if (took) took.churnMs = churn.ms ?? 0;
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

/** Drops kept filters (as for a new filter: an idle owner's, else the largest share's oldest) by
 * their estimates until what `used` holds past `heapShareKept` of `bound` is freed. Nobody's churn: what
 * the estimates missed is no one owner's doing. */
export function dropWhenHeapFull(used = liveAfterMajorGc(), bound = heapBytes): boolean {
  const over = used - heapShareKept * bound;
  if (over <= 0) return false;
  for (let freed = 0; count > 0 && freed < over;) {
    const was = bytes;
    pushOut(...victim(undefined, undefined, 0, performance.now(), { count: true, bytes: true }), 'heap');
    freed += was - bytes;
  }
  return true;
}

parentPort?.on('message', (job: FilterJob) => {
  dropWhenHeapFull();
  let answer: FilterAnswer;
  try {
    const took = { ms: 0, churnMs: 0 };
    const refused = check(job, took, () => parentPort!.postMessage({ id: job.id, matching: true } satisfies FilterAnswer));
    answer = { id: job.id, refused, ms: took.ms, churnMs: took.churnMs };
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
