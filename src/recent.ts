// A value made once per key and kept while it is used: the last `max` keys used are remembered.

export class Recent<K, V> {
  private readonly kept = new Map<K, V>();

  constructor(private readonly max: number) {}

  /** The value for `key`, made by `make` when not remembered; `key` becomes the most recent. */
  get(key: K, make: (key: K) => V): V {
    let v = this.kept.get(key);
    if (v !== undefined) this.kept.delete(key);
    else v = make(key);
    this.kept.set(key, v);
    if (this.kept.size > this.max) this.kept.delete(this.kept.keys().next().value!);
    return v;
  }
}

/**
 * Values kept per namespace, oldest first, so that one namespace cannot push out another's: a
 * namespace keeps at most `perNamespace` (past it, its own oldest goes), and past `max` in all, the
 * oldest of the namespace keeping the most goes (the one adding, on a tie).
 */
export class NamespacedBound<K, V> {
  private readonly kept = new Map<string, Map<K, V>>();
  private size = 0;

  constructor(readonly max: number, readonly perNamespace: number) {}

  get(namespace: string, key: K): V | undefined {
    return this.kept.get(namespace)?.get(key);
  }

  /** Keeps `value` for `key` as the newest of `namespace`; returns what that pushed out, if anything. */
  set(namespace: string, key: K, value: V): [K, V] | undefined {
    let mine = this.kept.get(namespace);
    if (!mine) this.kept.set(namespace, (mine = new Map()));
    if (mine.delete(key)) this.size--;
    mine.set(key, value);
    this.size++;
    if (mine.size > this.perNamespace) return this.dropOldest(namespace, mine);
    if (this.size <= this.max) return undefined;
    let most: [string, Map<K, V>] = [namespace, mine];
    for (const e of this.kept) if (e[1].size > most[1].size) most = e;
    return this.dropOldest(...most);
  }

  /** Forgets `key`; false when it was not kept. */
  delete(namespace: string, key: K): boolean {
    const mine = this.kept.get(namespace);
    if (!mine?.delete(key)) return false;
    this.size--;
    if (mine.size === 0) this.kept.delete(namespace);
    return true;
  }

  /** How many `namespace` keeps. */
  keptBy(namespace: string): number {
    return this.kept.get(namespace)?.size ?? 0;
  }

  private dropOldest(namespace: string, m: Map<K, V>): [K, V] {
    const oldest = m.entries().next().value!;
    this.delete(namespace, oldest[0]);
    return oldest;
  }
}

/** As `Recent`, with each namespace's values apart (`NamespacedBound`). */
export class NamespacedRecent<K, V> {
  private readonly kept: NamespacedBound<K, V>;

  constructor(max: number, perNamespace: number) {
    this.kept = new NamespacedBound(max, perNamespace);
  }

  get(namespace: string, key: K, make: (key: K) => V): V {
    let v = this.kept.get(namespace, key);
    if (v === undefined) v = make(key); // (a null kept is a value: OpenSSL's verdict "accepted")
    this.kept.set(namespace, key, v); // the most recent now
    return v;
  }

  /** How many `namespace` keeps. */
  keptBy(namespace: string): number {
    return this.kept.keptBy(namespace);
  }
}
