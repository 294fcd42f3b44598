// Authentication results by token hash, with expiry and a size bound; concurrent misses for the
// same key share one lookup. Positive results live for the ttl the loader gives (callers the
// gateway refuses apart from those it admits); failures the
// loader marks as definite ("not authenticated") live briefly in a separate negative cache;
// every other failure (unavailable) is never cached.

/** A bound on the entries of several caches together (one namespace's gateways). When it has run
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

/**
 * Refusals remembered by every gateway's caches together (~370 bytes each: 6 MiB). Anyone who
 * reaches a listener can make refusals (a JWT that passes the precheck needs no signature), so a
 * bound per cache or per namespace would grow with the gateways; past this one, a cache makes room
 * among its own, else does not remember (the refused token is checked again: its TokenReview waits
 * in its namespace's queue).
 */
export const refusalBudget = new EntryBudget(16_384);

class ExpiringMap<V> {
  private readonly entries = new Map<string, { value: V; expiresAt: number }>();
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

  set(key: string, value: V, ttlMs: number): void {
    if (ttlMs <= 0 || this.maxEntries <= 0 || this.closed) return;
    this.delete(key);
    if (this.entries.size >= this.maxEntries) this.evictOldest();
    if (this.budget && !this.budget.take()) {
      // the budget's other caches hold it all: make room here, else this one is not cached
      if (this.entries.size === 0) return;
      this.evictOldest();
      if (!this.budget.take()) return;
    }
    this.entries.set(key, { value, expiresAt: this.now() + ttlMs });
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

  private delete(key: string): void {
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
  /** Shared bound on the positive entries of this cache and others (refusals are bounded per cache). */
  budget?: EntryBudget;
  now?: () => number;
  /** Called once per lookup: hit (positive entry) or miss (anything else). */
  onLookup?: (hit: boolean) => void;
  /** How long a definite refusal is remembered; 0 disables. */
  negativeTtlMs?: number;
  maxNegativeEntries?: number;
  /** Shared bound on the refusals of this cache and others (default: the process's, `refusalBudget`). */
  refusals?: EntryBudget;
  /** Which load failures are definite refusals (cached); the others are never cached. */
  isDefinite?: (err: unknown) => boolean;
  /** Bound on the positive entries the budget does not pay for (see `charged`). */
  maxOutsiders?: number;
}

export class TokenCache<V> {
  private readonly positive: ExpiringMap<V>;
  /** Positive results the budget does not pay for: callers the gateway will refuse. */
  private readonly outsiders: ExpiringMap<V>;
  private readonly negative: ExpiringMap<Error>;
  private readonly pending = new Map<string, Promise<{ value: V; ttlMs: number }>>();
  private readonly onLookup: ((hit: boolean) => void) | undefined;
  private readonly negativeTtlMs: number;
  private readonly isDefinite: (err: unknown) => boolean;
  /** Which positive results the budget pays for; the others are held apart, in a small bound of
   * their own, so callers the gateway refuses (anyone may get a token for its audience) evict
   * only each other, never the callers it admits. */
  charged: (value: V) => boolean = () => true;

  constructor(opts: TokenCacheOptions = {}) {
    const now = opts.now ?? Date.now;
    this.positive = new ExpiringMap(opts.maxEntries ?? 10_000, now, opts.budget);
    this.outsiders = new ExpiringMap(opts.maxOutsiders ?? 256, now);
    this.negative = new ExpiringMap(opts.maxNegativeEntries ?? 4_096, now, opts.refusals ?? refusalBudget);
    this.onLookup = opts.onLookup;
    this.negativeTtlMs = opts.negativeTtlMs ?? 0;
    this.isDefinite = opts.isDefinite ?? (() => false);
  }

  get size(): number {
    return this.positive.size;
  }

  get negativeSize(): number {
    return this.negative.size;
  }

  get(key: string): V | undefined {
    return this.positive.get(key) ?? this.outsiders.get(key);
  }

  /** A positive entry, counted as a hit; undefined (not counted) otherwise: then call getOrLoad. */
  hit(key: string): V | undefined {
    const v = this.positive.get(key) ?? this.outsiders.get(key);
    if (v !== undefined) this.onLookup?.(true);
    return v;
  }

  /** The cached value, or the remembered refusal (thrown), or the one `load` gives (shared by
   * concurrent callers). `precheck` runs only on a miss, before joining or starting a load; what
   * it throws is not cached. */
  async getOrLoad(key: string, load: () => Promise<{ value: V; ttlMs: number }>, precheck?: () => void): Promise<V> {
    const hit = this.positive.get(key) ?? this.outsiders.get(key);
    this.onLookup?.(hit !== undefined);
    if (hit !== undefined) return hit;
    const refused = this.negative.get(key);
    if (refused) throw refused;
    precheck?.();
    let p = this.pending.get(key);
    if (!p) {
      p = load().finally(() => this.pending.delete(key));
      this.pending.set(key, p);
      p.then(({ value, ttlMs }) => this.set(key, value, ttlMs), (err) => {
        if (err instanceof Error && this.isDefinite(err)) this.negative.set(key, err, this.negativeTtlMs);
      });
    }
    return (await p).value;
  }

  set(key: string, value: V, ttlMs: number): void {
    (this.charged(value) ? this.positive : this.outsiders).set(key, value, ttlMs);
  }

  /** Drops every entry for good, giving them back to the budget; later loads are not cached. */
  close(): void {
    this.positive.close();
    this.outsiders.close();
    this.negative.close();
  }
}
