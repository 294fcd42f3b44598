// One watched resource across the operator's namespaces (one informer per namespace, or one
// cluster-wide), with lookups by namespace/name and an optional secondary index.
import type { Logger } from 'pino';
import type { KubeClient } from './client.js';
import type { Metrics } from '../observability/metrics.js';
import { Informer, objectKey, type InformerEvent, type KubeObject } from './informer.js';

export interface WatchedOptions<T> {
  name: string;
  /** Collection path for a namespace (or all namespaces when undefined). */
  path: (ns?: string) => string;
  namespaces: string[];
  labelSelector?: string;
  fieldSelector?: string;
  optional?: boolean;
  forbidden?: string;
  accept?: string;
  /** Lists and watches in protobuf: an object's message decoded by this (Informer's protobuf). */
  protobuf?: (msg: Buffer) => T;
  /** The part of each object the cache keeps; default all of it. */
  trim?: (obj: T) => T;
  /** A list of one of its informers begins: that of a namespace, or of all (undefined). */
  onListStart?: (ns: string | undefined) => void;
  /** Objects per list page (informer.ts listPage by default). */
  pageSize?: number;
  /** How far pages of small objects grow (informer.ts maxPageSize). */
  maxPageSize?: number;
  /** An update whose kept object is the same but for its resourceVersion (a team's annotations,
   * fields not kept) is cached, but not passed to onEvent: it asks for no reconcile. */
  quietWhenUnchanged?: boolean;
  /** Secondary index keys of an object, e.g. the Service an EndpointSlice belongs to. */
  indexBy?: (obj: T) => string | string[] | undefined;
  log: Logger;
  metrics?: Metrics;
  onEvent: (type: InformerEvent, obj: T, old: T | undefined, decodeMs?: number) => void;
  /** What reading each watch event's object took (ms), quiet ones too (`quietWhenUnchanged`). */
  onDecode?: (obj: T, decodeMs: number) => void;
}

export class Watched<T extends KubeObject> {
  private readonly informers: Informer<T>[];
  private readonly index = new Map<string, Map<string, T>>();

  constructor(client: KubeClient, private readonly opts: WatchedOptions<T>) {
    const nss = opts.namespaces.length ? opts.namespaces : [undefined];
    this.informers = nss.map((ns) => new Informer<T>(client, {
      name: `${opts.name}${ns ? `/${ns}` : ''}`,
      path: opts.path(ns),
      labelSelector: opts.labelSelector,
      fieldSelector: opts.fieldSelector,
      optional: opts.optional,
      forbidden: opts.forbidden,
      accept: opts.accept,
      protobuf: opts.protobuf,
      trim: opts.trim,
      onListStart: opts.onListStart && (() => opts.onListStart!(ns)),
      pageSize: opts.pageSize,
      maxPageSize: opts.maxPageSize,
      metrics: opts.metrics,
      log: opts.log,
      onEvent: (type, obj, old, decodeMs) => {
        if (decodeMs) opts.onDecode?.(obj, decodeMs);
        if (opts.indexBy) this.reindex(type, obj, old);
        if (opts.quietWhenUnchanged && type === 'update' && old && keptText(old) === keptText(obj)) return;
        opts.onEvent(type, obj, old, decodeMs);
      },
    }));
  }

  get synced(): boolean {
    return this.informers.every((i) => i.hasSynced);
  }

  start(): void {
    for (const i of this.informers) i.start();
  }

  firstSync(): Promise<void> {
    return Promise.all(this.informers.map((i) => i.firstSync)).then(() => undefined);
  }

  async stop(): Promise<void> {
    await Promise.all(this.informers.map((i) => i.stop()));
  }

  /** An object by namespace and name; ns '' for a cluster-scoped object. */
  get(ns: string, name: string): T | undefined {
    const key = ns ? `${ns}/${name}` : name; // as objectKey()
    for (const i of this.informers) {
      const o = i.cache.get(key);
      if (o) return o;
    }
    return undefined;
  }

  *values(): IterableIterator<T> {
    for (const i of this.informers) yield* i.cache.values();
  }

  keys(): string[] {
    return this.informers.flatMap((i) => [...i.cache.keys()]);
  }

  /** Puts `obj` in the place of the cached object of its key, if `when` holds for that one. */
  replace(obj: T, when: (cached: T) => boolean): boolean {
    const key = objectKey(obj);
    for (const i of this.informers) {
      const old = i.cache.get(key);
      if (!old) continue;
      if (!when(old)) return false;
      i.cache.set(key, obj);
      if (this.opts.indexBy) this.reindex('update', obj, old);
      return true;
    }
    return false;
  }

  byIndex(key: string): T[] {
    return [...(this.index.get(key)?.values() ?? [])];
  }

  private reindex(type: InformerEvent, obj: T, old: T | undefined): void {
    const k = objectKey(obj);
    for (const before of old ? this.keysOf(old) : []) {
      const was = this.index.get(before);
      was?.delete(k);
      if (was?.size === 0) this.index.delete(before); // names come and go: keep none that are empty
    }
    if (type === 'delete') return;
    for (const after of this.keysOf(obj)) {
      let m = this.index.get(after);
      if (!m) this.index.set(after, (m = new Map()));
      m.set(k, obj);
    }
  }

  private keysOf(obj: T): string[] {
    const keys = this.opts.indexBy!(obj);
    return keys === undefined ? [] : typeof keys === 'string' ? [keys] : keys;
  }
}

/** A kept object but for its resourceVersion, as text (kept objects are small). */
function keptText(o: KubeObject): string {
  return JSON.stringify({ ...o, metadata: { ...o.metadata, resourceVersion: undefined } });
}
