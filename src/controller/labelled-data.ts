// The labelled Secrets and ConfigMaps gateways name (listener certificates, CA bundles), watched
// and kept as read. A namespace's hold at most --max-labelled-mib-per-namespace: past it, all of
// that namespace's are kept without their data and its gateways naming one are not served, until
// it holds less again; then they are read again.
import type { Logger } from 'pino';
import type { KubeClient } from '../kube/client.js';
import type { Metrics } from '../observability/metrics.js';
import { dataListMaxPage, dataListPage, listPages, type KubeObject } from '../kube/informer.js';
import { Watched } from '../kube/watched.js';
import { decodeData } from '../kube/wire-objects.js';
import { caBundleLabel, listenerTLSLabel } from '../api/labels.js';
import { DataBudget, dataBytes } from './data-budget.js';
import type { Ref } from './ref-index.js';

/** As cached: `bytes`, what its data counts against the bound; `setAside`, kept without data. */
export type Labelled = KubeObject & { type?: string; data?: Record<string, string>; setAside?: true; bytes?: number };

/** Namespaces read again at once (each a page of 10 to 32 objects, at most 16 MiB, in memory). */
const readsAtOnce = 4;

/** What an object counts against the bound besides its data: what is kept of it (its name, uid,
 * version: ~200 bytes of heap). Without it, 50,000 labelled objects without data were free, and
 * each time their namespace came back under the bound all of them were listed again. */
export const objectBytes = 256;

interface Source {
  name: string;
  kind: 'Secret' | 'ConfigMap';
  plural: 'secrets' | 'configmaps';
  label: string;
  trim: (o: Labelled) => Labelled;
  /** Its protobuf (wire-objects.ts): a team's 1 MB of `<` in a ConfigMap is 6 MB as JSON. */
  decode: (msg: Buffer) => Labelled;
  watch: Watched<Labelled>;
}

/** Who it is; not its labels, annotations, managed fields or owners (a team makes them as large as it likes). */
function identity(o: Labelled): Labelled['metadata'] {
  const m = o.metadata;
  return { name: m.name, namespace: m.namespace, uid: m.uid, resourceVersion: m.resourceVersion };
}

/** A listener's TLS Secret as read: its type, `tls.crt` and `tls.key` (not its other keys). */
function trimTLSSecret(o: Labelled): Labelled {
  const d = o.data ?? {};
  const data: Record<string, string> = {};
  for (const k of ['tls.crt', 'tls.key']) if (d[k] !== undefined) data[k] = d[k];
  return { metadata: identity(o), type: o.type, data };
}

/** A CA bundle's Secret or ConfigMap as read: its data (a reference may name any key). */
function trimData(o: Labelled): Labelled {
  return { metadata: identity(o), ...(o.data ? { data: o.data } : {}) };
}

function setAside(o: Labelled, bytes: number): Labelled {
  return { metadata: o.metadata, setAside: true, bytes };
}

export class LabelledData {
  static trimTLSSecret = trimTLSSecret;
  static trimData = trimData;
  readonly watches: Watched<Labelled>[];
  private readonly sources: Source[];
  private readonly tls: Source;
  private readonly caSecrets: Source;
  private readonly caConfigMaps: Source;
  private readonly budget: DataBudget;
  /** By namespace, what objects read but not cached yet (a list's, until it is whole) will change
   * its count, by key: a list is held to the bound as it is read, not only once it is whole. */
  private readonly pending = new Map<string, { sum: number; byKey: Map<string, number> }>();
  /** Namespaces being read again; `again`: asked for once more meanwhile. */
  private readonly reading = new Map<string, { again: boolean }>();
  private running = 0;
  private readonly waiting: (() => void)[] = [];
  private closed = false;
  /** A CA Secret's keys decoded, by the object as cached (a new one for each version): once, and
   * the same string in each plan (a plan an open request holds keeps its own copy otherwise). */
  private readonly decoded = new WeakMap<Labelled, Map<string, string>>();

  constructor(private readonly client: KubeClient, private readonly opts: {
    namespaces: string[]; log: Logger; metrics?: Metrics; maxBytesPerNamespace: number; onChange: (ref: Ref) => void;
    /** Default `objectBytes` (tests set 0 to count data alone). */
    bytesPerObject?: number;
    /** What reading a watch event's object took, charged to its namespace. */
    charge?: (namespace: string, ms: number) => void;
  }) {
    this.budget = new DataBudget(opts.maxBytesPerNamespace);
    this.tls = this.source('secrets(listener-tls)', 'Secret', listenerTLSLabel, trimTLSSecret);
    this.caSecrets = this.source('secrets(ca-bundle)', 'Secret', caBundleLabel, trimData);
    this.caConfigMaps = this.source('configmaps(ca-bundle)', 'ConfigMap', caBundleLabel, trimData);
    this.sources = [this.tls, this.caSecrets, this.caConfigMaps];
    this.watches = this.sources.map((s) => s.watch);
  }

  /** No more reading again, nor changes told (the watches are stopped by their owner). */
  close(): void {
    this.closed = true;
  }

  /** A listener's TLS Secret, or 'aside' while its namespace is over the bound. */
  listenerSecret(ns: string, name: string): Labelled | 'aside' | undefined {
    return this.found(ns, this.tls.watch.get(ns, name));
  }

  /** A CA bundle's text under `key` (a Secret's decoded: that key's only, a team may give it
   * thousands), null when it lacks the key, or 'aside' while its namespace is over the bound. */
  bundle(kind: 'Secret' | 'ConfigMap', ns: string, name: string, key: string): string | null | 'aside' | undefined {
    const o = this.found(ns, (kind === 'Secret' ? this.caSecrets : this.caConfigMaps).watch.get(ns, name));
    if (o === 'aside' || o === undefined) return o;
    const read = () => (o.data && Object.hasOwn(o.data, key) ? o.data[key]! : null);
    if (kind === 'ConfigMap') return read();
    let keys = this.decoded.get(o);
    if (!keys) this.decoded.set(o, (keys = new Map()));
    const known = keys.get(key);
    if (known !== undefined) return known;
    const v = read();
    if (v === null) return null;
    const text = Buffer.from(v, 'base64').toString('utf8');
    keys.set(key, text);
    return text;
  }

  /** Why a namespace's labelled objects are not read. */
  asideMessage(ns: string): string {
    const mib = Math.round((this.budget.max / 2 ** 20) * 100) / 100;
    return `the Secrets and ConfigMaps of namespace ${ns} labelled ${listenerTLSLabel}=true or ${caBundleLabel}=true hold more than ${mib} MiB `
      + `(the operator's --max-labelled-mib-per-namespace): none of them is read, and no gateway naming one is served, until they hold less; delete or unlabel those no gateway names`;
  }

  /** The namespace's count decides, whatever the copy says: one set aside in a namespace under the
   * bound (a read again that failed, a list that crossed it midway) is read again. */
  private found(ns: string, o: Labelled | undefined): Labelled | 'aside' | undefined {
    if (!o) return undefined;
    if (this.budget.over(ns)) return 'aside';
    if (!o.setAside) return o;
    if (!this.reading.has(ns)) this.readAgain(ns); // one that is reading replaces it, or is asked again when it ends
    return 'aside';
  }

  private source(name: string, kind: Source['kind'], label: string, trim: Source['trim']): Source {
    const plural = kind === 'Secret' ? 'secrets' : 'configmaps';
    const s = { name, kind, plural, label, trim, decode: decodeData(kind) } as Source;
    s.watch = new Watched<Labelled>(this.client, {
      namespaces: this.opts.namespaces, log: this.opts.log, metrics: this.opts.metrics,
      name, pageSize: dataListPage, maxPageSize: dataListMaxPage, labelSelector: `${label}=true`, protobuf: s.decode,
      path: (ns) => (ns ? `/api/v1/namespaces/${ns}/${plural}` : `/api/v1/${plural}`),
      trim: (o) => this.keep(s, o),
      onListStart: (ns) => this.listStarts(s, ns),
      onDecode: (o, ms) => this.opts.charge?.(o.metadata.namespace ?? '', ms),
      // counted as the cache changes (a list that failed midway counts nothing it read)
      onEvent: (type, o) => {
        const ns = o.metadata.namespace ?? '';
        const key = `${name} ${o.metadata.name}`;
        this.unpend(ns, key);
        if (this.budget.set(ns, key, type === 'delete' ? undefined : o.bytes ?? 0)) this.flipped(ns);
        // kept with data as read, over now (a list whose later objects crossed the bound)
        else if (type !== 'delete' && !o.setAside && this.budget.over(ns)) s.watch.replace(setAside(o, o.bytes ?? 0), (c) => c === o);
        this.changed(kind, ns, o.metadata.name);
      },
    });
    return s;
  }

  /** What the cache keeps of an object as it arrives: nothing of its data if its namespace would be
   * over, counting what the list it comes in has read before it. */
  private keep(s: Source, o: Labelled): Labelled {
    const ns = o.metadata.namespace ?? '';
    const key = `${s.name} ${o.metadata.name}`;
    const kept = s.trim(o);
    const bytes = this.bytesOf(kept);
    this.unpend(ns, key);
    const aside = this.budget.wouldBeOver(ns, key, bytes, this.pending.get(ns)?.sum ?? 0);
    const change = bytes - this.budget.bytesOf(ns, key);
    let p = this.pending.get(ns);
    if (!p) this.pending.set(ns, (p = { sum: 0, byKey: new Map() }));
    p.byKey.set(key, change);
    p.sum += change;
    return aside ? setAside(kept, bytes) : { ...kept, bytes };
  }

  /** What an object as kept counts against the bound. */
  private bytesOf(kept: Labelled): number {
    return dataBytes(kept.data) + (this.opts.bytesPerObject ?? objectBytes);
  }

  private unpend(ns: string, key: string): void {
    const p = this.pending.get(ns);
    const change = p?.byKey.get(key);
    if (change === undefined) return;
    p!.byKey.delete(key);
    p!.sum -= change;
    if (!p!.byKey.size) this.pending.delete(ns);
  }

  /** A new list: what an earlier one read and never cached (it failed) no longer counts. */
  private listStarts(s: Source, ns: string | undefined): void {
    for (const [n, p] of [...this.pending]) {
      if (ns !== undefined && n !== ns) continue;
      for (const key of [...p.byKey.keys()]) if (key.startsWith(`${s.name} `)) this.unpend(n, key);
    }
  }

  private changed(kind: Source['kind'], namespace: string, name: string): void {
    if (!this.closed) this.opts.onChange({ kind, namespace, name });
  }

  /** The namespace went over the bound (its cached data dropped) or back under (read again). */
  private flipped(ns: string): void {
    const over = this.budget.over(ns);
    this.opts.log.warn({ namespace: ns, bytes: this.budget.total(ns), bound: this.budget.max },
      over ? 'labelled Secrets and ConfigMaps over the bound: set aside, their gateways not served' : 'labelled Secrets and ConfigMaps under the bound again: reading them');
    if (!over) {
      this.readAgain(ns);
      return;
    }
    for (const key of [...this.budget.keys(ns)]) {
      const at = key.indexOf(' ');
      const s = this.sources.find((x) => x.name === key.slice(0, at))!;
      const o = s.watch.get(ns, key.slice(at + 1));
      if (!o || o.setAside) continue;
      s.watch.replace(setAside(o, o.bytes ?? 0), (c) => c === o);
      this.changed(s.kind, ns, o.metadata.name);
    }
  }

  /** Reads the namespace's labelled objects again: once at a time per namespace and at most once a
   * second (a namespace flipping over and under waits between passes, giving its place to
   * others), a few namespaces at once, in turn. */
  private readAgain(ns: string): void {
    const r = this.reading.get(ns);
    if (r) {
      r.again = true;
      return;
    }
    const state = { again: false };
    this.reading.set(ns, state);
    void (async () => {
      try {
        do {
          await this.slot();
          try {
            state.again = false;
            await this.readWithRetries(ns);
          } finally {
            this.unslot();
          }
          if (state.again && !this.closed) await new Promise((r) => setTimeout(r, 1000).unref());
        } while (state.again && !this.closed);
      } finally {
        this.reading.delete(ns);
      }
    })();
  }

  private async slot(): Promise<void> {
    if (this.running < readsAtOnce) {
      this.running++;
      return;
    }
    await new Promise<void>((go) => this.waiting.push(go)); // handed its place by unslot
  }

  private unslot(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.running--;
  }

  /** Puts back the data of those set aside (a few tries; else the next lookup of one tries again). */
  private async readWithRetries(ns: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        for (const s of this.sources) await this.readSource(s, ns);
        return;
      } catch (err) {
        if (this.closed) return;
        if (attempt >= 5) {
          this.opts.log.error({ namespace: ns, err: (err as Error).message }, 'labelled Secrets and ConfigMaps could not be read again; tried again when a gateway naming one is reconciled');
          return;
        }
        await new Promise((r) => setTimeout(r, 500 * 2 ** attempt).unref());
      }
    }
  }

  private async readSource(s: Source, ns: string): Promise<void> {
    if (this.closed || this.budget.over(ns)) return; // over again: its next way under reads again
    const path = (q: URLSearchParams) => { q.set('labelSelector', `${s.label}=true`); return `/api/v1/namespaces/${ns}/${s.plural}?${q}`; };
    for await (const page of listPages<Labelled>(this.client, path, { pageSize: dataListPage, maxPageSize: dataListMaxPage, protobuf: s.decode, what: `list ${s.name} of ${ns}` })) {
      for (const o of page.items ?? []) {
        if (this.closed || this.budget.over(ns)) return;
        const kept = s.trim(o);
        // only the version set aside: a newer one the watch brings is kept as it arrives
        if (s.watch.replace({ ...kept, bytes: this.bytesOf(kept) }, (c) => c.setAside === true && c.metadata.resourceVersion === kept.metadata.resourceVersion)) {
          this.changed(s.kind, ns, kept.metadata.name);
        }
      }
      if (this.closed || this.budget.over(ns)) return;
    }
  }
}
