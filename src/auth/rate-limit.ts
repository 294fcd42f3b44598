// spec.rateLimit: a token bucket per caller identity, bounded in memory (oldest callers are
// forgotten first when the table is full; a forgotten caller starts with a full bucket).

export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

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
      b.tokens = Math.min(this.burst, b.tokens + (Math.max(0, t - b.at) / 1000) * this.rate); // (a clock stepped back adds nothing)
      b.at = t;
    } else {
      if (this.buckets.size >= this.maxCallers) this.buckets.delete(this.buckets.keys().next().value!);
      b = { tokens: this.burst, at: t };
    }
    this.buckets.set(caller, b);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return (1 - b.tokens) / this.rate;
  }
}
