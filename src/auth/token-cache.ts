// Authentication results by token hash, with expiry and a size bound; concurrent misses for the
// same key share one lookup. Positive results live for the ttl the loader gives; failures the
// loader marks as definite ("not authenticated") live briefly in a separate negative cache;
// every other failure (unavailable) is never cached.

class ExpiringMap<V> {
  private readonly entries = new Map<string, { value: V; expiresAt: number }>();

  constructor(private readonly maxEntries: number, private readonly now: () => number) {}

  get size(): number {
    return this.entries.size;
  }

  get(key: string): V | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.expiresAt <= this.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return e.value;
  }

  set(key: string, value: V, ttlMs: number): void {
    if (ttlMs <= 0 || this.maxEntries <= 0) return;
    this.entries.delete(key);
    if (this.entries.size >= this.maxEntries) {
      // Evict the oldest insertion (Map keeps insertion order).
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    this.entries.set(key, { value, expiresAt: this.now() + ttlMs });
  }
}

export interface TokenCacheOptions {
  maxEntries?: number;
  now?: () => number;
  /** Called once per lookup: hit (positive entry) or miss (anything else). */
  onLookup?: (hit: boolean) => void;
  /** How long a definite refusal is remembered; 0 disables. */
  negativeTtlMs?: number;
  maxNegativeEntries?: number;
  /** Which load failures are definite refusals (cached); the others are never cached. */
  isDefinite?: (err: unknown) => boolean;
}

export class TokenCache<V> {
  private readonly positive: ExpiringMap<V>;
  private readonly negative: ExpiringMap<Error>;
  private readonly pending = new Map<string, Promise<{ value: V; ttlMs: number }>>();
  private readonly onLookup: ((hit: boolean) => void) | undefined;
  private readonly negativeTtlMs: number;
  private readonly isDefinite: (err: unknown) => boolean;

  constructor(opts: TokenCacheOptions = {}) {
    const now = opts.now ?? Date.now;
    this.positive = new ExpiringMap(opts.maxEntries ?? 10_000, now);
    this.negative = new ExpiringMap(opts.maxNegativeEntries ?? 4_096, now);
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
    return this.positive.get(key);
  }

  /** A positive entry, counted as a hit; undefined (not counted) otherwise: then call getOrLoad. */
  hit(key: string): V | undefined {
    const v = this.positive.get(key);
    if (v !== undefined) this.onLookup?.(true);
    return v;
  }

  /** The cached value, or the remembered refusal (thrown), or the one `load` gives (shared by
   * concurrent callers). `precheck` runs only on a miss, before joining or starting a load; what
   * it throws is not cached. */
  async getOrLoad(key: string, load: () => Promise<{ value: V; ttlMs: number }>, precheck?: () => void): Promise<V> {
    const hit = this.positive.get(key);
    this.onLookup?.(hit !== undefined);
    if (hit !== undefined) return hit;
    const refused = this.negative.get(key);
    if (refused) throw refused;
    precheck?.();
    let p = this.pending.get(key);
    if (!p) {
      p = load().finally(() => this.pending.delete(key));
      this.pending.set(key, p);
      p.then(({ value, ttlMs }) => this.positive.set(key, value, ttlMs), (err) => {
        if (err instanceof Error && this.isDefinite(err)) this.negative.set(key, err, this.negativeTtlMs);
      });
    }
    return (await p).value;
  }

  set(key: string, value: V, ttlMs: number): void {
    this.positive.set(key, value, ttlMs);
  }
}
