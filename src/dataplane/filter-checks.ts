// Where routes' path filters run. RE2 is linear in the path, but a team's patterns can still cost
// milliseconds per request, and the event loop is every team's. A check runs on the event loop
// while it is cheap (its filter's size times the path's length) and its namespace has event-loop
// time left (a bucket refilled every second); otherwise on the filter thread, where a namespace
// waits behind its own checks and namespaces take turns, so one team's patterns cannot stall the
// gateways of the others (the tenancy invariant).
import { Worker } from 'node:worker_threads';
import { FilterUnavailableError, FiltersBusyError } from '../errors.js';
import type { FilterAnswer, FilterJob } from './filter-thread.js';
import type { FilterPass, FilterRefusal, PathFilter } from './path.js';

export interface FilterLimits {
  /** A check whose filter size × path length is above this runs on the filter thread (the
   * event loop's worst case is ~0.5 µs per unit: ~8 ms at the default). */
  onThreadCost: number;
  /** Event-loop time a namespace's checks may take: ms per second, and at most this much saved. */
  msPerSecond: number;
  burstMs: number;
  /** A check that takes less is not charged: sending it to the thread would cost the event loop
   * more (a message and a promise) than running it. */
  freeMs: number;
  /** Checks of a namespace waiting for the filter thread; more are answered 429. */
  waitingPerNamespace: number;
  /** A check that takes longer on the filter thread is stopped (the thread started again) and
   * answered 503: no namespace's check waits longer than this behind another's. */
  threadCheckMs: number;
  /** The filter thread's old-generation heap (MiB): past it the thread stops, its check is answered
   * 503 and a new thread takes the next. It keeps at most 32 compiled filters (up to ~1 MiB each,
   * 0.2-0.4 MiB usual) and no DFA state between checks; a check builds at most 96 patterns' 32 KiB.
   * It comes on top of the main heap in the pod's memory limit. */
  threadHeapMb: number;
}

export const defaultFilterLimits: FilterLimits = { onThreadCost: 16_384, msPerSecond: 20, burstMs: 100, freeMs: 0.05, waitingPerNamespace: 64, threadCheckMs: 250, threadHeapMb: 64 };

/** What FilterChecks tells: a check sent to the thread (`why`: its cost, or its namespace's
 * event-loop time used up), one refused (`busy`: 429, `failed`: 503), a namespace that has just
 * used up its event-loop time. */
export interface FilterEvents {
  sent?(namespace: string, why: 'cost' | 'budget'): void;
  refused?(namespace: string, reason: 'busy' | 'failed'): void;
  overBudget?(namespace: string): void;
}

/** The client connection of a check: when it is closed before its turn, the check is not sent. */
export interface FilterClient { readonly destroyed?: boolean }

interface Waiting { job: FilterJob; done: (r: FilterRefusal | FilterPass) => void; fail: (err: Error) => void; client: FilterClient | undefined; timer?: NodeJS.Timeout }

export class FilterChecks {
  /** Event-loop time left per namespace (ms), as of `at`. */
  private readonly time = new Map<string, { ms: number; at: number }>();
  private readonly waiting = new Map<string, Waiting[]>();
  /** Namespaces with checks waiting, in turn. */
  private readonly turns: string[] = [];
  private worker: Worker | undefined;
  private running: Waiting | undefined;
  /** Whether the current thread has loaded (checks are timed from then). */
  private online = false;
  private nextId = 0;
  /** Checks sent to the filter thread so far. */
  offThread = 0;

  constructor(private readonly limits: FilterLimits = defaultFilterLimits, private readonly events: FilterEvents = {},
    private readonly now: () => number = () => performance.now()) {}

  /**
   * Why `filter` refuses `method` `path`, or the pattern that lets it through: at once on the
   * event loop, or a promise of the filter thread's answer. Throws FiltersBusyError when the namespace has too many checks
   * waiting; rejects with FilterUnavailableError when the thread fails, or the client left
   * (`client` closed) before its turn.
   */
  check(filter: PathFilter, method: string, path: string, client?: FilterClient): FilterRefusal | FilterPass | Promise<FilterRefusal | FilterPass> {
    const ns = filter.owner;
    if (!this.cheap(filter, path)) return this.send(filter, method, path, client, 'cost');
    const left = this.left(ns);
    if (left.ms <= 0) return this.send(filter, method, path, client, 'budget');
    return this.run(filter, method, path, left);
  }

  /** Whether checking `path` against `filter` is cheap enough for the event loop at any time. */
  cheap(filter: PathFilter, path: string): boolean {
    return filter.size * path.length <= this.limits.onThreadCost;
  }

  /** Whether a check that must be answered at once may run on the event loop now: cheap, and
   * its namespace has event-loop time left (else the caller does without it). */
  mayRunNow(filter: PathFilter, path: string): boolean {
    return this.cheap(filter, path) && this.left(filter.owner).ms > 0;
  }

  /** Runs `filter` on the event loop whatever it costs, charged to its namespace (for
   * questions that must be answered at once: a held session's access asked again). */
  checkNow(filter: PathFilter, method: string, path: string): FilterRefusal | FilterPass {
    return this.run(filter, method, path, this.left(filter.owner));
  }

  private run(filter: PathFilter, method: string, path: string, left: { ms: number }): FilterRefusal | FilterPass {
    const start = this.now();
    const v = filter.check(method, path);
    const spent = this.now() - start;
    if (spent > this.limits.freeMs) {
      const had = left.ms;
      left.ms -= spent;
      if (had > 0 && left.ms <= 0) this.events.overBudget?.(filter.owner);
    }
    return v;
  }

  /** Stops the filter thread; checks waiting for it fail. */
  close(): void {
    const w = this.worker;
    this.worker = undefined;
    this.lost('the gateway is stopping');
    for (const q of this.waiting.values()) for (const x of q) x.fail(new FilterUnavailableError('the gateway is stopping'));
    this.waiting.clear();
    this.turns.length = 0;
    void w?.terminate();
  }

  private left(ns: string): { ms: number; at: number } {
    const now = this.now();
    let b = this.time.get(ns);
    if (!b) this.time.set(ns, (b = { ms: this.limits.burstMs, at: now }));
    b.ms = Math.min(this.limits.burstMs, b.ms + ((now - b.at) / 1000) * this.limits.msPerSecond);
    b.at = now;
    return b;
  }

  private send(filter: PathFilter, method: string, path: string, client: FilterClient | undefined, why: 'cost' | 'budget'): Promise<FilterRefusal | FilterPass> {
    const ns = filter.owner;
    let q = this.waiting.get(ns);
    if (q && q.length >= this.limits.waitingPerNamespace) {
      this.events.refused?.(ns, 'busy');
      throw new FiltersBusyError(`the path filters of namespace ${ns} have ${q.length} checks waiting for the filter thread; try again`, `${filter.field}.acceptPaths`);
    }
    const { acceptPaths, rejectPaths, rejectMethods } = filter.spec;
    this.events.sent?.(ns, why);
    const job: FilterJob = { id: ++this.nextId, owner: ns, field: filter.field, spec: { acceptPaths, rejectPaths, rejectMethods }, method, path };
    return new Promise((done, fail) => {
      if (!q) this.waiting.set(ns, (q = []));
      q.push({ job, done, fail, client });
      if (q.length === 1) this.turns.push(ns);
      this.next();
    });
  }

  /** Sends the next waiting check (namespaces in turn) when the thread is free. */
  private next(): void {
    while (!this.running && this.turns.length) {
      const ns = this.turns.shift()!;
      const q = this.waiting.get(ns)!;
      const w = q.shift()!;
      if (q.length) this.turns.push(ns);
      else this.waiting.delete(ns);
      if (w.client?.destroyed) {
        w.fail(new FilterUnavailableError('the client left before its path was checked'));
        continue;
      }
      this.running = w;
      this.offThread++;
      try {
        this.thread().postMessage(w.job);
      } catch (err) {
        this.running = undefined;
        this.failed(w, `the filter thread could not start: ${(err as Error).message}`);
        continue;
      }
      if (this.online) this.timeCheck(w); // (a new thread's start is not counted: timed once it is online)
    }
  }

  private timeCheck(w: Waiting): void {
    w.timer = setTimeout(() => this.tooLong(w), this.limits.threadCheckMs);
    w.timer.unref();
  }

  /** The check `w` has run for threadCheckMs: stopped with its thread (a new one takes the next).
   * Decided after the loop's poll phase: an answer that came meanwhile (the loop was busy) wins. */
  private tooLong(w: Waiting): void {
    setImmediate(() => this.stopIfRunning(w));
  }

  private stopIfRunning(w: Waiting): void {
    if (this.running !== w) return;
    const worker = this.worker;
    this.worker = undefined;
    this.running = undefined;
    this.failed(w, `its path filters took over ${this.limits.threadCheckMs} ms on the filter thread`);
    void worker?.terminate();
    this.next();
  }

  private thread(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(new URL('./filter-thread.js', import.meta.url), { resourceLimits: { maxOldGenerationSizeMb: this.limits.threadHeapMb } });
    w.unref();
    this.online = false;
    w.on('message', (a: FilterAnswer) => {
      if ('ready' in a) {
        // loaded: the check it holds is timed from now (its start is not the check's cost)
        if (this.worker !== w) return;
        this.online = true;
        if (this.running && !this.running.timer) this.timeCheck(this.running);
        return;
      }
      const r = this.running;
      if (!r || r.job.id !== a.id) return;
      clearTimeout(r.timer);
      this.running = undefined;
      if ('error' in a) this.failed(r, `the path filters failed: ${a.error}`);
      else r.done(a.refused);
      this.next();
    });
    const stopped = (why: string) => {
      if (this.worker !== w) return;
      this.worker = undefined;
      this.lost(why);
      this.next();
    };
    w.on('error', (err) => stopped(err.message));
    w.on('exit', (code) => stopped(`exit code ${code}`));
    return (this.worker = w);
  }

  /** The check the thread was running fails: the thread stopped. */
  private lost(why: string): void {
    const r = this.running;
    this.running = undefined;
    clearTimeout(r?.timer);
    if (r) this.failed(r, `the filter thread stopped while checking this path: ${why}`);
  }

  private failed(w: Waiting, why: string): void {
    this.events.refused?.(w.job.owner, 'failed');
    w.fail(new FilterUnavailableError(why));
  }
}
