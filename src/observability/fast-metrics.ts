// Metrics the request path touches: a child is a plain object the request path bumps (prom-client
// hashes the label values on every call of a child, even a pre-bound one). Children are made when
// a route is planned, so every series exists at zero before its first event, and each keeps its
// label text, so a scrape only copies that text and the numbers into one buffer (prom-client builds
// objects and strings per series per scrape: 300 ms and tens of MiB of heap for 1,000 gateways).
// Same exposition as prom-client's.

/** Text appended into 64 KiB chunks taken from `spare` (the chunks of finished scrapes): a scrape
 * makes no garbage, on the JS heap or in malloc's arenas, which would not give it back at once. */
export class TextBuffer {
  readonly chunks: Buffer[] = [];
  private buf: Buffer;
  private len = 0;

  constructor(private readonly spare: Buffer[] = [], private readonly chunkSize = chunk) {
    this.buf = this.take(0);
  }

  add(s: string): void {
    if (this.len + s.length * 3 > this.buf.length) {
      this.flush();
      this.buf = this.take(s.length * 3);
    }
    this.len += this.buf.write(s, this.len);
  }

  /** Every chunk written so far. */
  done(): Buffer[] {
    this.flush();
    return this.chunks;
  }

  private take(need: number): Buffer {
    const b = need <= this.chunkSize ? this.spare.pop() : undefined;
    return b ?? Buffer.allocUnsafeSlow(Math.max(this.chunkSize, need));
  }

  private flush(): void {
    if (this.len > 0) this.chunks.push(this.buf.subarray(0, this.len));
    this.len = 0;
  }
}

const chunk = 1 << 16;

interface Entry<C> { values: readonly string[]; text: string; child: C }

/** The families of one registry, rendered in the text exposition format. */
export class FastRegistry {
  private readonly families: Family<unknown>[] = [];
  private readonly spare: Buffer[] = [];
  /** At most one scrape's worth of chunks waits for the next. */
  private spareMax = 0;

  add(f: Family<unknown>): void {
    this.families.push(f);
  }

  /** The exposition, and `release` to call once it is written (its chunks serve the next scrape). */
  render(): { chunks: Buffer[]; release: () => void } {
    const out = new TextBuffer(this.spare);
    for (const f of this.families) f.render(out);
    const chunks = out.done();
    this.spareMax = Math.max(this.spareMax, chunks.length);
    let released = false;
    return {
      chunks,
      release: () => {
        if (released) return;
        released = true;
        for (const c of chunks) {
          if (c.buffer.byteLength === chunk && this.spare.length < this.spareMax) this.spare.push(Buffer.from(c.buffer, 0, chunk));
        }
      },
    };
  }

  /** Drops every series whose first label values are `prefix` (a deleted gateway's). */
  forget(...prefix: string[]): void {
    for (const f of this.families) f.forget(prefix);
  }
}

export abstract class Family<C> {
  private readonly children = new Map<string, Entry<C>>();
  private readonly head: string;

  constructor(registry: FastRegistry, readonly name: string, help: string, readonly labelNames: readonly string[], type: string) {
    this.head = `# HELP ${name} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}\n# TYPE ${name} ${type}\n`;
    registry.add(this as Family<unknown>);
  }

  protected abstract make(): C;
  /** Writes the series of one child: `text` is its label pairs, without braces. */
  protected abstract lines(out: TextBuffer, text: string, child: C): void;

  /** The child for these label values (in labelNames order), made on first use. */
  labels(...values: string[]): C {
    const key = values.join('\u0000');
    let e = this.children.get(key);
    if (!e) {
      const text = this.labelNames.map((n, i) => `${n}="${escapeLabel(values[i] ?? '')}"`).join(',');
      e = { values, text, child: this.make() };
      this.children.set(key, e);
    }
    return e.child;
  }

  render(out: TextBuffer): void {
    out.add(this.head);
    for (const e of this.children.values()) this.lines(out, e.text, e.child);
  }

  forget(prefix: readonly string[]): void {
    for (const [key, e] of this.children) {
      if (prefix.every((v, i) => e.values[i] === v)) this.children.delete(key);
    }
  }
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

/** One line: `name{text} value`. */
function sample(out: TextBuffer, name: string, text: string, value: string): void {
  out.add(name);
  out.add('{');
  out.add(text);
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

export class FastCounter extends Family<CounterChild> {
  constructor(registry: FastRegistry, o: { name: string; help: string; labelNames: readonly string[] }) {
    super(registry, o.name, o.help, o.labelNames, 'counter');
  }
  protected make(): CounterChild { return new CounterChild(); }
  protected lines(out: TextBuffer, text: string, c: CounterChild): void { sample(out, this.name, text, num(c.value)); }
}

export class GaugeChild {
  value = 0;
  inc(n = 1): void { this.value += n; }
  dec(n = 1): void { this.value -= n; }
  set(v: number): void { this.value = v; }
}

export class FastGauge extends Family<GaugeChild> {
  constructor(registry: FastRegistry, o: { name: string; help: string; labelNames: readonly string[] }) {
    super(registry, o.name, o.help, o.labelNames, 'gauge');
  }
  protected make(): GaugeChild { return new GaugeChild(); }
  protected lines(out: TextBuffer, text: string, c: GaugeChild): void { sample(out, this.name, text, num(c.value)); }
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
  constructor(registry: FastRegistry, o: { name: string; help: string; labelNames: readonly string[]; buckets: readonly number[] }) {
    super(registry, o.name, o.help, o.labelNames, 'histogram');
    this.buckets = o.buckets;
    this.bucket = `${o.name}_bucket{`;
    this.sum = `${o.name}_sum`;
    this.count = `${o.name}_count`;
    this.le = [...o.buckets.map(String), '+Inf'].map((b) => `,le="${b}"} `);
  }
  protected make(): HistogramChild { return new HistogramChild(this.buckets); }
  protected lines(out: TextBuffer, text: string, c: HistogramChild): void {
    let cumulative = 0;
    for (let i = 0; i <= this.buckets.length; i++) {
      cumulative = i < this.buckets.length ? cumulative + c.counts[i]! : c.count;
      out.add(this.bucket);
      out.add(text);
      out.add(this.le[i]!);
      out.add(String(cumulative));
      out.add('\n');
    }
    sample(out, this.sum, text, num(c.sum));
    sample(out, this.count, text, String(c.count));
  }
}
