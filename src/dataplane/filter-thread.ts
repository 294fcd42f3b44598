// The filter thread: checks paths against routes' filters sent by FilterChecks (filter-checks.ts)
// off the event loop, with the same PathFilter. One check at a time, in the order sent.
import { parentPort } from 'node:worker_threads';
import { PathFilter, type FilterPass, type FilterRefusal, type FilterSpec } from './path.js';

export interface FilterJob { id: number; owner: string; field: string; spec: FilterSpec; method: string; path: string }
/** An answer, with the time its match took (ms) and compiling its filter took when that pushed out
 * another of its owner's (`churnMs`; 0 otherwise: a fresh thread's compiles are not the owner's
 * doing); `matching`: its filter is compiled, its match begins (the quick lane's time counts from then). */
export type FilterAnswer = { id: number; refused: FilterRefusal | FilterPass; ms: number; churnMs: number } | { id: number; error: string } | { id: number; matching: true } | { ready: true };

/** Compiled filters by owner (least recently used first), each owner's by field and patterns
 * (least recently used first). An owner keeps at most `perOwner`, so a team changing its patterns
 * evicts only its own; all owners at most `kept` (then the least recent owner's oldest goes). A
 * filter at the schema's bounds is up to ~1 MiB compiled (0.2-0.4 MiB is usual); no DFA state is
 * kept between checks. */
const filters = new Map<string, Map<string, PathFilter>>();
const perOwner = 8;
const kept = 32;
let count = 0;

/** `churned`: set when compiling it pushed out another of its owner's filters. */
function filterFor(job: FilterJob, churned?: { yes: boolean }): PathFilter {
  const key = JSON.stringify([job.field, job.spec.acceptPaths, job.spec.rejectPaths, job.spec.rejectMethods]);
  const mine = filters.get(job.owner) ?? new Map<string, PathFilter>();
  let f = mine.get(key);
  if (f) {
    mine.delete(key);
  } else {
    f = new PathFilter(job.spec, job.owner, job.field); // (a filter that does not compile keeps nothing)
    if (mine.size >= perOwner) {
      drop(job.owner, mine);
      if (churned) churned.yes = true;
    }
    else if (count >= kept) drop(...filters.entries().next().value!);
    count++;
  }
  mine.set(key, f);
  filters.delete(job.owner); // most recently used last
  filters.set(job.owner, mine);
  return f;
}

/** Drops the least recently used filter of `owner`'s `of` (and `of`, when it has no other). */
function drop(owner: string, of: Map<string, PathFilter>): void {
  of.delete(of.keys().next().value!); // (an owner's map is never empty: made when its first filter compiled)
  count--;
  if (of.size === 0) filters.delete(owner);
}

/** Filters kept now, by owner (for tests). */
export function keptFilters(): Record<string, number> {
  return Object.fromEntries([...filters].map(([owner, m]) => [owner, m.size]));
}

export function check(job: FilterJob, took?: { ms: number; churnMs?: number }, matching?: () => void): FilterRefusal | FilterPass {
  const compiling = performance.now();
  const churned = { yes: false };
  const f = filterFor(job, churned);
  if (took) took.churnMs = churned.yes ? performance.now() - compiling : 0;
  matching?.();
  const start = performance.now();
  try {
    return f.check(job.method, job.path);
  } finally {
    if (took) took.ms = performance.now() - start;
    f.forget(); // a costly filter's states are rebuilt by its next check, not kept (~32 KiB a pattern)
  }
}

parentPort?.on('message', (job: FilterJob) => {
  let answer: FilterAnswer;
  try {
    const took = { ms: 0, churnMs: 0 };
    answer = { id: job.id, refused: check(job, took, () => parentPort!.postMessage({ id: job.id, matching: true } satisfies FilterAnswer)), ms: took.ms, churnMs: took.churnMs };
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
