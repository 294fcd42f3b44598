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
 * As `Recent`, with each namespace's values apart, so that one cannot push out another's: a
 * namespace keeps at most `perNamespace` (past it, its own least recent goes), and past `max` in
 * all, the least recent of the namespace keeping the most goes (the one adding, on a tie).
 */
export class NamespacedRecent<K, V> {
  private readonly kept = new Map<string, Map<K, V>>();
  private size = 0;

  constructor(private readonly max: number, private readonly perNamespace: number) {}

  get(namespace: string, key: K, make: (key: K) => V): V {
    let mine = this.kept.get(namespace);
    let v = mine?.get(key);
    if (v !== undefined) {
      mine!.delete(key);
      mine!.set(key, v);
      return v;
    }
    v = make(key);
    if (!mine) this.kept.set(namespace, (mine = new Map()));
    mine.set(key, v);
    this.size++;
    if (mine.size > this.perNamespace) this.drop(namespace, mine);
    else if (this.size > this.max) {
      let most: [string, Map<K, V>] = [namespace, mine];
      for (const e of this.kept) if (e[1].size > most[1].size) most = e;
      this.drop(...most);
    }
    return v;
  }

  /** How many `namespace` keeps. */
  keptBy(namespace: string): number {
    return this.kept.get(namespace)?.size ?? 0;
  }

  private drop(namespace: string, m: Map<K, V>): void {
    m.delete(m.keys().next().value!);
    this.size--;
    if (m.size === 0) this.kept.delete(namespace);
  }
}
