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
