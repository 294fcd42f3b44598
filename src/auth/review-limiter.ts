// A process-wide cap on TokenReviews in flight, fair between teams: callers over the cap wait in
// one queue per gateway namespace, and freed slots go to the namespaces round-robin, so a team
// flooding its gateway delays another team's request by at most one review per waiting team.
// Each queue is bounded in length and waiting time, and one client address may hold an eighth of
// it (anyone who reaches a listener can send tokens that each need a review: from one address they
// cannot fill the team's queue); over a bound the answer is 503 with Retry-After (fail closed,
// never open). Anyone reaching a listener from eight addresses could still fill its namespace's
// queue with forged tokens: addresses whose last review there named a caller the gateway admits
// (`vouch`) wait in a lane of their own, served first in the namespace's turns.
import { AuthUnavailableError } from '../errors.js';
import { TokenBucket } from '../bucket.js';
import { realClock, type Clock, type Timer } from '../clock.js';
import type { ReviewResult, TokenReviewer } from './identity.js';

export type RefusalReason = 'queue_full' | 'source_full' | 'timeout';

export interface FairLimiterOptions {
  maxInFlight: number;
  /** Calls started per second over all namespaces, bursts of a second's worth (they wait their
   * namespace's turn as for a slot); default unbounded. Forged tokens with plausible claims each
   * cost a TokenReview: 16 in flight against a fast apiserver were thousands a second. */
  perSecond?: number;
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
  /** A background review for `namespace`'s gateways not made (tryRun refused it). */
  onPostponed?: (namespace: string) => void;
  onNamespace?: (namespace: string) => void;
}

/** A namespace's waiting callers: those from addresses whose last review there named a caller its
 * gateway admits first, then the rest; each lane holds at most maxQueue. */
interface Lanes { known: Waiter[]; rest: Waiter[] }

/** Addresses a namespace remembers as vouched for, at most (the least recent go). */
export const knownAddressesPerNamespace = 1024;

/** The key of a namespace's client address in `bySource`. */
function sourceOf(ns: string, address: string): string {
  return `${ns}\u0000${address}`;
}

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
  timer: Timer | undefined;
  /** the client address, when the caller named one */
  address: string | undefined;
}

/** A background review refused: no slot was free, someone waited, or the rate was spent (its
 * cached answer asks again soon). */
export class NoSlotNowError extends AuthUnavailableError {}

export class FairLimiter {
  private active = 0;
  /** Waiting callers per namespace (only non-empty queues are kept). */
  private readonly queues = new Map<string, Lanes>();
  /** By namespace, the addresses whose last review there named a caller its gateway admits (least recent first). */
  private readonly known = new Map<string, Set<string>>();
  /** By namespace, the addresses whose last review there named none (least recent first): their
   * waiters make room for others' (`makeRoom`). */
  private readonly refused = new Map<string, Set<string>>();
  /** Namespaces with waiters, in the order they are served next. */
  private readonly ring: string[] = [];
  private readonly seen = new Set<string>();
  /** Waiting callers per namespace and client address. */
  private readonly bySource = new Map<string, number>();
  readonly maxInFlight: number;
  private readonly maxQueue: number;
  /** Waiting callers one client address may hold of a namespace's queue: an eighth. */
  private readonly maxPerSource: number;
  private readonly maxWaitMs: number;
  private readonly retryAfter: number;
  private readonly clock: Clock;
  /** The rate (perSecond), if any. */
  private readonly rate: TokenBucket | undefined;
  private wake: Timer | undefined;

  constructor(private readonly opts: FairLimiterOptions) {
    if (!Number.isInteger(opts.maxInFlight) || opts.maxInFlight < 1) throw new Error('maxInFlight must be a positive integer');
    this.maxInFlight = opts.maxInFlight;
    this.maxQueue = opts.maxQueue ?? 64;
    this.maxPerSource = Math.max(1, Math.ceil(this.maxQueue / 8));
    this.maxWaitMs = opts.maxWaitMs ?? 5_000;
    this.retryAfter = opts.retryAfterSeconds ?? 1;
    this.clock = opts.clock ?? realClock;
    this.rate = opts.perSecond === undefined ? undefined : new TokenBucket(opts.perSecond, this.clock.now());
  }

  get inFlight(): number {
    return this.active;
  }

  /** Callers waiting for a slot, per namespace. */
  waiting(namespace: string): number {
    const q = this.queues.get(namespace);
    return q ? q.known.length + q.rest.length : 0;
  }

  /** Whether `address`'s last review for `namespace` named a caller its gateway admits (a forged
   * token's, or another team's, ends it): its callers then wait in the namespace's first lane. */
  vouch(namespace: string, address: string, admitted: boolean): void {
    const [to, from] = admitted ? [this.known, this.refused] : [this.refused, this.known];
    const was = from.get(namespace);
    if (was?.delete(address) && was.size === 0) from.delete(namespace);
    let mine = to.get(namespace);
    if (!mine) to.set(namespace, (mine = new Set()));
    mine.delete(address);
    mine.add(address);
    if (mine.size > knownAddressesPerNamespace) mine.delete(mine.values().next().value!);
  }

  /** Runs `fn` in a slot (waiting for one in `namespace`'s queue if needed); `source`: the
   * client's address, which may hold at most an eighth of that queue. */
  async run<T>(namespace: string, fn: () => Promise<T>, source?: string): Promise<T> {
    await this.acquire(namespace, source);
    try {
      return await fn();
    } finally {
      this.active--;
      this.dispatch();
    }
  }

  /** Runs `fn` only when a slot is free now and nobody waits, else refuses at once (counted by
   * onPostponed, not onRefused: no caller is refused): a background review (a cached answer's
   * renewal) never queues, so it never takes a place a waiting caller, or its client address,
   * would need. */
  async tryRun<T>(namespace: string, fn: () => Promise<T>): Promise<T> {
    if (!(this.active < this.maxInFlight && this.ring.length === 0 && this.take())) {
      this.opts.onPostponed?.(namespace);
      throw new NoSlotNowError(`${this.opts.what ?? 'token review'} not made in the background: no slot free now`);
    }
    this.active++;
    this.opts.onInFlight?.(this.active);
    try {
      return await fn();
    } finally {
      this.active--;
      this.dispatch();
    }
  }

  private acquire(ns: string, address: string | undefined): Promise<void> {
    if (!this.seen.has(ns)) {
      this.seen.add(ns);
      this.opts.onNamespace?.(ns);
    }
    // Nobody waiting: take a free slot at once. Otherwise queue, never cut in line.
    if (this.active < this.maxInFlight && this.ring.length === 0 && this.take()) {
      this.active++;
      this.opts.onInFlight?.(this.active);
      return Promise.resolve();
    }
    let q = this.queues.get(ns);
    // (a full first lane spills into the other)
    const lane: 'known' | 'rest' = address !== undefined && this.known.get(ns)?.has(address) && (q?.known.length ?? 0) < this.maxQueue ? 'known' : 'rest';
    const source = address === undefined ? undefined : sourceOf(ns, address);
    const held = source === undefined ? 0 : this.bySource.get(source) ?? 0;
    if (held >= this.maxPerSource) return Promise.reject(this.refuse(ns, 'source_full'));
    if ((q?.[lane].length ?? 0) >= this.maxQueue && !(lane === 'rest' && this.makeRoom(ns, q!.rest, address))) {
      return Promise.reject(this.refuse(ns, 'queue_full'));
    }
    if (source !== undefined) this.bySource.set(source, held + 1);
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = { resolve, reject, timer: undefined, address };
      w.timer = this.clock.setTimeout(() => {
        this.remove(ns, w);
        reject(this.refuse(ns, 'timeout'));
      }, this.maxWaitMs);
      if (!q) {
        this.queues.set(ns, (q = { known: [], rest: [] }));
        this.ring.push(ns);
      }
      q[lane].push(w);
      if (this.rate && this.active < this.maxInFlight) this.later(); // a slot is free: the rate held it back
    });
  }

  private dispatch(): void {
    while (this.active < this.maxInFlight && this.ring.length > 0) {
      if (!this.take()) {
        this.later();
        break;
      }
      const ns = this.ring.shift()!;
      const q = this.queues.get(ns)!;
      const w = (q.known.length > 0 ? q.known : q.rest).shift()!;
      if (q.known.length + q.rest.length > 0) this.ring.push(ns);
      else this.queues.delete(ns);
      if (w.timer) this.clock.clearTimeout(w.timer);
      this.left(ns, w);
      this.active++;
      w.resolve();
    }
    this.opts.onInFlight?.(this.active);
  }

  /** One call may start now under the rate (taken if so). */
  private take(): boolean {
    return this.rate?.take(this.clock.now()) ?? true;
  }

  /** Dispatches again when the rate lets the next call start. */
  private later(): void {
    if (this.wake) return;
    this.wake = this.clock.setTimeout(() => {
      this.wake = undefined;
      this.dispatch();
    }, this.rate!.msUntilOne());
  }

  private remove(ns: string, w: Waiter): void {
    const q = this.queues.get(ns);
    if (!q) return;
    for (const lane of [q.known, q.rest]) {
      const i = lane.indexOf(w);
      if (i >= 0) {
        lane.splice(i, 1);
        this.left(ns, w);
      }
    }
    if (q.known.length + q.rest.length === 0) {
      this.queues.delete(ns);
      const r = this.ring.indexOf(ns);
      if (r >= 0) this.ring.splice(r, 1);
    }
  }

  /**
   * The full `lane` (the other callers') makes room for a caller from `address`: the oldest waiter
   * of an address whose last review here named no one the gateway admits goes (refused). A flood of
   * forged tokens then gives way to a new address (a team's new pod) once its first reviews are
   * done, instead of keeping it out for as long as it lasts; an address with no such review (a new
   * pod's first requests) is never made to give way. A caller from such an address itself (one
   * forged token sent from behind its SNAT address, a review said, locked it out) takes the place
   * of the oldest waiter of the one holding the most, when that holds more than it would. Fresh
   * addresses for each token (an IPv6 prefix) still fill it.
   */
  private makeRoom(ns: string, lane: Waiter[], address: string | undefined): boolean {
    const refused = this.refused.get(ns);
    if (!refused) return false;
    const from = (w: Waiter) => w.address !== undefined && refused.has(w.address);
    let i: number;
    if (address === undefined || !refused.has(address)) i = lane.findIndex(from);
    else {
      const count = new Map<string, number>();
      let heaviest: string | undefined, most = 0;
      for (const w of lane) {
        if (!from(w)) continue;
        const n = (count.get(w.address!) ?? 0) + 1;
        count.set(w.address!, n);
        if (n > most) [heaviest, most] = [w.address!, n];
      }
      i = most > (count.get(address) ?? 0) + 1 ? lane.findIndex((w) => w.address === heaviest) : -1;
    }
    if (i < 0) return false;
    const [w] = lane.splice(i, 1);
    if (w!.timer) this.clock.clearTimeout(w!.timer);
    this.left(ns, w!);
    w!.reject(this.refuse(ns, 'queue_full'));
    return true;
  }

  /** A waiter no longer waits: its address holds one fewer. */
  private left(ns: string, w: Waiter): void {
    if (w.address === undefined) return;
    const source = sourceOf(ns, w.address);
    const n = (this.bySource.get(source) ?? 1) - 1;
    if (n > 0) this.bySource.set(source, n);
    else this.bySource.delete(source);
  }

  private refuse(ns: string, reason: RefusalReason): AuthUnavailableError {
    this.opts.onRefused?.(ns, reason);
    const what = this.opts.what ?? 'token review';
    const why = reason === 'queue_full' ? `too many ${what}s are waiting for gateways of this namespace`
      : reason === 'source_full' ? `too many ${what}s are waiting for this client address`
        : `no ${what} slot became free in time`;
    return new AuthUnavailableError(`${what} unavailable: ${why}; retry later`, { retryAfterSeconds: this.retryAfter });
  }
}

/** A TokenReviewer whose calls go through a FairLimiter, queued by the gateway's namespace. */
export class LimitedReviewer implements TokenReviewer {
  constructor(private readonly inner: TokenReviewer, readonly limiter: FairLimiter) {}

  review(token: string, audiences: string[], namespace = '', source?: string, background = false): Promise<ReviewResult> {
    const call = () => this.inner.review(token, audiences);
    return background ? this.limiter.tryRun(namespace, call) : this.limiter.run(namespace, call, source);
  }

  vouch(namespace: string, address: string, admitted: boolean): void {
    this.limiter.vouch(namespace, address, admitted);
  }
}
