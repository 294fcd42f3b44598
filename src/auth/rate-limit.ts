// spec.rateLimit: a token bucket per caller identity, bounded in memory (oldest callers are
// forgotten first when the table is full; a forgotten caller starts with a full bucket), and a
// bucket full again (unused for burst / rate seconds) is forgotten when a new caller comes: it
// holds nothing a new one would not.
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
      // the least recently used, while full again (two at most: each new caller pays for itself)
      for (let i = 0; i < 2; i++) {
        const oldest = this.buckets.entries().next().value;
        if (!oldest || !oldest[1].fullAt(t)) break;
        this.buckets.delete(oldest[0]);
      }
      b = new TokenBucket(this.rate, t, this.burst);
    }
    this.buckets.set(caller, b);
    return b.take(t) ? 0 : b.secondsUntilOne();
  }
}
