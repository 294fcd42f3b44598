// Bytes each namespace's labelled Secrets and ConfigMaps hold in the operator's caches, against a
// bound (--max-labelled-mib-per-namespace): a namespace past it is "over".

export class DataBudget {
  /** By namespace: each object's bytes, by its key. */
  private readonly objects = new Map<string, Map<string, number>>();
  private readonly totals = new Map<string, number>();

  /** @param max bytes a namespace may hold; 0: no bound. */
  constructor(readonly max: number) {}

  /** Records an object's bytes (undefined: it is gone); returns whether its namespace went over or back under. */
  set(ns: string, key: string, bytes: number | undefined): boolean {
    const was = this.over(ns);
    let m = this.objects.get(ns);
    const before = m?.get(key) ?? 0;
    if (bytes === undefined) m?.delete(key);
    else {
      if (!m) this.objects.set(ns, (m = new Map()));
      m.set(key, bytes);
    }
    if (!m?.size) {
      this.objects.delete(ns);
      this.totals.delete(ns);
    } else {
      this.totals.set(ns, (this.totals.get(ns) ?? 0) - before + (bytes ?? 0));
    }
    return this.over(ns) !== was;
  }

  /** The bytes counted for `key` (0 if none). */
  bytesOf(ns: string, key: string): number {
    return this.objects.get(ns)?.get(key) ?? 0;
  }

  /** Whether the namespace would be over with `key` holding `bytes`, and `more` bytes besides. */
  wouldBeOver(ns: string, key: string, bytes: number, more = 0): boolean {
    return this.max > 0 && this.total(ns) - this.bytesOf(ns, key) + bytes + more > this.max;
  }

  /** The keys of a namespace's objects. */
  keys(ns: string): IterableIterator<string> {
    return (this.objects.get(ns) ?? new Map<string, number>()).keys();
  }

  over(ns: string): boolean {
    return this.max > 0 && this.total(ns) > this.max;
  }

  total(ns: string): number {
    return this.totals.get(ns) ?? 0;
  }
}

/** The UTF-8 bytes of an object's data, keys and values (never fewer than V8 holds for them). */
export function dataBytes(data: Record<string, string> | undefined): number {
  let n = 0;
  for (const [k, v] of Object.entries(data ?? {})) n += Buffer.byteLength(k) + Buffer.byteLength(v);
  return n;
}
