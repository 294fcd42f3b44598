// Where routes' path filters run. RE2 is linear in the path, but a team's patterns can still cost
// milliseconds per request, and the event loop is every team's. A check runs on the event loop
// while it is cheap (its filter's size times the path's length) and its namespace has event-loop
// time left (a bucket refilled every second); otherwise on a filter thread, where a namespace
// waits behind its own checks and namespaces take turns, so one team's patterns cannot stall the
// gateways of the others (the tenancy invariant). Two threads, two lanes: checks run on the quick
// lane's thread; one whose match has run over quickCheckMs there is stopped when another namespace
// waits (its thread replaced by a spare already loaded) and runs again on the slow lane's thread.
// A namespace goes there for a while (a second give-way, a slow match, a timeout, its quick-lane
// share spent), where its checks wait only for other slow namespaces', and, once its share of that
// thread is spent, for its time again. A namespace whose check ran over threadCheckMs is refused
// (503) for a back-off.
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
  /** A check that takes longer on a filter thread is stopped (the thread replaced) and answered
   * 503, and its namespace's checks on the threads are refused (503) for backoffMs, doubled at each
   * such check while it keeps timing out (at most maxBackoffMs; back to backoffMs after a quiet
   * back-off). */
  threadCheckMs: number;
  backoffMs: number;
  maxBackoffMs: number;
  /** A check that runs longer on the quick lane, while another namespace waits there, is stopped (a
   * spare thread takes the lane) and sent again on the slow lane: so a namespace whose checks are
   * quick waits for another's at most this long. */
  quickCheckMs: number;
  /** A namespace goes to the slow lane for slowForMs when a match of its took over slowCheckMs (the
   * thread's clock), its check ran over threadCheckMs, or it gave way twice within slowForMs. */
  slowCheckMs: number;
  slowForMs: number;
  /** A namespace's checks may take this much of the quick lane's thread a second (matching, at most
   * what its size could take, and compiling that was its churn, as the thread measures them;
   * giveWayMs for each check that gave way), in bursts of quickBurstMs: past it, its checks go to
   * the slow lane (a team churning through more filters than a thread keeps compiled made every
   * check of its compile, each holding the lane ~25 ms). */
  quickMsPerSecond: number;
  quickBurstMs: number;
  /** A namespace's checks may take this much of the slow lane's thread a second (as on the quick
   * lane), in bursts of slowBurstMs: past it, its checks wait there until it has time again, and
   * other namespaces' go first (a red team: one namespace's slow checks kept the thread, a CPU of
   * the machine's two, busy, and another team's p99 went from 2.9 to 8.3 ms). */
  slowMsPerSecond: number;
  slowBurstMs: number;
  /** A check that has waited this long on the slow lane for its namespace's time there is answered
   * 429 with Retry-After: 1 (64 waiting, each up to threadCheckMs, were ~80 s). */
  maxWaitMs: number;
  /** What a check giving way costs its namespace's quick-lane share when its size could make it
   * slow: its thread is replaced, and every namespace compiles its filters again on the new one
   * (one that could not gives way at most once a second for its namespace). */
  giveWayMs: number;
  /** The slowest a match runs, µs per unit of filter size × path length (~0.5 at worst: see
   * onThreadCost). A check whose size × length could not take a time at this rate is not held
   * against its namespace when it does (its thread waited for a CPU): it is not backed off or
   * moved to the slow lane for it (it is still stopped and answered 503 past threadCheckMs). */
  usPerCost: number;
  /** The filter thread's old-generation heap (MiB): past it the thread stops, its check is answered
   * 503 and a new thread takes the next. It keeps at most 32 compiled filters (up to ~2 MiB each,
   * 0.2-0.4 MiB usual) within threadKeptMb, and no DFA state between checks; a check builds at most
   * 96 patterns' 32 KiB.
   * Its young generation is a quarter of this. Both come on top of the main heap in the pod's
   * memory limit. */
  threadHeapMb: number;
  /** What the thread's kept compiled filters may hold (MiB, estimated; default 30% of threadHeapMb):
   * past it the least recently used go (32 filters at the schema's bounds took it past its heap). */
  threadKeptMb?: number;
}

export const defaultFilterLimits: FilterLimits = {
  onThreadCost: 16_384, msPerSecond: 20, burstMs: 100, freeMs: 0.05, waitingPerNamespace: 64, threadCheckMs: 250, threadHeapMb: 64,
  backoffMs: 1_000, maxBackoffMs: 60_000, quickCheckMs: 10, slowCheckMs: 50, slowForMs: 10_000, usPerCost: 0.5, quickMsPerSecond: 100, quickBurstMs: 250, giveWayMs: 50,
  slowMsPerSecond: 200, slowBurstMs: 500, maxWaitMs: 10_000,
};

/** What FilterChecks tells: a check sent to the thread (`why`: its cost, or its namespace's
 * event-loop time used up), one refused (`busy`: 429, `failed`: 503, `backoff`: 503 while its
 * namespace is backed off after a check ran too long), a namespace moved to the slow lane, a
 * namespace that has just used up its event-loop time. */
export interface FilterEvents {
  sent?(namespace: string, why: 'cost' | 'budget'): void;
  refused?(namespace: string, reason: 'busy' | 'failed' | 'backoff'): void;
  slow?(namespace: string): void;
  overBudget?(namespace: string): void;
}

/** The client connection of a check: when it is closed before its turn, the check is not sent. */
export interface FilterClient { readonly destroyed?: boolean }

interface Waiting {
  job: FilterJob; done: (r: FilterRefusal | FilterPass) => void; fail: (err: Error) => void; client: FilterClient | undefined;
  timer?: NodeJS.Timeout;
  /** On the quick lane: quickCheckMs from when its match began (its filter compiled). */
  quickTimer?: NodeJS.Timeout;
  /** Whether its match has begun (its filter compiled): a check still compiling is not to blame. */
  began?: boolean;
  /** Its filter's size × its path's length, and whether its match has run over quickCheckMs. */
  cost: number; over?: boolean;
  /** When it was sent (this.now()'s time). */
  since: number;
}

/** A filter thread: whether it has loaded, and the lane it serves (none: the spare). */
interface Thread { worker: Worker; online: boolean; lane: Lane | undefined }

/** Checks waiting for one thread, namespaces in turn. */
interface Lane {
  readonly quick: boolean;
  thread: Thread | undefined;
  running: Waiting | undefined;
  readonly waiting: Map<string, Waiting[]>;
  readonly turns: string[];
}

/** A namespace's standing on the threads: on the slow lane until `slowUntil`; refused until
 * `refusedUntil`, its last back-off `backoff`; when it last gave way (blamed, and not). */
interface Standing { slowUntil: number; refusedUntil: number; backoff: number; gaveWayAt: number; unblamedAt: number }

export class FilterChecks {
  /** Event-loop time left per namespace (ms), as of `at`. */
  private readonly time = new Map<string, { ms: number; at: number }>();
  /** Quick-lane and slow-lane thread time left per namespace (ms), as of `at`. */
  private readonly quickTime = new Map<string, { ms: number; at: number }>();
  private readonly slowTime = new Map<string, { ms: number; at: number }>();
  /** Set while every namespace waiting on the slow lane has spent its share there: the first
   * refill (at `slowWakeAt`, this.now()'s time). */
  private slowWake: NodeJS.Timeout | undefined;
  private slowWakeAt = Infinity;
  private readonly standing = new Map<string, Standing>();
  private readonly quick: Lane = { quick: true, thread: undefined, running: undefined, waiting: new Map(), turns: [] };
  private readonly slow: Lane = { quick: false, thread: undefined, running: undefined, waiting: new Map(), turns: [] };
  /** A thread loaded ahead, to take the quick lane's place when its thread is stopped. */
  private spare: Thread | undefined;
  private refilling = false;
  private nextId = 0;
  /** Checks sent to the filter threads so far. */
  offThread = 0;
  /** Threads started so far, and checks sent to a thread still loading (for tests). */
  threadsStarted = 0;
  coldSends = 0;

  constructor(private readonly limits: FilterLimits = defaultFilterLimits, private readonly events: FilterEvents = {},
    private readonly now: () => number = () => performance.now()) {}

  /**
   * Why `filter` refuses `method` `path`, or the pattern that lets it through: at once on the
   * event loop, or a promise of the filter thread's answer. Throws FiltersBusyError when the namespace has too many checks
   * waiting, FilterUnavailableError while it is backed off; rejects with FilterUnavailableError when the thread fails, its
   * check runs too long, or the client left (`client` closed) before its turn.
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

  /** Whether `ns`'s checks go to the slow lane now. */
  isSlow(ns: string): boolean {
    const s = this.standing.get(ns);
    return !!s && s.slowUntil > this.now();
  }

  /** Stops the filter threads; checks waiting for them fail. */
  close(): void {
    for (const lane of [this.quick, this.slow]) {
      const t = lane.thread;
      lane.thread = undefined;
      this.lost(lane, 'the gateway is stopping');
      for (const q of lane.waiting.values()) for (const x of q) x.fail(new FilterUnavailableError('the gateway is stopping'));
      lane.waiting.clear();
      lane.turns.length = 0;
      if (t) void t.worker.terminate();
    }
    this.standing.clear();
    clearTimeout(this.slowWake);
    this.slowWake = undefined;
    this.slowWakeAt = Infinity;
    const s = this.spare;
    this.spare = undefined;
    if (s) void s.worker.terminate();
  }

  private left(ns: string): { ms: number; at: number } {
    return refilled(this.time, ns, this.now(), this.limits.msPerSecond, this.limits.burstMs);
  }

  private standingOf(ns: string): Standing {
    let s = this.standing.get(ns);
    if (!s) this.standing.set(ns, (s = { slowUntil: 0, refusedUntil: 0, backoff: 0, gaveWayAt: -Infinity, unblamedAt: -Infinity }));
    return s;
  }

  private send(filter: PathFilter, method: string, path: string, client: FilterClient | undefined, why: 'cost' | 'budget'): Promise<FilterRefusal | FilterPass> {
    const ns = filter.owner;
    const s = this.standingOf(ns);
    const now = this.now();
    if (s.refusedUntil > now) {
      this.events.refused?.(ns, 'backoff');
      throw this.backedOff(ns, filter.field, s, now);
    }
    const waiting = (this.quick.waiting.get(ns)?.length ?? 0) + (this.slow.waiting.get(ns)?.length ?? 0);
    if (waiting >= this.limits.waitingPerNamespace) {
      this.events.refused?.(ns, 'busy');
      throw new FiltersBusyError(`the path filters of namespace ${ns} have ${waiting} checks waiting for the filter thread; try again`, `${filter.field}.acceptPaths`);
    }
    const { acceptPaths, rejectPaths, rejectMethods } = filter.spec;
    this.events.sent?.(ns, why);
    const job: FilterJob = { id: ++this.nextId, owner: ns, field: filter.field, key: filter.digest, spec: { acceptPaths, rejectPaths, rejectMethods }, method, path };
    return new Promise((done, fail) => {
      const w: Waiting = { job, client, done, fail, cost: filter.size * path.length, since: now };
      const lane = s.slowUntil > now ? this.slow : this.quick;
      this.enqueue(lane, w);
      // a quick-lane check that has run over its time gives way to this one (another namespace's)
      const r = this.quick.running;
      if (lane === this.quick && r?.over && r.job.owner !== ns && !client?.destroyed) setImmediate(() => { if (this.othersWait(r.job.owner)) this.giveWay(r); });
      this.next(lane);
    });
  }

  /** `first`: first of its namespace's; `turnFirst`: its namespace's turn first, if it has none. */
  private enqueue(lane: Lane, w: Waiting, first = false, turnFirst = false): void {
    const ns = w.job.owner;
    let q = lane.waiting.get(ns);
    if (!q) lane.waiting.set(ns, (q = []));
    if (first) q.unshift(w);
    else q.push(w);
    if (q.length === 1) {
      if (turnFirst) lane.turns.unshift(ns);
      else lane.turns.push(ns);
    }
  }

  /** Sends the lane's next waiting check (namespaces in turn) when its thread is free. */
  private next(lane: Lane): void {
    while (!lane.running && lane.turns.length) {
      const ns = lane.quick ? lane.turns.shift()! : this.slowTurn();
      if (ns === undefined) return; // (woken when one has time again)
      const q = lane.waiting.get(ns)!;
      const w = q.shift()!;
      if (q.length) lane.turns.push(ns);
      else lane.waiting.delete(ns);
      if (w.client?.destroyed) {
        w.fail(new FilterUnavailableError('the client left before its path was checked'));
        continue;
      }
      lane.running = w;
      this.offThread++;
      let t: Thread;
      try {
        t = this.thread(lane);
        t.worker.postMessage(w.job);
      } catch (err) {
        lane.running = undefined;
        this.failed(w, `the filter thread could not start: ${(err as Error).message}`);
        continue;
      }
      if (t.online) this.timeCheck(lane, w); // (a new thread's start is not counted: timed once it is online)
      else this.coldSends++;
    }
  }

  /** The first namespace in turn on the slow lane with time left there, taken from the turns;
   * when none has, undefined, and the lane is woken at the first refill. */
  private slowTurn(): string | undefined {
    const turns = this.slow.turns;
    const now = this.now();
    let soonest = Infinity;
    for (let i = 0; i < turns.length; i++) {
      const ns = turns[i]!;
      const b = refilled(this.slowTime, ns, now, this.limits.slowMsPerSecond, this.limits.slowBurstMs);
      if (b.ms > 0) return turns.splice(i, 1)[0];
      const since = this.expire(ns, now);
      if (since === undefined) i--; // (its last check gone: so is its turn)
      else soonest = Math.min(soonest, (-b.ms / this.limits.slowMsPerSecond) * 1000, since + this.limits.maxWaitMs - now);
    }
    // (woken at the first refill or expiry; a wake set later is brought forward: one namespace's
    // debt does not hold another's turn)
    if (soonest < Infinity && now + soonest < this.slowWakeAt) {
      clearTimeout(this.slowWake);
      this.slowWakeAt = now + soonest;
      this.slowWake = setTimeout(() => {
        this.slowWake = undefined;
        this.slowWakeAt = Infinity;
        this.next(this.slow);
      }, Math.ceil(soonest) + 1);
      this.slowWake.unref();
    }
    return undefined;
  }

  /** Fails `ns`'s checks waiting on the slow lane whose clients left or that have waited maxWaitMs
   * (429), wherever they wait (one that gave way goes first, and may be the newer); the earliest
   * time one left was sent, or undefined when none is left (its turn taken too). */
  private expire(ns: string, now: number): number | undefined {
    const q = this.slow.waiting.get(ns)!;
    let earliest = Infinity;
    for (let i = 0; i < q.length; i++) {
      const w = q[i]!;
      if (!w.client?.destroyed && now - w.since <= this.limits.maxWaitMs) {
        earliest = Math.min(earliest, w.since);
        continue;
      }
      q.splice(i--, 1);
      if (w.client?.destroyed) w.fail(new FilterUnavailableError('the client left before its path was checked'));
      else {
        this.events.refused?.(ns, 'busy');
        w.fail(new FiltersBusyError(`the path filters of namespace ${ns} have used their time on the filter thread; this check waited ${Math.round(now - w.since)} ms; try again`, `${w.job.field}.acceptPaths`));
      }
    }
    if (q.length) return earliest;
    this.takeQueue(this.slow, ns);
    return undefined;
  }

  /** Takes `ms` from `ns`'s share of the slow lane's thread. */
  private spendSlow(ns: string, ms: number): void {
    refilled(this.slowTime, ns, this.now(), this.limits.slowMsPerSecond, this.limits.slowBurstMs).ms -= ms;
  }

  /** Times `w` from now, to threadCheckMs (compiling its filter included). */
  private timeCheck(lane: Lane, w: Waiting): void {
    w.timer = setTimeout(() => setImmediate(() => this.tooLong(lane, w)), this.limits.threadCheckMs);
    w.timer.unref();
  }

  /** `w`'s match began on the quick lane (its filter compiled: compiling, a fresh thread's cost, is
   * not held against it): timed to quickCheckMs. */
  private matching(w: Waiting): void {
    if (this.limits.quickCheckMs >= this.limits.threadCheckMs) return;
    w.quickTimer = setTimeout(() => setImmediate(() => this.overQuick(w)), this.limits.quickCheckMs);
    w.quickTimer.unref();
  }

  /** `w`'s match has run quickCheckMs on the quick lane (decided after the loop's poll phase: an
   * answer that came meanwhile wins): it gives way at once if another namespace waits, else when
   * one comes, else it runs to threadCheckMs. */
  private overQuick(w: Waiting): void {
    if (this.quick.running !== w) return;
    // one whose size could not take so long (its thread waited for a CPU) gives way at most once a
    // second for its namespace: each stops a thread, and every namespace compiles again
    if (!this.couldTake(w, this.limits.quickCheckMs) && this.now() - this.standingOf(w.job.owner).unblamedAt < 1_000) return;
    w.over = true;
    if (this.othersWait(w.job.owner)) this.giveWay(w);
  }

  /** Whether a namespace but `ns` has a check waiting on the quick lane (its client still there). */
  private othersWait(ns: string): boolean {
    for (const [other, q] of this.quick.waiting) if (other !== ns && q.some((x) => !x.client?.destroyed)) return true;
    return false;
  }

  /** Stops the quick lane's thread running `w` (a spare takes its place) and sends `w` again on the
   * slow lane, first of its namespace's (and its namespace's turn first there, unless it is slow:
   * a check slow once waits only for the one running there). A namespace that gives way twice
   * within slowForMs goes to the slow lane, with its checks waiting on the quick lane (a check slow
   * once may only have waited for a CPU: it is judged again on the slow lane, by the time its match
   * took). */
  private giveWay(w: Waiting): void {
    if (this.quick.running !== w) return;
    const ns = w.job.owner;
    const s = this.standingOf(ns);
    const now = this.now();
    if (this.couldTake(w, this.limits.quickCheckMs)) {
      if (now - s.gaveWayAt < this.limits.slowForMs) this.slowed(ns);
      s.gaveWayAt = now;
      this.spendQuick(ns, this.limits.giveWayMs);
    } else {
      s.unblamedAt = now; // (its thread waited for a CPU: not its doing, but it stops a thread)
    }
    clearTimeout(w.timer);
    clearTimeout(w.quickTimer);
    w.timer = w.quickTimer = undefined;
    w.over = false;
    w.began = false; // (the slow lane's thread compiles its filter again: not its match)
    this.quick.running = undefined;
    this.retire(this.quick);
    this.enqueue(this.slow, w, true, !this.isSlow(ns));
    this.next(this.quick);
    this.next(this.slow);
  }

  /** Whether `w` could take `ms` at the slowest rate of a match (else it is not to blame for it). */
  private couldTake(w: Waiting, ms: number): boolean {
    return w.cost * this.limits.usPerCost >= ms * 1000;
  }

  /** `ns`'s checks go to the slow lane for slowForMs from now, those waiting on the quick lane too. */
  private slowed(ns: string): void {
    const s = this.standingOf(ns);
    if (s.slowUntil <= this.now()) this.events.slow?.(ns);
    s.slowUntil = this.now() + this.limits.slowForMs;
    const rest = this.takeQueue(this.quick, ns);
    if (!rest.length) return;
    for (const x of rest) this.enqueue(this.slow, x);
    setImmediate(() => this.next(this.slow)); // (after what its caller puts first there)
  }

  /** Takes `ns`'s waiting checks off `lane` (its turn too). */
  private takeQueue(lane: Lane, ns: string): Waiting[] {
    const q = lane.waiting.get(ns);
    if (!q) return [];
    lane.waiting.delete(ns);
    lane.turns.splice(lane.turns.indexOf(ns), 1); // (a namespace has a turn exactly while it has a queue)
    return q;
  }

  /** Takes `ms` from `ns`'s share of the quick lane's thread; past it, `ns` is slow. */
  private spendQuick(ns: string, ms: number): void {
    const b = refilled(this.quickTime, ns, this.now(), this.limits.quickMsPerSecond, this.limits.quickBurstMs);
    b.ms -= ms;
    if (b.ms < 0) this.slowed(ns);
  }

  /** The check `w` has run for threadCheckMs: stopped with its thread (a spare takes the next),
   * answered 503, its namespace backed off (unless its size × length could not take so long). */
  private tooLong(lane: Lane, w: Waiting): void {
    if (lane.running !== w) return;
    clearTimeout(w.quickTimer);
    lane.running = undefined;
    this.retire(lane);
    if (!w.began || !this.couldTake(w, this.limits.threadCheckMs)) {
      // (still compiling its filter, or its thread waited for a CPU: not its namespace's fault)
      this.failed(w, `the filter thread took over ${this.limits.threadCheckMs} ms to check this path`);
      return this.next(lane);
    }
    this.slowed(w.job.owner);
    if (!lane.quick) this.spendSlow(w.job.owner, this.limits.threadCheckMs);
    const s = this.standingOf(w.job.owner);
    const now = this.now();
    s.backoff = s.backoff && now < s.refusedUntil + s.backoff ? Math.min(this.limits.maxBackoffMs, 2 * s.backoff) : this.limits.backoffMs;
    s.refusedUntil = now + s.backoff;
    const ns = w.job.owner;
    this.failed(w, `its path filters took over ${this.limits.threadCheckMs} ms on the filter thread; the namespace's checks there are refused for ${Math.ceil(s.backoff / 1000)} s`);
    // and so are those it has waiting
    for (const x of [...this.takeQueue(this.quick, ns), ...this.takeQueue(this.slow, ns)]) {
      this.events.refused?.(ns, 'backoff');
      x.fail(this.backedOff(ns, x.job.field, s, now));
    }
    this.next(lane);
  }

  private backedOff(ns: string, field: string, s: Standing, now: number): Error {
    const seconds = Math.max(1, Math.ceil(Math.round(s.refusedUntil - now) / 1000)); // (whole ms: now + 1000 - now may be 1000.0000001)
    return new FilterUnavailableError(`the path filters of namespace ${ns} ran over ${this.limits.threadCheckMs} ms on the filter thread; its checks there are refused for ${seconds} s`,
      { step: 'filter', field: `${field}.acceptPaths`, retryAfterSeconds: seconds });
  }

  /** Stops the lane's thread; the next check takes the spare. */
  private retire(lane: Lane): void {
    const t = lane.thread;
    lane.thread = undefined;
    if (t) {
      t.lane = undefined;
      void t.worker.terminate();
    }
  }

  /** The lane's thread: its own, else (the quick lane) the spare, another spare started after this
   * turn, else a new one. The slow lane starts its own: its namespaces' stopped threads do not use
   * up the spare that a quick namespace's check would then wait for. */
  private thread(lane: Lane): Thread {
    if (lane.thread) return lane.thread;
    let t = lane.quick ? this.spare : undefined;
    if (t) this.spare = undefined;
    t ??= this.start();
    t.lane = lane;
    lane.thread = t;
    if (lane.quick && t.online) this.refill(); // (else once it is: two threads starting at once slow each other)
    return t;
  }

  /** Starts a spare after this turn (the check just sent is not kept waiting by a thread's start). */
  private refill(): void {
    if (this.refilling) return;
    this.refilling = true;
    setImmediate(() => {
      this.refilling = false;
      if (!this.spare && this.quick.thread) this.spare = this.start();
    });
  }

  private start(): Thread {
    const keptBytes = (this.limits.threadKeptMb ?? 0.3 * this.limits.threadHeapMb) * 1024 * 1024;
    const heapBytes = this.limits.threadHeapMb * 1024 * 1024;
    // (kept filters allowed more than the heap, as only tests do: the heap bound itself tested, nothing dropped)
    // (its young generation a quarter of that: V8's default, up to 192 MiB, made a 32 MiB thread
    // keeping 30% stop for its heap now and then, and a 24 MiB one each time)
    const resourceLimits = { maxOldGenerationSizeMb: this.limits.threadHeapMb, maxYoungGenerationSizeMb: Math.max(2, Math.floor(this.limits.threadHeapMb / 4)) };
    const w = new Worker(new URL('./filter-thread.js', import.meta.url), { resourceLimits,
      workerData: { keptBytes, heapBytes: keptBytes >= heapBytes ? Infinity : heapBytes } });
    w.unref();
    this.threadsStarted++;
    const t: Thread = { worker: w, online: false, lane: undefined };
    w.on('message', (a: FilterAnswer) => {
      const lane = t.lane;
      if ('ready' in a) {
        // loaded: the check it holds is timed from now (its start is not the check's cost)
        t.online = true;
        if (lane?.quick) this.refill();
        if (lane?.running && !lane.running.timer) this.timeCheck(lane, lane.running);
        return;
      }
      const r = lane?.running;
      if (!lane || !r || r.job.id !== a.id) return;
      if ('matching' in a) {
        r.began = true;
        if (lane.quick) this.matching(r);
        return;
      }
      clearTimeout(r.timer);
      clearTimeout(r.quickTimer);
      lane.running = undefined;
      if ('error' in a) {
        this.failed(r, `the path filters failed: ${a.error}`);
      } else {
        // a match that ran over slowCheckMs (as the thread measured it: not this loop's delay in
        // reading the answer) keeps or puts its namespace on the slow lane
        if (a.ms > this.limits.slowCheckMs && this.couldTake(r, this.limits.slowCheckMs)) this.slowed(r.job.owner);
        // its time is taken from its share of the lane's thread (past the quick lane's, it is slow;
        // past the slow lane's, it waits there); a match's time at most what its size could take
        // (a thread that waited for a CPU is not its doing)
        const took = Math.min(a.ms, (r.cost * this.limits.usPerCost) / 1000) + a.churnMs;
        if (lane.quick) this.spendQuick(r.job.owner, took);
        else this.spendSlow(r.job.owner, took);
        r.done(a.refused);
      }
      this.next(lane);
    });
    const stopped = (why: string) => {
      if (this.spare === t) this.spare = undefined;
      const lane = t.lane;
      if (!lane || lane.thread !== t) return;
      lane.thread = undefined;
      t.lane = undefined;
      this.lost(lane, why);
      this.next(lane);
    };
    w.on('error', (err) => stopped(err.message));
    w.on('exit', (code) => stopped(`exit code ${code}`));
    return t;
  }

  /** The check the lane's thread was running fails: the thread stopped. */
  private lost(lane: Lane, why: string): void {
    const r = lane.running;
    lane.running = undefined;
    clearTimeout(r?.timer);
    clearTimeout(r?.quickTimer);
    if (r) this.failed(r, `the filter thread stopped while checking this path: ${why}`);
  }

  private failed(w: Waiting, why: string): void {
    this.events.refused?.(w.job.owner, 'failed');
    w.fail(new FilterUnavailableError(why));
  }
}

/** `ns`'s bucket in `of`, refilled to now (`perSecond`, at most `burst`). */
function refilled(of: Map<string, { ms: number; at: number }>, ns: string, now: number, perSecond: number, burst: number): { ms: number; at: number } {
  let b = of.get(ns);
  if (!b) of.set(ns, (b = { ms: burst, at: now }));
  b.ms = Math.min(burst, b.ms + ((now - b.at) / 1000) * perSecond);
  b.at = now;
  return b;
}
