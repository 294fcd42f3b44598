// Positive authentication results by token hash, with expiry and a size bound; concurrent
// misses for the same key share one lookup; failures are never cached.

export class TokenCache<V> {
  private readonly entries = new Map<string, { value: V; expiresAt: number }>();
  private readonly pending = new Map<string, Promise<{ value: V; ttlMs: number }>>();

  constructor(private readonly maxEntries = 10_000, private readonly now: () => number = Date.now,
    private readonly onLookup?: (hit: boolean) => void) {}

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

  /** The cached value, or the one `load` gives (shared by concurrent callers), cached for its ttl. */
  async getOrLoad(key: string, load: () => Promise<{ value: V; ttlMs: number }>): Promise<V> {
    const hit = this.get(key);
    this.onLookup?.(hit !== undefined);
    if (hit !== undefined) return hit;
    let p = this.pending.get(key);
    if (!p) {
      p = load().finally(() => this.pending.delete(key));
      this.pending.set(key, p);
      p.then(({ value, ttlMs }) => this.set(key, value, ttlMs), () => {});
    }
    return (await p).value;
  }

  set(key: string, value: V, ttlMs: number): void {
    if (ttlMs <= 0) return;
    this.entries.delete(key);
    if (this.entries.size >= this.maxEntries) {
      // Evict the oldest insertion (Map keeps insertion order).
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    this.entries.set(key, { value, expiresAt: this.now() + ttlMs });
  }
}
