// spec.rateLimit: a token bucket per caller identity, bounded in memory (oldest callers are
// forgotten first when the table is full; a forgotten caller starts with a full bucket), and a
// bucket full again (unused for burst / rate seconds) is forgotten when a new caller comes: it
// holds nothing a new one would not. With a namespace's budget of buckets (CallerBudgets.buckets),
// each is one of it (a red team: 16 gateways' 10,000 buckets each, and as many in replaced tables,
// held ~142 MiB counted against no namespace).
import { TokenBucket } from '../bucket.js';
import type { EntryBudget } from './token-cache.js';

export class RateLimiter {
  private readonly buckets = new Map<string, TokenBucket>();
  /** Given back on close (its table replaced): what it counts afterwards is counted apart. */
  private budget: EntryBudget | undefined;

  constructor(readonly rate: number, readonly burst: number, private readonly maxCallers = 10_000,
    private readonly now: () => number = Date.now, budget?: EntryBudget) {
    this.budget = budget;
    budget?.join(this);
  }

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
      if (this.buckets.size >= this.maxCallers) this.drop(this.buckets.keys().next().value!);
      // the least recently used, while full again (two at most: each new caller pays for itself)
      for (let i = 0; i < 2; i++) {
        const oldest = this.buckets.entries().next().value;
        if (!oldest || !oldest[1].fullAt(t)) break;
        this.drop(oldest[0]);
      }
      // the namespace's buckets spent (none of them full again: swept when it is asked): the new
      // caller waits a token's time; a bucket still counting is never forgotten for it (its
      // caller would pass the limit, a review: two identities taking turns passed 999 of 1,000)
      if (this.budget && !this.budget.take()) return 1 / this.rate;
      b = new TokenBucket(this.rate, t, this.burst);
    }
    this.buckets.set(caller, b);
    return b.take(t) ? 0 : b.secondsUntilOne();
  }

  /** Forgets the buckets full again (the budget asks, when it is spent). */
  sweep(): void {
    const t = this.now();
    for (const [caller, b] of this.buckets) if (b.fullAt(t)) this.drop(caller);
  }

  /** Gives every bucket back to the budget (its table was replaced: the streams it still holds
   * take no tokens); a request admitted by that table meanwhile is still limited, counted apart. */
  close(): void {
    const b = this.budget;
    this.budget = undefined;
    b?.give(this.buckets.size);
    b?.leave(this);
    this.buckets.clear();
  }

  private drop(caller: string): void {
    if (this.buckets.delete(caller)) this.budget?.give();
  }
}
