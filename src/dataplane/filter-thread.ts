// The filter thread: checks paths against routes' filters sent by FilterChecks (filter-checks.ts)
// off the event loop, with the same PathFilter. One check at a time, in the order sent.
import { parentPort } from 'node:worker_threads';
import { PathFilter, type FilterPass, type FilterRefusal, type FilterSpec } from './path.js';

export interface FilterJob { id: number; owner: string; field: string; spec: FilterSpec; method: string; path: string }
export type FilterAnswer = { id: number; refused: FilterRefusal | FilterPass } | { id: number; error: string } | { ready: true };

/** Compiled filters by owner, field and patterns: the last `kept` used. */
const filters = new Map<string, PathFilter>();
const kept = 256;

function filterFor(job: FilterJob): PathFilter {
  const key = JSON.stringify([job.owner, job.field, job.spec.acceptPaths, job.spec.rejectPaths, job.spec.rejectMethods]);
  let f = filters.get(key);
  if (f) {
    filters.delete(key); // most recently used last
  } else {
    f = new PathFilter(job.spec, job.owner, job.field);
    if (filters.size >= kept) filters.delete(filters.keys().next().value!);
  }
  filters.set(key, f);
  return f;
}

parentPort?.on('message', (job: FilterJob) => {
  let answer: FilterAnswer;
  try {
    answer = { id: job.id, refused: filterFor(job).check(job.method, job.path) };
  } catch (err) {
    answer = { id: job.id, error: (err as Error).message };
  }
  parentPort!.postMessage(answer);
});
// loaded (re2js and all): checks are timed from now
parentPort?.postMessage({ ready: true } satisfies FilterAnswer);
