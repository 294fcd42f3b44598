// Authentication results by token hash, with expiry and a size bound; concurrent misses for the
// same key share one lookup; an entry in use is renewed before it expires (no request waits for
// it). Positive results live for the ttl the loader gives (callers the gateway refuses apart from
// those it admits); failures the loader marks as definite ("not authenticated") live briefly
// apart, in the process's `Refusals`; every other failure (unavailable) is never cached.

/** A bound on the positive entries of several caches together (one namespace's gateways). When it has run
 * out, the caches first drop their expired entries (at most once a second), then the cache adding
 * one evicts its own oldest. */
export class EntryBudget {
  private held = 0;
  private readonly caches = new Set<{ sweep(): void }>();
  private sweptAt = -Infinity;

  /** `limit` 0: no limit. */
  constructor(readonly limit: number, private readonly now: () => number = Date.now) {}

  /** Counts one more entry; false when the budget is spent. */
  take(): boolean {
    if (this.limit > 0 && this.held >= this.limit) {
      const t = this.now();
      if (t - this.sweptAt < 1_000) return false;
      this.sweptAt = t;
      for (const c of this.caches) c.sweep();
      if (this.held >= this.limit) return false;
    }
    this.held++;
    return true;
  }

  give(n = 1): void {
    this.held -= n;
  }

  join(cache: { sweep(): void }): void {
    this.caches.add(cache);
  }

  leave(cache: { sweep(): void }): void {
    this.caches.delete(cache);
  }
}

class ExpiringMap<V> {
  private readonly entries = new Map<string, { value: V; expiresAt: number; renewAt: number }>();
  private closed = false;

  constructor(private readonly maxEntries: number, private readonly now: () => number, private readonly budget?: EntryBudget) {
    budget?.join(this);
  }

  get size(): number {
    return this.entries.size;
  }

  get(key: string): V | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.expiresAt <= this.now()) {
      this.delete(key);
      return undefined;
    }
    return e.value;
  }

  /** The renewal of `key` is due again in `ms`, if that is before it expires. */
  rearm(key: string, ms: number): void {
    const e = this.entries.get(key);
    const t = this.now() + ms;
    if (e && t < e.expiresAt) e.renewAt = t;
  }

  /** True once for an entry past its renewal time and not expired (then false until rearmed or replaced). */
  claimRenewal(key: string): boolean {
    const e = this.entries.get(key);
    if (!e || e.renewAt > this.now()) return false;
    e.renewAt = Infinity;
    return e.expiresAt > this.now();
  }

  /** `renewInMs`: when claimRenewal first says true (never by default). */
  set(key: string, value: V, ttlMs: number, renewInMs = Infinity): void {
    if (ttlMs <= 0 || this.maxEntries <= 0 || this.closed) return;
    this.delete(key);
    if (this.entries.size >= this.maxEntries) this.evictOldest();
    if (this.budget && !this.budget.take()) {
      // the budget's other caches hold it all: make room here, else this one is not cached
      if (this.entries.size === 0) return;
      this.evictOldest();
      if (!this.budget.take()) return;
    }
    const t = this.now();
    this.entries.set(key, { value, expiresAt: t + ttlMs, renewAt: t + renewInMs });
  }

  /** Drops the expired entries. */
  sweep(): void {
    const t = this.now();
    for (const [key, e] of this.entries) if (e.expiresAt <= t) this.delete(key);
  }

  /** Empties the map for good (its owner is gone): its entries go back to the budget. */
  close(): void {
    this.closed = true;
    this.budget?.leave(this);
    this.budget?.give(this.entries.size);
    this.entries.clear();
  }

  delete(key: string): void {
    if (this.entries.delete(key)) this.budget?.give();
  }

  /** Evicts the oldest insertion (Map keeps insertion order). */
  private evictOldest(): void {
    const oldest = this.entries.keys().next().value;
    if (oldest !== undefined) this.delete(oldest);
  }
}

export interface TokenCacheOptions {
  maxEntries?: number;
  /** Shared bound on the positive entries of this cache and others (refusals: `refusals`). */
  budget?: EntryBudget;
  now?: () => number;
  /** Called once per lookup: hit (positive entry) or miss (anything else). */
  onLookup?: (hit: boolean) => void;
  /** How long a definite refusal is remembered; 0 disables. */
  negativeTtlMs?: number;
  maxNegativeEntries?: number;
  /** Where the refusals of this cache and others are kept (default: the process's, `refusals`). */
  refusals?: Refusals;
  /** Which load failures are definite refusals (cached); the others are never cached. */
  isDefinite?: (err: unknown) => boolean;
  /** Bound on the positive entries the budget does not pay for (see `charged`). */
  maxOutsiders?: number;
  /** Renewal failures after which it is tried again `retryRenewalMs` later (the limiter had no slot
   * free); after any other, the entry is left to expire. */
  renewAgain?: (err: unknown) => boolean;
}

/**
 * Refusals remembered by every gateway's caches together, oldest out first: anyone who reaches a
 * listener can make refusals (a JWT that passes the precheck needs no signature), so a bound per
 * cache (4,096) alone grew with the gateways (~1.5 MiB each). Past `max` (~370 bytes each), the
 * oldest of any cache goes: a flood shortens how long others' refusals are remembered (5 s at
 * most), it never leaves a cache remembering none. A cache past its own bound drops its own oldest.
 */
export class Refusals {
  private readonly entries = new Map<string, { err: Error; expiresAt: number; shelf: RefusalShelf }>();
  private seq = 0;

  constructor(readonly max: number) {}

  get size(): number {
    return this.entries.size;
  }

  /** A cache's part: at most `max` of its own. */
  shelf(max: number, now: () => number): RefusalShelf {
    return new RefusalShelf(this, `${(++this.seq).toString(36)}\u0000`, max, now);
  }

  /** @internal */
  get(key: string, now: number): Error | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.expiresAt > now) return e.err;
    this.delete(key);
    return undefined;
  }

  /** @internal */
  set(key: string, err: Error, expiresAt: number, shelf: RefusalShelf): void {
    this.delete(key);
    if (this.entries.size >= this.max) this.delete(this.entries.keys().next().value!);
    this.entries.set(key, { err, expiresAt, shelf });
    shelf.keys.add(key);
  }

  /** @internal */
  delete(key: string): void {
    const e = this.entries.get(key);
    if (!e) return;
    this.entries.delete(key);
    e.shelf.keys.delete(key);
  }
}

/** One cache's refusals in the process's `Refusals`. */
export class RefusalShelf {
  /** Its keys in `Refusals`, oldest first. */
  readonly keys = new Set<string>();
  private closed = false;

  constructor(private readonly all: Refusals, private readonly prefix: string, private readonly max: number, private readonly now: () => number) {}

  get size(): number {
    return this.keys.size;
  }

  get(key: string): Error | undefined {
    return this.all.get(this.prefix + key, this.now());
  }

  set(key: string, err: Error, ttlMs: number): void {
    if (ttlMs <= 0 || this.max <= 0 || this.closed) return;
    const k = this.prefix + key;
    if (!this.keys.has(k) && this.keys.size >= this.max) this.all.delete(this.keys.values().next().value!);
    this.all.set(k, err, this.now() + ttlMs, this);
  }

  /** Drops its refusals for good (its cache is gone). */
  close(): void {
    this.closed = true;
    for (const k of [...this.keys]) this.all.delete(k);
  }
}

/** The process's refusals: 16,384 (~6 MiB). */
export const refusals = new Refusals(16_384);

/** How soon a renewal the review limiter had no slot for is tried again. */
export const retryRenewalMs = 250;

/** A cached answer still in use is asked again after this share of its life, in the background:
 * its requests do not wait for that at its expiry, and what it allows still ends within its life
 * (sooner, if the new answer says so). */
export const renewAfter = 0.8;

/** What a load gives: the value, for how long, and when to load it again if still in use (never
 * when absent: say, its token expires first). */
export interface Loaded<V> {
  value: V;
  ttlMs: number;
  renewInMs?: number;
}

export class TokenCache<V> {
  private readonly positive: ExpiringMap<V>;
  /** Positive results the budget does not pay for: callers the gateway will refuse. */
  private readonly outsiders: ExpiringMap<V>;
  /** This cache's refusals, kept in the process's `Refusals` (oldest first). */
  private readonly negative: RefusalShelf;
  private readonly pending = new Map<string, Promise<Loaded<V>>>();
  private readonly onLookup: ((hit: boolean) => void) | undefined;
  private readonly negativeTtlMs: number;
  private readonly isDefinite: (err: unknown) => boolean;
  private readonly renewAgain: (err: unknown) => boolean;
  /** Which positive results the budget pays for; the others are held apart, in a small bound of
   * their own, so callers the gateway refuses (anyone may get a token for its audience) evict
   * only each other, never the callers it admits. */
  charged: (value: V) => boolean = () => true;

  constructor(opts: TokenCacheOptions = {}) {
    const now = opts.now ?? Date.now;
    this.positive = new ExpiringMap(opts.maxEntries ?? 10_000, now, opts.budget);
    this.outsiders = new ExpiringMap(opts.maxOutsiders ?? 256, now);
    this.negative = (opts.refusals ?? refusals).shelf(opts.maxNegativeEntries ?? 4_096, now);
    this.onLookup = opts.onLookup;
    this.negativeTtlMs = opts.negativeTtlMs ?? 0;
    this.isDefinite = opts.isDefinite ?? (() => false);
    this.renewAgain = opts.renewAgain ?? (() => false);
  }

  get size(): number {
    return this.positive.size;
  }

  get negativeSize(): number {
    return this.negative.size;
  }

  get(key: string): V | undefined {
    return this.lookup(key);
  }

  /** A positive entry, counted as a hit; undefined (not counted) otherwise: then call getOrLoad. */
  hit(key: string): V | undefined {
    const v = this.lookup(key);
    if (v !== undefined) this.onLookup?.(true);
    return v;
  }

  /** The cached value, or the remembered refusal (thrown), or the one `load` gives (shared by
   * concurrent callers). `precheck` runs only on a miss, before joining or starting a load; what
   * it throws is not cached. */
  async getOrLoad(key: string, load: () => Promise<Loaded<V>>, precheck?: () => void): Promise<V> {
    const hit = this.lookup(key);
    this.onLookup?.(hit !== undefined);
    if (hit !== undefined) return hit;
    const refused = this.negative.get(key);
    if (refused) throw refused;
    precheck?.();
    let p = this.pending.get(key);
    if (!p) {
      p = load().finally(() => this.pending.delete(key));
      this.pending.set(key, p);
      p.then(({ value, ttlMs, renewInMs }) => this.set(key, value, ttlMs, renewInMs), (err) => {
        if (err instanceof Error && this.isDefinite(err)) this.negative.set(key, err, this.negativeTtlMs);
      });
    }
    try {
      return (await p).value;
    } catch (err) {
      // a renewal it joined that the limiter had no slot for is not this request's answer: it
      // loads in the foreground (the renewal's load is no longer pending)
      if (!this.renewAgain(err)) throw err;
      return this.getOrLoad(key, load, precheck);
    }
  }

  /** True once for a positive entry whose renewal time has come (then call `renew`). */
  renewalDue(key: string): boolean {
    return this.positive.claimRenewal(key);
  }

  /** Loads a positive entry again in the background while it still serves: what the load gives
   * replaces it; a definite refusal drops it (and is remembered); a refusal for want of a slot
   * (`renewAgain`) is tried again by the first request `retryRenewalMs` later, before it expires;
   * another failure leaves it to expire, then a request loads it as any miss. A miss meanwhile
   * joins this load. */
  renew(key: string, load: () => Promise<Loaded<V>>): void {
    if (this.pending.has(key)) return;
    const p = load().finally(() => this.pending.delete(key));
    this.pending.set(key, p);
    p.then(({ value, ttlMs, renewInMs }) => this.set(key, value, ttlMs, renewInMs), (err) => {
      if (this.renewAgain(err)) this.positive.rearm(key, retryRenewalMs);
      if (!(err instanceof Error && this.isDefinite(err))) return;
      this.positive.delete(key);
      this.negative.set(key, err, this.negativeTtlMs);
    });
  }

  set(key: string, value: V, ttlMs: number, renewInMs?: number): void {
    const charged = this.charged(value);
    (charged ? this.outsiders : this.positive).delete(key); // (a renewal may move it)
    (charged ? this.positive : this.outsiders).set(key, value, ttlMs, renewInMs);
  }

  /** A positive entry; an outsider the gateway admits now (a rule's window opened since its
   * review) is not one: it is loaded again, to be charged (and its address vouched for). */
  private lookup(key: string): V | undefined {
    const v = this.positive.get(key);
    if (v !== undefined) return v;
    const o = this.outsiders.get(key);
    if (o === undefined || !this.charged(o)) return o;
    this.outsiders.delete(key);
    return undefined;
  }

  /** Drops every entry for good, giving them back to the budget; later loads are not cached. */
  close(): void {
    this.positive.close();
    this.outsiders.close();
    this.negative.close();
  }
}
