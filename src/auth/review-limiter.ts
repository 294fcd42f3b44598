// A process-wide cap on TokenReviews in flight, fair between teams: callers over the cap wait in
// one queue per gateway namespace, and freed slots go to the namespaces round-robin, so a team
// flooding its gateway delays another team's request by at most one review per waiting team.
// Each queue is bounded in length and waiting time; over the bound the answer is 503 with
// Retry-After (fail closed, never open).
import { AuthUnavailableError } from '../errors.js';
import { realClock, type Clock, type Timer } from '../clock.js';
import type { ReviewResult, TokenReviewer } from './identity.js';

export type RefusalReason = 'queue_full' | 'timeout';

export interface FairLimiterOptions {
  maxInFlight: number;
  /** Waiting callers per namespace; default 64. */
  maxQueue?: number;
  /** Longest wait for a slot; default 5 s (the TokenReview timeout). */
  maxWaitMs?: number;
  /** Retry-After of a refusal; default 1 s. */
  retryAfterSeconds?: number;
  clock?: Clock;
  /** What is limited, in refusal messages; default "token review". */
  what?: string;
  /** Metrics: in flight after each change; a refusal; a namespace seen for the first time. */
  onInFlight?: (n: number) => void;
  onRefused?: (namespace: string, reason: RefusalReason) => void;
  onNamespace?: (namespace: string) => void;
}

interface Waiter {
  resolve: () => void;
  timer: Timer | undefined;
}

export class FairLimiter {
  private active = 0;
  /** Waiting callers per namespace (only non-empty queues are kept). */
  private readonly queues = new Map<string, Waiter[]>();
  /** Namespaces with waiters, in the order they are served next. */
  private readonly ring: string[] = [];
  private readonly seen = new Set<string>();
  readonly maxInFlight: number;
  private readonly maxQueue: number;
  private readonly maxWaitMs: number;
  private readonly retryAfter: number;
  private readonly clock: Clock;

  constructor(private readonly opts: FairLimiterOptions) {
    if (!Number.isInteger(opts.maxInFlight) || opts.maxInFlight < 1) throw new Error('maxInFlight must be a positive integer');
    this.maxInFlight = opts.maxInFlight;
    this.maxQueue = opts.maxQueue ?? 64;
    this.maxWaitMs = opts.maxWaitMs ?? 5_000;
    this.retryAfter = opts.retryAfterSeconds ?? 1;
    this.clock = opts.clock ?? realClock;
  }

  get inFlight(): number {
    return this.active;
  }

  /** Callers waiting for a slot, per namespace. */
  waiting(namespace: string): number {
    return this.queues.get(namespace)?.length ?? 0;
  }

  /** Runs `fn` in a slot (waiting for one in `namespace`'s queue if needed). */
  async run<T>(namespace: string, fn: () => Promise<T>): Promise<T> {
    await this.acquire(namespace);
    try {
      return await fn();
    } finally {
      this.active--;
      this.dispatch();
    }
  }

  private acquire(ns: string): Promise<void> {
    if (!this.seen.has(ns)) {
      this.seen.add(ns);
      this.opts.onNamespace?.(ns);
    }
    // Nobody waiting: take a free slot at once. Otherwise queue, never cut in line.
    if (this.active < this.maxInFlight && this.ring.length === 0) {
      this.active++;
      this.opts.onInFlight?.(this.active);
      return Promise.resolve();
    }
    let q = this.queues.get(ns);
    if ((q?.length ?? 0) >= this.maxQueue) return Promise.reject(this.refuse(ns, 'queue_full'));
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = { resolve, timer: undefined };
      w.timer = this.clock.setTimeout(() => {
        this.remove(ns, w);
        reject(this.refuse(ns, 'timeout'));
      }, this.maxWaitMs);
      if (!q) {
        this.queues.set(ns, (q = []));
        this.ring.push(ns);
      }
      q.push(w);
    });
  }

  private dispatch(): void {
    while (this.active < this.maxInFlight && this.ring.length > 0) {
      const ns = this.ring.shift()!;
      const q = this.queues.get(ns)!;
      const w = q.shift()!;
      if (q.length > 0) this.ring.push(ns);
      else this.queues.delete(ns);
      if (w.timer) this.clock.clearTimeout(w.timer);
      this.active++;
      w.resolve();
    }
    this.opts.onInFlight?.(this.active);
  }

  private remove(ns: string, w: Waiter): void {
    const q = this.queues.get(ns);
    if (!q) return;
    const i = q.indexOf(w);
    if (i >= 0) q.splice(i, 1);
    if (q.length === 0) {
      this.queues.delete(ns);
      const r = this.ring.indexOf(ns);
      if (r >= 0) this.ring.splice(r, 1);
    }
  }

  private refuse(ns: string, reason: RefusalReason): AuthUnavailableError {
    this.opts.onRefused?.(ns, reason);
    const what = this.opts.what ?? 'token review';
    return new AuthUnavailableError(reason === 'queue_full'
      ? `${what} unavailable: too many ${what}s are waiting for gateways of this namespace; retry later`
      : `${what} unavailable: no ${what} slot became free in time; retry later`, { retryAfterSeconds: this.retryAfter });
  }
}

/** A TokenReviewer whose calls go through a FairLimiter, queued by the gateway's namespace. */
export class LimitedReviewer implements TokenReviewer {
  constructor(private readonly inner: TokenReviewer, readonly limiter: FairLimiter) {}

  review(token: string, audiences: string[], namespace = ''): Promise<ReviewResult> {
    return this.limiter.run(namespace, () => this.inner.review(token, audiences));
  }
}
