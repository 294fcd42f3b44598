// What a namespace's data-plane series may number (--max-metric-series-per-namespace): the series
// its gateways export, and those dropped within the last hour (a scraper keeps a series it saw in
// memory for hours: a team renaming its routes or gateways over and over would otherwise add new
// ones without end). A series made again under the label set it was dropped with (a gateway
// deleted and made again, a listener tried again) takes back its own count, not a second one.

/** Dropped series remembered by key per namespace, at most; past it the oldest are kept as a count. */
const maxKeys = 4096;

interface Dropped { at: number; lines: number }

interface Held {
  exported: number;
  /** By key (a gateway's label text, or it and a route's name), oldest first. */
  dropped: Map<string, Dropped>;
  /** What `dropped` holds per gateway (its label text), its routes' keys included. */
  byGateway: Map<string, number>;
  /** Counts of keys forgotten past `maxKeys`, by minute, oldest first. */
  unkeyed: Dropped[];
  droppedSum: number;
}

export class SeriesBudget {
  private readonly held = new Map<string, Held>();

  /** `max` 0: no bound (nothing dropped is remembered). */
  constructor(readonly max: number, private readonly retainMs = 3_600_000, private readonly now: () => number = Date.now) {}

  /**
   * Takes `lines` series for `namespace`, first from what was dropped under `key`; false, taking
   * nothing, when that would pass the bound and `mayRefuse`.
   */
  take(namespace: string, key: string, lines: number, mayRefuse: boolean): boolean {
    const h = this.of(namespace);
    if (this.max > 0) {
      this.expire(h);
      const e = h.dropped.get(key);
      const credit = Math.min(e?.lines ?? 0, lines);
      if (mayRefuse && lines > credit && h.exported + h.droppedSum - credit + lines > this.max) return false;
      if (e && credit > 0) {
        e.lines -= credit;
        if (e.lines === 0) h.dropped.delete(key);
        h.droppedSum -= credit;
        this.count(h, key, -credit);
      }
    }
    h.exported += lines;
    return true;
  }

  /** `lines` series of `namespace` are dropped under `key`: they count for the hour after. */
  give(namespace: string, key: string, lines: number): void {
    const h = this.held.get(namespace);
    if (!h || lines === 0) return;
    h.exported -= lines;
    if (this.max === 0) {
      if (h.exported === 0) this.held.delete(namespace);
      return;
    }
    const e = h.dropped.get(key) ?? { at: 0, lines: 0 };
    h.dropped.delete(key); // newest last
    e.at = this.now();
    e.lines += lines;
    h.dropped.set(key, e);
    h.droppedSum += lines;
    this.count(h, key, lines);
    if (h.dropped.size > maxKeys) {
      const [k, oldest] = h.dropped.entries().next().value!;
      h.dropped.delete(k);
      this.count(h, k, -oldest.lines);
      const last = h.unkeyed.at(-1);
      if (last && minute(last.at) === minute(oldest.at)) { // a minute's together, expiring with its last
        last.lines += oldest.lines;
        last.at = oldest.at;
      } else h.unkeyed.push(oldest);
    }
  }

  /** Whether `namespace` holds `margin` more than its bound, not counting what the gateway
   * `gateway` (its label text) dropped, its routes included: made again, it takes that back. */
  over(namespace: string, gateway: string, margin: number): boolean {
    if (this.max === 0) return false;
    const h = this.held.get(namespace);
    if (!h) return false;
    this.expire(h);
    return h.exported + h.droppedSum - (h.byGateway.get(gateway) ?? 0) >= this.max + margin;
  }

  /** Series per namespace, exported and dropped within the hour (what the bound counts). */
  *namespaces(): Generator<{ namespace: string; series: number }> {
    for (const [namespace, h] of this.held) {
      this.expire(h);
      if (h.exported + h.droppedSum === 0) this.held.delete(namespace);
      else yield { namespace, series: h.exported + h.droppedSum };
    }
  }

  private of(namespace: string): Held {
    let h = this.held.get(namespace);
    if (!h) this.held.set(namespace, (h = { exported: 0, dropped: new Map(), byGateway: new Map(), unkeyed: [], droppedSum: 0 }));
    return h;
  }

  /** Adds `n` to what `dropped` holds for the gateway of `key`. */
  private count(h: Held, key: string, n: number): void {
    const i = key.indexOf('\u0000');
    const gateway = i < 0 ? key : key.slice(0, i);
    const left = (h.byGateway.get(gateway) ?? 0) + n;
    if (left > 0) h.byGateway.set(gateway, left);
    else h.byGateway.delete(gateway);
  }

  private expire(h: Held): void {
    const since = this.now() - this.retainMs;
    for (const [k, e] of h.dropped) {
      if (e.at >= since) break;
      h.dropped.delete(k);
      h.droppedSum -= e.lines;
      this.count(h, k, -e.lines);
    }
    while (h.unkeyed.length && h.unkeyed[0]!.at < since) h.droppedSum -= h.unkeyed.shift()!.lines;
  }
}

function minute(ms: number): number {
  return Math.floor(ms / 60_000);
}
