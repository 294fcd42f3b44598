// Metrics the request path touches: a child is a plain object the request path bumps (prom-client
// hashes the label values on every call of a child, even a pre-bound one). Children are made when
// a route is planned, so every series exists at zero before its first event, and each keeps its
// label text, so a scrape only copies that text and the numbers into one buffer (prom-client builds
// objects and strings per series per scrape: 300 ms and tens of MiB of heap for 1,000 gateways).
// Same exposition as prom-client's.

import { SeriesBudget } from './series-budget.js';

/** Text appended into chunks of about 64 KiB, taken as they fill (a scrape is sent as it renders). */
export class TextBuffer {
  private chunks: Buffer[] = [];
  private buf: Buffer;
  private len = 0;

  constructor(private readonly chunkSize = 1 << 16) {
    this.buf = Buffer.allocUnsafeSlow(chunkSize);
  }

  add(s: string): void {
    if (this.len + s.length * 3 > this.buf.length) {
      this.flush();
      this.buf = Buffer.allocUnsafeSlow(Math.max(this.chunkSize, s.length * 3));
    }
    this.len += this.buf.write(s, this.len);
  }

  /** Whether full chunks are waiting to be taken. */
  get pending(): boolean {
    return this.chunks.length > 0;
  }

  /** The full chunks written since the last take (each a fresh buffer, never written again). */
  take(): Buffer[] {
    const c = this.chunks;
    this.chunks = [];
    return c;
  }

  /** Every chunk not taken yet, the last partial one included. */
  done(): Buffer[] {
    this.flush();
    return this.take();
  }

  private flush(): void {
    if (this.len > 0) {
      this.chunks.push(this.buf.subarray(0, this.len));
      this.buf = this.buf.subarray(this.len); // the rest of this chunk for what follows
    }
    this.len = 0;
  }
}

/**
 * Label texts after namespace and gateway (`,route="api",code="2xx"`), one copy each: thousands of
 * gateways repeat the same few, and a text built by concatenation is a chain of string pieces.
 * Counted, so a text no series uses any more is dropped.
 */
class RestTexts {
  private readonly texts = new Map<string, { text: string; uses: number }>();
  take(text: string): string {
    let e = this.texts.get(text);
    if (!e) this.texts.set(text, (e = { text: flat(text), uses: 0 }));
    e.uses++;
    return e.text;
  }
  drop(text: string): void {
    const e = this.texts.get(text);
    if (e && --e.uses === 0) this.texts.delete(text);
  }
  /** Distinct texts held. */
  get size(): number {
    return this.texts.size;
  }
}

/** A flat copy of a string built by concatenation (V8 keeps those as chains until flattened). */
function flat(s: string): string {
  return Buffer.from(s, 'utf8').toString('utf8');
}

/** Whether a gateway's (route null) or route's series are still exported: once forgotten, what
 * still holds its children (a session ending on a removed route) makes detached ones instead. */
export interface Liveness { live: boolean }

/** The series of one gateway: its label text, once, and per family its children as [rest, child, …];
 * and the liveness of its own series (null) and of its routes' not forgotten yet. `spill`: the
 * namespace's overflow gateway (below). */
interface Group {
  readonly text: string;
  readonly namespace: string;
  readonly byFamily: (unknown[] | undefined)[];
  /** By family, its children by label text, once it has more than `indexedPast` (a gateway's 64
   * routes made one by one scanned a list that grew to hundreds: quadratic, on the loop). */
  readonly indexes: (Map<string, unknown> | undefined)[];
  readonly alive: Map<string | null, Liveness>;
  readonly spill: boolean;
}

/** The gateway label of a namespace's overflow gateway, and the label value of every overflow series. */
const overflowValue = '(overflow)';

/** Series a namespace may hold past its bound before its new gateways spill: about what 16
 * gateways' own and overflow series make (~67 each). */
const spillMargin = 1_200;

/**
 * The families of one registry, rendered in the text exposition format. Every family's first two
 * labels are namespace and gateway: a gateway's series, in all families, hang off one group (one
 * label text, found and forgotten at once), which keeps thousands of gateways small.
 *
 * With a bound per namespace (`maxPerNamespace`, SeriesBudget), a series past it is not made: its
 * events go to its gateway's overflow series of that family (every label past namespace and
 * gateway "(overflow)"); a gateway's own series (no label past its name) and its overflow series
 * are always made, and counted. A gateway made while its namespace holds more than the bound and
 * `spillMargin` has no series of its own: its events go to the namespace's overflow gateway
 * (gateway "(overflow)"), so renaming gateways over and over makes no new series either.
 */
export class FastRegistry {
  private readonly families: Exported[] = [];
  private readonly groups = new Map<string, Group>();
  /** Gateways whose series go to their namespace's overflow gateway (until forgotten), by label text. */
  private readonly spilled = new Map<string, Liveness>();
  readonly rests = new RestTexts();
  readonly budget: SeriesBudget;

  constructor(opts: { maxPerNamespace?: number; retainMs?: number; now?: () => number } = {}) {
    this.budget = new SeriesBudget(opts.maxPerNamespace ?? 0, opts.retainMs, opts.now);
  }

  /** Registers a family; returns its index. */
  add(f: Exported): number {
    if (f.labelNames[0] !== 'namespace' || f.labelNames[1] !== 'gateway') {
      throw new Error(`${f.name}: a fast family's first labels are namespace and gateway`);
    }
    return this.families.push(f) - 1;
  }

  /** The group of a gateway, made on first use (the namespace's overflow gateway past its bound). */
  group(namespace: string, gateway: string): Group {
    const text = groupText(namespace, gateway);
    let g = this.groups.get(text);
    if (g) return g;
    if (this.spilled.has(text)) return this.group(namespace, overflowValue);
    if (gateway !== overflowValue && this.budget.over(namespace, text, spillMargin)) {
      this.spilled.set(text, { live: true }); // for good: not split between two groups later
      return this.group(namespace, overflowValue);
    }
    const t = flat(text);
    this.groups.set(t, (g = { text: t, namespace, byFamily: [], indexes: [], alive: new Map(), spill: gateway === overflowValue }));
    return g;
  }

  /** Series per namespace, exported and dropped within the hour (what its bound counts). */
  namespaces(): Iterable<{ namespace: string; series: number }> {
    return this.budget.namespaces();
  }

  /**
   * The exposition, one chunk (about 64 KiB) at a time: a scrape of many gateways is written as it
   * is rendered, never held whole. Series added or forgotten while it is consumed may be left out.
   */
  *stream(): Generator<Buffer> {
    const out = new TextBuffer();
    for (const f of this.families) {
      out.add(f.head);
      yield* f.write(out, this.groups.values());
    }
    yield* out.done();
  }

  /** The whole exposition (tests, small registries). */
  text(): string {
    return Buffer.concat([...this.stream()]).toString('utf8');
  }

  /** The liveness of a gateway's (route null) or route's series, live until forgotten. */
  liveness(namespace: string, gateway: string, route: string | null): Liveness {
    const { alive, spill } = this.group(namespace, gateway);
    if (spill) return this.spilled.get(groupText(namespace, gateway)) ?? { live: true }; // (a gateway's routes share its own)
    let l = alive.get(route);
    if (!l) alive.set(route, (l = { live: true }));
    return l;
  }

  /** Drops the series of a gateway (namespace, gateway) or of some of its routes (…, routes): one
   * pass over the gateway's series however many routes go (a plan renaming 64 routes walked
   * them 64 times, ~10 ms). */
  forget(namespace: string, gateway: string, routes?: readonly string[]): void {
    const text = groupText(namespace, gateway);
    const g = this.groups.get(text);
    const gone = routes && new Set(routes);
    for (const [r, l] of g?.alive ?? []) {
      if (gone && (r === null || !gone.has(r))) continue;
      l.live = false;
      g!.alive.delete(r);
    }
    const spilled = this.spilled.get(text);
    if (spilled && !gone) {
      spilled.live = false; // what still holds its children makes detached ones
      this.spilled.delete(text);
    }
    if (!g || g.spill || gone?.size === 0) return;
    // each route's series are dropped under the route's key (only that route, made again, takes
    // them back), the gateway's own under its text
    const escaped = gone && new Set([...gone].map(escapeLabel));
    const byKey = new Map<string, number>();
    for (let i = 0; i < this.families.length; i++) {
      const series = g.byFamily[i];
      if (!series) continue;
      const routed = this.families[i]!.labelNames[2] === 'route';
      if (escaped && !routed) continue; // (a gateway's own series stay with its routes')
      const kept: unknown[] = [];
      for (let k = 0; k < series.length; k += 2) {
        const rest = series[k] as string;
        const route = routed ? routeOf(rest) : '';
        if (escaped && !escaped.has(route)) {
          kept.push(rest, series[k + 1]);
          continue;
        }
        this.rests.drop(rest);
        const key = routed ? routeKey(g.text, route) : g.text;
        byKey.set(key, (byKey.get(key) ?? 0) + this.families[i]!.linesPerChild);
      }
      if (escaped) {
        g.byFamily[i] = kept.length ? kept : undefined;
        g.indexes[i] = undefined; // made again when it is long
      }
    }
    if (!escaped) this.groups.delete(text);
    for (const [key, lines] of byKey) this.budget.give(g.namespace, key, lines);
  }
}

/** What a route's series are dropped under, and taken back from (`route`: its label value, escaped). */
function routeKey(group: string, route: string): string {
  return `${group}\u0000${route}`;
}

/** The escaped route label value at the start of a child's label text (`,route="…"…`). */
function routeOf(rest: string): string {
  const end = /^,route="((?:[^"\\]|\\.)*)"/.exec(rest);
  return end ? end[1]! : '';
}

function groupText(namespace: string, gateway: string): string {
  return `namespace="${escapeLabel(namespace)}",gateway="${escapeLabel(gateway)}"`;
}

/** What a registry renders: a family's head, then its series. */
interface Exported {
  readonly name: string;
  readonly head: string;
  readonly labelNames: readonly string[];
  /** Exposition lines of one child (a histogram's: its buckets, sum and count). */
  readonly linesPerChild: number;
  /** Writes every series into `out`, yielding its full chunks as they fill. */
  write(out: TextBuffer, groups: Iterable<Group>): Generator<Buffer>;
}

function headOf(name: string, help: string, type: string): string {
  return `# HELP ${name} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}\n# TYPE ${name} ${type}\n`;
}

/** A metric family: its children are kept as label text, escaped once, under their gateway's group. */
export abstract class Family<C> implements Exported {
  readonly head: string;
  readonly overflowRest: string | undefined;
  private readonly overflowValues: string[];
  private readonly index: number;

  constructor(private readonly registry: FastRegistry, readonly name: string, help: string, readonly labelNames: readonly string[], type: string,
    readonly linesPerChild = 1) {
    this.head = headOf(name, help, type);
    this.index = registry.add(this);
    this.overflowValues = labelNames.slice(2).map(() => overflowValue);
    this.overflowRest = labelNames.length > 2 ? labelNames.slice(2).map((l) => `,${l}="${overflowValue}"`).join('') : undefined;
  }

  *write(out: TextBuffer, groups: Iterable<Group>): Generator<Buffer> {
    for (const g of groups) {
      const series = g.byFamily[this.index];
      if (!series) continue;
      // a chunk at a time, within a gateway too (one of 64 routes' histograms was ~1.7 MB at once)
      for (let k = 0; k < series.length; k += 2) {
        this.lines(out, g.text, series[k] as string, series[k + 1] as C);
        if (out.pending) yield* out.take();
      }
    }
  }

  protected abstract make(): C;
  /** Writes the series of one child: `group` then `rest` are its label pairs, without braces. */
  abstract lines(out: TextBuffer, group: string, rest: string, child: C): void;

  /** A child no registry exports: for the holders of a gateway's or route's series once forgotten. */
  detached(): C {
    return this.make();
  }

  /** The child for these label values (in labelNames order), made on first use. */
  labels(...values: string[]): C {
    const g = this.registry.group(values[0] ?? '', values[1] ?? '');
    let rest = '';
    if (g.spill) rest = this.overflowRest ?? '';
    else for (let i = 2; i < this.labelNames.length; i++) rest += `,${this.labelNames[i]}="${escapeLabel(values[i] ?? '')}"`;
    const series = (g.byFamily[this.index] ??= []);
    let index = g.indexes[this.index];
    if (!index && series.length > 2 * indexedPast) {
      index = g.indexes[this.index] = new Map();
      for (let k = 0; k < series.length; k += 2) index.set(series[k] as string, series[k + 1]);
    }
    if (index) {
      const found = index.get(rest);
      if (found) return found as C;
    } else {
      for (let k = 0; k < series.length; k += 2) if (series[k] === rest) return series[k + 1] as C;
    }
    // past its namespace's bound, the gateway's overflow series (one per family and gateway); a
    // gateway's own series (no label past its name) and its overflow series are always made. A
    // route's series take back only what the same route dropped; the gateway's, what it dropped.
    const key = this.labelNames[2] === 'route' ? routeKey(g.text, escapeLabel(values[2] ?? '')) : g.text;
    const always = rest === '' || rest === this.overflowRest;
    if (!this.registry.budget.take(g.namespace, key, this.linesPerChild, !always)) return this.labels(values[0] ?? '', values[1] ?? '', ...this.overflowValues);
    const c = this.make();
    const text = this.registry.rests.take(rest);
    series.push(text, c);
    index?.set(text, c);
    return c;
  }
}

/** Children of a family and gateway found by a scan, up to this many; past it, by an index. */
const indexedPast = 16;

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

/** One line: `name{group rest} value`. */
function sample(out: TextBuffer, name: string, group: string, rest: string, value: string): void {
  out.add(name);
  out.add('{');
  out.add(group);
  out.add(rest);
  out.add('} ');
  out.add(value);
  out.add('\n');
}

/** A sample value as prom-client writes it. */
function num(v: number): string {
  if (Number.isNaN(v)) return 'Nan';
  if (!Number.isFinite(v)) return v < 0 ? '-Inf' : '+Inf';
  return String(v);
}

export class CounterChild {
  value = 0;
  inc(n = 1): void {
    this.value += n;
  }
}

/** A family whose series are one value each (counters, gauges). */
abstract class ValueFamily<C extends { value: number }> extends Family<C> {
  lines(out: TextBuffer, group: string, rest: string, c: C): void { sample(out, this.name, group, rest, num(c.value)); }
}

type FamilyOptions = { name: string; help: string; labelNames: readonly string[] };

export class FastCounter extends ValueFamily<CounterChild> {
  constructor(registry: FastRegistry, o: FamilyOptions) { super(registry, o.name, o.help, o.labelNames, 'counter'); }
  protected make(): CounterChild { return new CounterChild(); }
}

export class GaugeChild {
  value = 0;
  inc(n = 1): void { this.value += n; }
  dec(n = 1): void { this.value -= n; }
  set(v: number): void { this.value = v; }
}

export class FastGauge extends ValueFamily<GaugeChild> {
  constructor(registry: FastRegistry, o: FamilyOptions) { super(registry, o.name, o.help, o.labelNames, 'gauge'); }
  protected make(): GaugeChild { return new GaugeChild(); }
}

/** A gauge read when scraped: its series are what `read` yields then, each its label values (in
 * labelNames order) and value; nothing is kept between scrapes, so nothing has to be forgotten. */
export class FastGaugeReader implements Exported {
  readonly head: string;
  readonly labelNames: readonly string[];
  readonly name: string;
  readonly linesPerChild = 1; // (nothing kept: read at each scrape, bounded by the listeners open)

  constructor(registry: FastRegistry, o: FamilyOptions, private readonly read: () => Iterable<{ values: string[]; value: number }>) {
    this.name = o.name;
    this.labelNames = o.labelNames;
    this.head = headOf(o.name, o.help, 'gauge');
    registry.add(this);
  }

  *write(out: TextBuffer): Generator<Buffer> {
    for (const { values, value } of this.read()) {
      let rest = '';
      for (let i = 2; i < this.labelNames.length; i++) rest += `,${this.labelNames[i]}="${escapeLabel(values[i] ?? '')}"`;
      sample(out, this.name, groupText(values[0] ?? '', values[1] ?? ''), rest, num(value));
      if (out.pending) yield* out.take();
    }
  }
}

export class HistogramChild {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length);
  }
  observe(v: number): void {
    this.sum += v;
    this.count++;
    const b = this.bounds;
    for (let i = 0; i < b.length; i++) {
      if (v <= b[i]!) {
        this.counts[i]!++;
        return;
      }
    }
  }
}

export class FastHistogram extends Family<HistogramChild> {
  private readonly buckets: readonly number[];
  private readonly le: readonly string[];
  private readonly bucket: string;
  private readonly sum: string;
  private readonly count: string;
  constructor(registry: FastRegistry, o: FamilyOptions & { buckets: readonly number[] }) {
    super(registry, o.name, o.help, o.labelNames, 'histogram', o.buckets.length + 3); // buckets, +Inf, sum, count
    this.buckets = o.buckets;
    this.bucket = `${o.name}_bucket{`;
    this.sum = `${o.name}_sum`;
    this.count = `${o.name}_count`;
    this.le = [...o.buckets.map(String), '+Inf'].map((b) => `,le="${b}"} `);
  }
  protected make(): HistogramChild { return new HistogramChild(this.buckets); }
  lines(out: TextBuffer, group: string, rest: string, c: HistogramChild): void {
    let cumulative = 0;
    for (let i = 0; i <= this.buckets.length; i++) {
      cumulative = i < this.buckets.length ? cumulative + c.counts[i]! : c.count;
      out.add(this.bucket);
      out.add(group);
      out.add(rest);
      out.add(this.le[i]!);
      out.add(String(cumulative));
      out.add('\n');
    }
    sample(out, this.sum, group, rest, num(c.sum));
    sample(out, this.count, group, rest, String(c.count));
  }
}
