// Metrics the request path touches: a child is a plain object the request path bumps (prom-client
// hashes the label values on every call of a child, even a pre-bound one); the registry reads the
// children when scraped. Children are made when a route is planned, so every series exists at zero
// before its first event. Same exposition, names and labels as prom-client's.
import type { Registry } from 'prom-client';

type Labels = Record<string, string>;
interface Value { labels: Labels; value: number; metricName?: string }

abstract class Family<C> {
  private readonly children = new Map<string, { labels: Labels; child: C }>();

  constructor(registry: Registry, readonly name: string, readonly help: string, readonly labelNames: readonly string[], readonly type: string) {
    registry.registerMetric(this as never);
  }

  protected abstract make(): C;
  protected abstract values(labels: Labels, child: C): Value[];

  /** The child for these label values (in labelNames order), made on first use. */
  labels(...values: string[]): C {
    const key = values.join('\u0000');
    let e = this.children.get(key);
    if (!e) {
      const labels: Labels = {};
      this.labelNames.forEach((n, i) => { labels[n] = values[i] ?? ''; });
      e = { labels, child: this.make() };
      this.children.set(key, e);
    }
    return e.child;
  }

  /** What prom-client's registry asks a metric for. */
  get(): { name: string; help: string; type: string; aggregator: string; values: Value[] } {
    const values: Value[] = [];
    for (const { labels, child } of this.children.values()) values.push(...this.values(labels, child));
    return { name: this.name, help: this.help, type: this.type, aggregator: 'sum', values };
  }

  reset(): void {
    this.children.clear();
  }
}

export class CounterChild {
  value = 0;
  inc(n = 1): void {
    this.value += n;
  }
}

export class FastCounter extends Family<CounterChild> {
  constructor(registry: Registry, o: { name: string; help: string; labelNames: readonly string[] }) {
    super(registry, o.name, o.help, o.labelNames, 'counter');
  }
  protected make(): CounterChild { return new CounterChild(); }
  protected values(labels: Labels, c: CounterChild): Value[] { return [{ labels, value: c.value }]; }
}

export class GaugeChild {
  value = 0;
  inc(n = 1): void { this.value += n; }
  dec(n = 1): void { this.value -= n; }
  set(v: number): void { this.value = v; }
}

export class FastGauge extends Family<GaugeChild> {
  constructor(registry: Registry, o: { name: string; help: string; labelNames: readonly string[] }) {
    super(registry, o.name, o.help, o.labelNames, 'gauge');
  }
  protected make(): GaugeChild { return new GaugeChild(); }
  protected values(labels: Labels, c: GaugeChild): Value[] { return [{ labels, value: c.value }]; }
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
  constructor(registry: Registry, o: { name: string; help: string; labelNames: readonly string[]; buckets: readonly number[] }) {
    super(registry, o.name, o.help, o.labelNames, 'histogram');
    this.buckets = o.buckets;
  }
  protected make(): HistogramChild { return new HistogramChild(this.buckets); }
  protected values(labels: Labels, c: HistogramChild): Value[] {
    const out: Value[] = [];
    let cumulative = 0;
    this.buckets.forEach((le, i) => {
      cumulative += c.counts[i]!;
      out.push({ labels: { ...labels, le: String(le) }, value: cumulative, metricName: `${this.name}_bucket` });
    });
    out.push({ labels: { ...labels, le: '+Inf' }, value: c.count, metricName: `${this.name}_bucket` });
    out.push({ labels, value: c.sum, metricName: `${this.name}_sum` });
    out.push({ labels, value: c.count, metricName: `${this.name}_count` });
    return out;
  }
}
