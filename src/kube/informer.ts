// A supervised informer: list, then watch from the list's resourceVersion with bookmarks;
// relist on 410 Gone; any other failure restarts the watch with jittered exponential backoff.
// A watch that stays silent past its own server-side timeout is cut (the idle timeout) and
// resumed, so a silently dead connection never leaves the cache stale.
import type { Logger } from 'pino';
import { realClock, sleep, type Clock } from '../clock.js';
import { ApiError, TooLarge, type KubeClient } from './client.js';
import type { Metrics } from '../observability/metrics.js';
import { decodeList } from './protobuf.js';

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string; generation?: number; uid?: string; labels?: Record<string, string>; [k: string]: unknown };
}

export type InformerEvent = 'add' | 'update' | 'delete';

export interface InformerOptions<T> {
  name: string;
  /** Collection path, e.g. /apis/access-gateway.io/v1alpha1/accessgateways */
  path: string;
  labelSelector?: string;
  fieldSelector?: string;
  log: Logger;
  /** `decodeMs`: what reading a watch event's object took (0 for a list's). */
  onEvent: (type: InformerEvent, obj: T, old: T | undefined, decodeMs?: number) => void;
  /** Server-side watch timeout range in seconds (client-go uses 5-10 minutes). */
  watchTimeoutSeconds?: [number, number];
  maxBackoffMs?: number;
  /** A resource whose CRD may be absent (404): counts as synced and empty, and is retried. */
  optional?: boolean;
  /** A resource the operator may not be allowed to list (403): counts as synced (and empty, if it
   * never was listed), `forbidden` is logged as an error, and it is retried after 1 s, doubling to
   * 30 s. What was listed before is kept, as on any error (the data plane serves from its caches
   * while the apiserver is away). */
  forbidden?: string;
  /** Accept header, e.g. metadata-only lists (PartialObjectMetadataList). */
  accept?: string;
  /** Lists and watches in protobuf (JSON where the server writes only that): an object's message
   * decoded by this (wire-objects.ts). With `accept`, that names the protobuf type first. */
  protobuf?: (msg: Buffer) => T;
  /** The part of each object the cache keeps (after stripForCache); default all of it. */
  trim?: (obj: T) => T;
  /** A list begins: the objects `trim` sees next are its, kept until the list is whole. */
  onListStart?: () => void;
  /** Objects asked for per list page at first (default listPage). */
  pageSize?: number;
  /** The most a page may grow to while pages are small (default pageSize). */
  maxPageSize?: number;
  /** The most of a page read before asking for fewer objects a page (default maxPageBytes). */
  maxPageBytes?: number;
  metrics?: Metrics;
  clock?: Clock;
}

/** Objects asked for per list page, at first. */
export const listPage = 100;
/** Per page for Secrets and ConfigMaps, at first (data up to 1 MiB each, 6 MiB as JSON). */
export const dataListPage = 10;
/** How far their pages grow while they are small: a team's 50,000 labelled ConfigMaps without
 * data took 5,000 lists of 10 before every team's listener certificates were read. Not further:
 * the apiserver makes a page whole before it is read (32 objects of ~1 MiB that follow small
 * ones: ~48 MiB there once, then asked for again in halves). */
export const dataListMaxPage = 32;
/**
 * The most of a list page read: past it the page is asked for again with half as many objects,
 * down to one. An object is at most ~1.5 MiB in etcd, but the apiserver's JSON may write it six
 * times as long (`<` as `\u003c`): one team's 100 Pending pods, each with 1.4 MB of `<` in an env
 * value, made one 800 MiB page that took the operator to 2.6 GiB, past V8's string limit, and no
 * replica starting could sync.
 */
export const maxPageBytes = 16 * 2 ** 20;

export interface ListPage<T> { items: T[] | null; metadata?: { continue?: string; resourceVersion?: string } }

/**
 * The pages of a list, each read to at most `maxBytes`: a page past it is asked for again with half
 * as many objects, down to one (past it then: TooLarge). After a page under a quarter of the bound
 * the next is twice as large again, up to `maxPageSize` (default `pageSize`, where it begins) and below the smallest size that was too large
 * in this list: a few large objects do not leave the rest of a long list read one by one, nor make
 * the apiserver write a page of a size that was too large again.
 */
export async function* listPages<T>(client: KubeClient, path: (query: URLSearchParams) => string,
  o: { pageSize: number; maxPageSize?: number; maxBytes?: number; accept?: string; protobuf?: (msg: Buffer) => T; what: string; log?: Logger; logFields?: Record<string, unknown> }): AsyncGenerator<ListPage<T>> {
  const item = o.protobuf;
  const protobuf = item && ((msg: Buffer) => decodeList(msg, item));
  const maxBytes = o.maxBytes ?? maxPageBytes;
  let cont: string | undefined;
  let limit = o.pageSize;
  let ceiling = Math.max(o.pageSize, o.maxPageSize ?? o.pageSize);
  for (;;) {
    let page: ListPage<T>;
    let bytes = 0;
    try {
      page = await client.request('GET', path(new URLSearchParams({ limit: String(limit), ...(cont ? { continue: cont } : {}) })),
        { timeoutMs: 60_000, accept: o.accept, protobuf, what: o.what, maxBytes, onBytes: (n) => { bytes = n; } });
    } catch (err) {
      if (!(err instanceof TooLarge) || limit === 1) throw err;
      ceiling = limit - 1; // the same page again, with fewer objects
      limit >>= 1;
      o.log?.info({ ...o.logFields, what: o.what, limit }, 'list page too large; asking for fewer objects a page');
      continue;
    }
    if (bytes < maxBytes / 4) limit = Math.max(limit, Math.min(ceiling, limit * 2));
    yield page;
    cont = page.metadata?.continue || undefined;
    if (!cont) return;
  }
}

class Gone extends Error {}
class Absent extends Error {}
class Forbidden extends Error {}

/**
 * What no reader of a cache needs and each object would otherwise carry: managedFields (a nested
 * object per field manager) and kubectl's last-applied annotation (a second copy of the object).
 */
export function stripForCache<T extends KubeObject>(o: T): T {
  const m = o?.metadata;
  if (!m) return o;
  delete m.managedFields;
  const a = m.annotations as Record<string, string> | undefined;
  if (a && 'kubectl.kubernetes.io/last-applied-configuration' in a) {
    delete a['kubectl.kubernetes.io/last-applied-configuration'];
    if (Object.keys(a).length === 0) delete m.annotations;
  }
  return o;
}

export function objectKey(o: KubeObject): string {
  return o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name;
}

export class Informer<T extends KubeObject> {
  readonly cache = new Map<string, T>();
  private synced = false;
  private readonly abort = new AbortController();
  private markSynced!: () => void;
  readonly firstSync = new Promise<void>((r) => { this.markSynced = r; });
  private running?: Promise<void>;

  private readonly clock: Clock;

  constructor(private readonly client: KubeClient, private readonly opts: InformerOptions<T>) {
    this.clock = opts.clock ?? realClock;
  }

  get hasSynced(): boolean {
    return this.synced;
  }

  start(): void {
    // at zero from the start: increase() counts the first restart
    this.opts.metrics?.informerRestarts.inc({ informer: this.opts.name }, 0);
    this.running ??= this.run();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.running;
  }

  private query(extra: Record<string, string>): string {
    const q = new URLSearchParams(extra);
    if (this.opts.labelSelector) q.set('labelSelector', this.opts.labelSelector);
    if (this.opts.fieldSelector) q.set('fieldSelector', this.opts.fieldSelector);
    return `${this.opts.path}?${q}`;
  }

  private async run(): Promise<void> {
    const { log } = this.opts;
    let rv: string | undefined;
    let failures = 0;
    let gone = 0;
    let refused = 0;
    while (!this.abort.signal.aborted) {
      try {
        rv ??= await this.list();
        await this.watch(rv, (next) => { rv = next; gone = 0; refused = 0; });
        failures = 0;
        refused = 0;
      } catch (err) {
        if (this.abort.signal.aborted) break;
        if (err instanceof Absent) this.opts.metrics?.informerLastSync.remove({ informer: this.opts.name }); // nothing to be stale about
        if (err instanceof Absent || err instanceof Forbidden) {
          if (err instanceof Forbidden) {
            log.error({ informer: this.opts.name, err: err.message }, this.opts.forbidden);
            this.opts.metrics?.informerRestarts.inc({ informer: this.opts.name });
          }
          this.markSyncedOnce();
          // refused: 1 s, doubling to 30 s (RBAC may still be on its way); absent: 30 s
          await sleep(err instanceof Forbidden ? Math.min(30_000, 1000 * 2 ** refused++) : 30_000, this.abort.signal, this.clock);
          continue;
        }
        if (err instanceof Gone) {
          log.info({ informer: this.opts.name }, 'resourceVersion too old; relisting');
          rv = undefined;
          // an apiserver whose watch cache is still starting answers 410 again and again
          if (++gone > 1) await sleep(Math.min(10_000, 200 * gone), this.abort.signal, this.clock);
          continue;
        }
        failures++;
        this.opts.metrics?.informerRestarts.inc({ informer: this.opts.name });
        const max = this.opts.maxBackoffMs ?? 30_000;
        const delay = Math.min(max, 250 * 2 ** Math.min(failures, 10)) * (0.5 + Math.random() / 2);
        log.warn({ informer: this.opts.name, err: String(err), retryInMs: Math.round(delay) }, 'watch failed; restarting');
        await sleep(delay, this.abort.signal, this.clock);
      }
    }
  }

  private async list(): Promise<string> {
    this.opts.onListStart?.();
    const items: T[] = [];
    let rv = '';
    const query = (q: URLSearchParams) => this.query(Object.fromEntries(q));
    try {
      for await (const page of listPages<T>(this.client, query, { pageSize: this.opts.pageSize ?? listPage, maxPageSize: this.opts.maxPageSize, maxBytes: this.opts.maxPageBytes,
        accept: this.opts.accept, protobuf: this.opts.protobuf, what: `list ${this.opts.path}`, log: this.opts.log, logFields: { informer: this.opts.name } })) {
        // kept as read, page by page: a whole list of untrimmed objects is never held at once
        for (const o of page.items ?? []) items.push(this.keep(o)); // an empty PartialObjectMetadataList has items: null
        rv = page.metadata?.resourceVersion ?? '';
      }
    } catch (err) {
      if (err instanceof ApiError && err.status === 410) throw new Gone('list continuation expired');
      if (err instanceof ApiError && err.status === 404 && this.opts.optional) throw new Absent(`${this.opts.path} is not served`);
      if (err instanceof ApiError && err.status === 403 && this.opts.forbidden) throw new Forbidden(err.message);
      throw err;
    }
    const seen = new Set<string>();
    for (const item of items) {
      const key = objectKey(item);
      seen.add(key);
      const old = this.cache.get(key);
      this.cache.set(key, item);
      if (!old) this.opts.onEvent('add', item, undefined);
      else if (old.metadata.resourceVersion !== item.metadata.resourceVersion) this.opts.onEvent('update', item, old);
    }
    for (const [key, old] of this.cache) {
      if (!seen.has(key)) {
        this.cache.delete(key);
        this.opts.onEvent('delete', old, old);
      }
    }
    this.markSyncedOnce();
    this.noteSync();
    return rv;
  }

  private keep(obj: T): T {
    stripForCache(obj);
    return this.opts.trim ? this.opts.trim(obj) : obj;
  }

  private noteSync(): void {
    this.opts.metrics?.informerLastSync.set({ informer: this.opts.name }, this.clock.now() / 1000);
  }

  private markSyncedOnce(): void {
    if (!this.synced) {
      this.synced = true;
      this.markSynced();
    }
  }

  private async watch(rv: string, setRv: (rv: string) => void): Promise<void> {
    const [lo, hi] = this.opts.watchTimeoutSeconds ?? [300, 600];
    const timeout = Math.round(lo + Math.random() * (hi - lo));
    const path = this.query({ watch: '1', resourceVersion: rv, allowWatchBookmarks: 'true', timeoutSeconds: String(timeout) });
    try {
      // a metadata-only list is a PartialObjectMetadataList, its watch events PartialObjectMetadata
      const accept = this.opts.accept?.replaceAll('as=PartialObjectMetadataList', 'as=PartialObjectMetadata');
      await this.client.watch(path, this.abort.signal, (timeout + 30) * 1000, accept, (ev, decodeMs) => {
        const obj = ev.object as T;
        if (ev.type === 'ERROR') { // not a sync: a watch that fails so each time would look recent
          const status = ev.object as { code?: number; message?: string };
          if (status.code === 410) throw new Gone(status.message);
          throw new Error(`watch error ${status.code}: ${status.message}`);
        }
        this.noteSync();
        if (obj?.metadata?.resourceVersion) setRv(obj.metadata.resourceVersion);
        if (ev.type === 'BOOKMARK') return;
        const kept = this.keep(obj);
        const key = objectKey(kept);
        const old = this.cache.get(key);
        if (ev.type === 'DELETED') {
          this.cache.delete(key);
          this.opts.onEvent('delete', kept, old, decodeMs);
        } else {
          this.cache.set(key, kept);
          this.opts.onEvent(old ? 'update' : 'add', kept, old, decodeMs);
        }
      }, this.opts.protobuf);
      // ended by the apiserver at its timeout, every event read: up to date, in a quiet cluster too
      // (not when it is opened: one that fails each time after it opened would look recent)
      this.noteSync();
    } catch (err) {
      if (err instanceof ApiError && err.status === 410) throw new Gone(err.message);
      throw err;
    }
  }
}
