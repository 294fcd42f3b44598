// spec.rateLimit: a token bucket per caller identity, bounded in memory (oldest callers are
// forgotten first when the table is full; a forgotten caller starts with a full bucket).
import { TokenBucket } from '../bucket.js';

export class RateLimiter {
  private readonly buckets = new Map<string, TokenBucket>();

  constructor(readonly rate: number, readonly burst: number, private readonly maxCallers = 10_000,
    private readonly now: () => number = Date.now) {}

  get callers(): number {
    return this.buckets.size;
  }

  /** 0 when allowed; else the seconds to wait before a token is available. */
  take(caller: string): number {
    const t = this.now();
    let b = this.buckets.get(caller);
    if (b) {
      this.buckets.delete(caller); // re-insert: Map order is least recently used first
    } else {
      if (this.buckets.size >= this.maxCallers) this.buckets.delete(this.buckets.keys().next().value!);
      b = new TokenBucket(this.rate, t, this.burst);
    }
    this.buckets.set(caller, b);
    return b.take(t) ? 0 : b.secondsUntilOne();
  }
}
