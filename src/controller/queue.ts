// A work queue with client-go's guarantees: de-duplicating, never the same key in two workers at
// once, per-key exponential backoff (5 ms -> 1000 s) under a token bucket. Fair between groups
// (namespaces): FIFO within a group, groups take turns, so one team's thousands of keys do not
// make another team's key wait behind them all; and each group has a bucket of its own, so one
// team's failing reconciles do not make another team's retries wait (client-go's is global); and,
// with groupTime, a share of the event loop (`charge`): a group past it waits, the others go on.
import { realClock, type Clock, type Timer } from '../clock.js';

export interface QueueOptions {
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Each group's bucket for rate-limited re-adds: tokens per second and burst. */
  qps?: number;
  burst?: number;
  /** The group a key takes turns in (default: one group, plain FIFO). */
  groupOf?: (key: string) => string;
  /** Each group's share of the event loop for its work (`charge`): milliseconds per second, and
   * burst; a group past it waits until it is back (default: no bound). Reading charges while it
   * waits take it at most `maxReadingDebtMs` into debt (`charge`). */
  groupTime?: { msPerSecond: number; burstMs: number };
  /** Metrics: adds, rate-limited re-adds, depth, and time keys wait. */
  hooks?: { add(): void; retry(): void; depth(n: number): void; waited(seconds: number): void };
  clock?: Clock;
}

export class WorkQueue {
  /** Waiting keys per group, FIFO (a Set: a key dropped is found without a scan), each read by one
   * iterator (a new one skips every slot deleted before it: draining a group of 50,000 took
   * ~0.4 s); the groups with keys, in turn order. */
  private readonly groups = new Map<string, { keys: Set<string>; order: Iterator<string> }>();
  private turns: string[] = [];
  private count = 0;
  private readonly dirty = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly failures = new Map<string, number>();
  /** Keys waiting to be added (addAfter): one timer per key, the earliest. */
  private readonly later = new Map<string, { at: number; timer: Timer }>();
  private readonly enqueuedAt = new Map<string, number>();
  private waiters: Array<(key: string | undefined) => void> = [];
  private closed = false;
  /** Each group's retry bucket (qps, burst), and its event-loop time bucket (groupTime). */
  private readonly buckets: GroupBuckets;
  private readonly time: GroupBuckets | undefined;
  private wake: Timer | undefined;
  private readonly clock: Clock;

  constructor(private readonly opts: QueueOptions = {}) {
    this.clock = opts.clock ?? realClock;
    this.buckets = new GroupBuckets(opts.qps ?? 10, opts.burst ?? 100);
    this.time = opts.groupTime && new GroupBuckets(opts.groupTime.msPerSecond, opts.groupTime.burstMs, maxReadingDebtMs);
  }

  get depth(): number {
    return this.count;
  }

  add(key: string): void {
    if (this.closed || this.dirty.has(key)) return;
    this.opts.hooks?.add();
    this.dirty.add(key);
    if (this.processing.has(key)) return;
    const w = this.isPaused(this.opts.groupOf?.(key) ?? '') ? undefined : this.waiters.shift();
    if (w) {
      this.dirty.delete(key);
      this.processing.add(key);
      w(key);
    } else {
      this.push(key);
      this.enqueuedAt.set(key, this.clock.now());
      this.opts.hooks?.depth(this.count);
    }
  }

  /** Adds `key` after `ms`; a key already waiting keeps the earlier of the two times (one
   * timer per key, as client-go's delaying queue: a gateway re-annotated in a loop with a far
   * notAfter does not pile up timers). */
  addAfter(key: string, ms: number): void {
    if (this.closed) return;
    if (ms <= 0) return this.add(key);
    const at = this.clock.now() + ms;
    const waiting = this.later.get(key);
    if (waiting && waiting.at <= at) return;
    if (waiting) this.clock.clearTimeout(waiting.timer);
    const timer = this.clock.setTimeout(() => { this.later.delete(key); this.add(key); }, ms);
    timer.unref?.();
    this.later.set(key, { at, timer });
  }

  /** Re-adds a key that failed, after its backoff (and its group's bucket's) delay. */
  addRateLimited(key: string): void {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    this.opts.hooks?.retry();
    const perKey = Math.min(this.opts.maxDelayMs ?? 1_000_000, (this.opts.baseDelayMs ?? 5) * 2 ** n);
    this.addAfter(key, Math.max(perKey, this.buckets.take(this.opts.groupOf?.(key) ?? '', 1, this.clock.now())));
  }

  forget(key: string): void {
    this.failures.delete(key);
  }

  /** Drops the time `key` was to be added again (its object is gone): a team deleting gateways
   * with a far notAfter does not leave an entry and a timer each for up to an hour. */
  cancel(key: string): void {
    const waiting = this.later.get(key);
    if (!waiting) return;
    this.clock.clearTimeout(waiting.timer);
    this.later.delete(key);
  }

  /** Takes back a waiting key whose object is gone and had nothing made for it (its reconcile
   * would do nothing): a team creating and deleting gateways of new names while its group is
   * paused (its share spent) left one entry each until the pause ended. One being reconciled is
   * added again instead (the reconcile may have read it before it went). */
  drop(key: string): void {
    this.cancel(key);
    if (this.processing.has(key)) return this.add(key);
    this.failures.delete(key);
    if (!this.dirty.delete(key)) return;
    const g = this.opts.groupOf?.(key) ?? '';
    const waiting = this.groups.get(g)!;
    waiting.keys.delete(key);
    if (!waiting.keys.size) {
      this.groups.delete(g);
      this.turns.splice(this.turns.indexOf(g), 1);
    }
    this.enqueuedAt.delete(key);
    this.count--;
    this.opts.hooks?.depth(this.count);
  }

  numRequeues(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /** The next key, or undefined after shutdown. Call done(key) when finished with it. */
  get(): Promise<string | undefined> {
    if (this.closed) return Promise.resolve(undefined);
    const key = this.take();
    if (key !== undefined) return Promise.resolve(key);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** The group's work took `ms` of the event loop (groupTime): past its share, it waits.
   * `reading`: the time its objects' watch events took to read, which come whether it waits or
   * not: made while it waits, they take it at most `maxReadingDebtMs` into debt (a reconcile's count
   * whole, however many run at once). */
  charge(group: string, ms: number, reading = false): void {
    if (this.time && ms > 0 && this.time.take(group, ms, this.clock.now(), reading) > 0) this.scheduleWake();
  }

  private take(): string | undefined {
    const key = this.shift();
    if (key === undefined) return undefined;
    const at = this.enqueuedAt.get(key);
    this.enqueuedAt.delete(key);
    if (at !== undefined) this.opts.hooks?.waited((this.clock.now() - at) / 1000);
    this.opts.hooks?.depth(this.count);
    this.dirty.delete(key);
    this.processing.add(key);
    return key;
  }

  private isPaused(group: string): boolean {
    return (this.time?.wait(group, this.clock.now()) ?? 0) > 0;
  }

  /** Hands keys of groups whose pause ended to waiting workers, at the earliest end. */
  private scheduleWake(): void {
    if (this.wake) this.clock.clearTimeout(this.wake);
    this.wake = undefined;
    const ms = this.closed ? 0 : this.time?.soonest(this.clock.now()) ?? 0;
    if (!ms) return;
    this.wake = this.clock.setTimeout(() => {
      this.wake = undefined;
      while (this.waiters.length) {
        const key = this.take();
        if (key === undefined) break;
        this.waiters.shift()!(key);
      }
      this.scheduleWake();
    }, Math.max(1, ms));
    this.wake.unref?.();
  }

  done(key: string): void {
    this.processing.delete(key);
    if (this.dirty.has(key)) {
      this.dirty.delete(key);
      this.add(key);
    }
  }

  shutdown(): void {
    this.closed = true;
    if (this.wake) this.clock.clearTimeout(this.wake);
    for (const w of this.later.values()) this.clock.clearTimeout(w.timer);
    this.later.clear();
    for (const w of this.waiters) w(undefined);
    this.waiters = [];
  }

  private push(key: string): void {
    const g = this.opts.groupOf?.(key) ?? '';
    const waiting = this.groups.get(g);
    if (waiting) waiting.keys.add(key);
    else {
      const keys = new Set([key]);
      this.groups.set(g, { keys, order: keys.values() }); // (sees keys added later; never done while any is left)
      this.turns.push(g);
    }
    this.count++;
  }

  /** The first key of the first group in turn that is not paused; the group goes to the back if it has more. */
  private shift(): string | undefined {
    const at = this.time ? this.turns.findIndex((x) => !this.isPaused(x)) : 0;
    if (at < 0 || !this.turns.length) return undefined;
    const g = this.turns.splice(at, 1)[0]!;
    const waiting = this.groups.get(g)!;
    const key = waiting.order.next().value!;
    waiting.keys.delete(key);
    if (waiting.keys.size) this.turns.push(g);
    else this.groups.delete(g);
    this.count--;
    return key;
  }
}

/** The most reading charges made while a group waits take it into debt (its wait then). */
const maxReadingDebtMs = 60_000;

/** Token buckets by group, each refilling `perSecond` up to `burst`; a full one is no entry: only
 * the groups that spent lately are kept (past 1,024, the full ones are dropped). A `bounded` take
 * made in debt goes at most `maxReadingDebtMs`' worth into it (a team's watch events, charged while
 * it waited, kept it waiting for as long again as they lasted); any other counts whole. */
class GroupBuckets {
  private readonly kept = new Map<string, { tokens: number; at: number }>();
  private readonly floor: number;

  constructor(private readonly perSecond: number, private readonly burst: number, maxWaitMs = Infinity) {
    this.floor = -(perSecond * maxWaitMs) / 1000;
  }

  get size(): number {
    return this.kept.size;
  }

  /** Takes `n` from the group's bucket; returns the ms until it is out of debt (0: it is not). */
  take(group: string, n: number, now: number, bounded = false): number {
    let b = this.kept.get(group);
    if (!b) {
      if (this.kept.size >= 1024) for (const [g, x] of this.kept) if (this.level(x, now) >= this.burst) this.kept.delete(g);
      this.kept.set(group, (b = { tokens: this.burst, at: now }));
    }
    const level = this.level(b, now);
    b.tokens = bounded && level < 0 ? Math.max(Math.min(level, this.floor), level - n) : level - n;
    b.at = now;
    return this.wait(group, now);
  }

  /** The ms until the group's bucket is out of debt (0: it is not). */
  wait(group: string, now: number): number {
    const b = this.kept.get(group);
    const level = b ? this.level(b, now) : 0;
    return level < 0 ? (-level / this.perSecond) * 1000 : 0;
  }

  /** The ms until the first group in debt is out of it (0: none is). */
  soonest(now: number): number {
    let ms = 0;
    for (const g of this.kept.keys()) {
      const w = this.wait(g, now);
      if (w > 0 && (!ms || w < ms)) ms = w;
    }
    return ms;
  }

  private level(b: { tokens: number; at: number }, now: number): number {
    if (now < b.at) b.at = now; // a clock stepped back: no time passed (not an hour of debt)
    return Math.min(this.burst, b.tokens + ((now - b.at) / 1000) * this.perSecond);
  }
}
