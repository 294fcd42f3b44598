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
   * burst; a group past it waits until it is back (default: no bound). */
  groupTime?: { msPerSecond: number; burstMs: number };
  /** Metrics: adds, rate-limited re-adds, depth, and time keys wait. */
  hooks?: { add(): void; retry(): void; depth(n: number): void; waited(seconds: number): void };
  clock?: Clock;
}

export class WorkQueue {
  /** Waiting keys per group, FIFO; the groups with keys, in turn order. */
  private readonly groups = new Map<string, string[]>();
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
  /** Each group's retry bucket, while it is not full. */
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  /** Each group's time bucket (groupTime), while it is not full; and when a paused group may go on. */
  private readonly time = new Map<string, { tokens: number; at: number }>();
  private readonly paused = new Map<string, number>();
  private wake: Timer | undefined;
  private readonly clock: Clock;

  constructor(private readonly opts: QueueOptions = {}) {
    this.clock = opts.clock ?? realClock;
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
    this.addAfter(key, Math.max(perKey, this.bucketDelay(this.opts.groupOf?.(key) ?? '')));
  }

  forget(key: string): void {
    this.failures.delete(key);
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

  /** The group's work took `ms` of the event loop (groupTime): past its share, it waits. */
  charge(group: string, ms: number): void {
    const t = this.opts.groupTime;
    if (!t || ms <= 0) return;
    const now = this.clock.now();
    const b = this.time.get(group) ?? { tokens: t.burstMs, at: now };
    b.tokens = Math.min(t.burstMs, b.tokens + ((now - b.at) / 1000) * t.msPerSecond) - ms;
    b.at = now;
    this.time.set(group, b);
    if (b.tokens < 0) {
      this.paused.set(group, now + (-b.tokens / t.msPerSecond) * 1000);
      this.scheduleWake();
    }
    // full again (refilled) is no entry: only the groups that spent lately are kept
    if (this.time.size > 1024) for (const [g, x] of this.time) if (x.tokens + ((now - x.at) / 1000) * t.msPerSecond >= t.burstMs) this.time.delete(g);
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
    const until = this.paused.get(group);
    if (until === undefined) return false;
    if (until > this.clock.now()) return true;
    this.paused.delete(group);
    return false;
  }

  /** Hands keys of groups whose pause ended to waiting workers, at the earliest end. */
  private scheduleWake(): void {
    if (this.wake) this.clock.clearTimeout(this.wake);
    this.wake = undefined;
    if (this.closed || !this.paused.size) return;
    const ms = Math.max(1, Math.min(...this.paused.values()) - this.clock.now());
    this.wake = this.clock.setTimeout(() => {
      this.wake = undefined;
      while (this.waiters.length) {
        const key = this.take();
        if (key === undefined) break;
        this.waiters.shift()!(key);
      }
      for (const [g, until] of this.paused) if (until <= this.clock.now()) this.paused.delete(g);
      this.scheduleWake();
    }, ms);
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
    if (waiting) waiting.push(key);
    else {
      this.groups.set(g, [key]);
      this.turns.push(g);
    }
    this.count++;
  }

  /** The first key of the first group in turn that is not paused; the group goes to the back if it has more. */
  private shift(): string | undefined {
    const at = this.paused.size ? this.turns.findIndex((x) => !this.isPaused(x)) : 0;
    if (at < 0 || !this.turns.length) return undefined;
    const g = this.turns.splice(at, 1)[0]!;
    const waiting = this.groups.get(g)!;
    const key = waiting.shift()!;
    if (waiting.length) this.turns.push(g);
    else this.groups.delete(g);
    this.count--;
    return key;
  }

  private bucketDelay(group: string): number {
    const qps = this.opts.qps ?? 10;
    const burst = this.opts.burst ?? 100;
    const now = this.clock.now();
    const refilled = (b: { tokens: number; at: number }) => Math.min(burst, b.tokens + ((now - b.at) / 1000) * qps);
    const b = this.buckets.get(group) ?? { tokens: burst, at: now };
    b.tokens = refilled(b) - 1;
    b.at = now;
    if (!this.buckets.has(group)) {
      // a full bucket is no entry: the namespaces that failed lately are what is kept
      if (this.buckets.size >= 1024) for (const [g, x] of this.buckets) if (refilled(x) >= burst) this.buckets.delete(g);
      this.buckets.set(group, b);
    }
    return b.tokens >= 0 ? 0 : (-b.tokens / qps) * 1000;
  }
}
