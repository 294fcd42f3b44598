// Counts by key "lately": halved each second, not cleared (a flood is still known a second on);
// a key whose count falls below one half is forgotten. A clock stepped back halves on from there.

export class Lately<K> {
  private readonly counts = new Map<K, number>();
  private sum = 0;
  private halvedAt = -Infinity;

  constructor(private readonly now: () => number) {}

  /** The key's count lately (0: none). */
  get(key: K): number {
    this.halve();
    return this.counts.get(key) ?? 0;
  }

  add(key: K, n = 1): void {
    this.halve();
    this.counts.set(key, (this.counts.get(key) ?? 0) + n);
    this.sum += n;
  }

  /** The keys counted lately, and their counts' sum. */
  get size(): number {
    return this.counts.size;
  }

  get total(): number {
    return this.sum;
  }

  private halve(): void {
    const t = this.now();
    if (t < this.halvedAt) this.halvedAt = t; // a clock stepped back: not that long without halving
    if (t - this.halvedAt < 1_000) return;
    const seconds = Math.min(30, Math.floor((t - this.halvedAt) / 1_000));
    this.halvedAt = seconds >= 30 ? t : this.halvedAt + seconds * 1_000; // (a second's part left counts toward the next)
    this.sum = 0;
    for (const [k, n] of this.counts) {
      const left = n / 2 ** seconds;
      if (left < 0.5) this.counts.delete(k);
      else {
        this.counts.set(k, left);
        this.sum += left;
      }
    }
  }
}
