// The AccessGateway controller: the gateway source and the cluster's caches feed keys to a
// generic controller that runs the gateway reconciler. Ports held before a restart are given
// back before the first reconcile; /readyz waits for every gateway seen at start-up.
import type { Logger } from 'pino';
import { canonical, digest } from '../api/canonical.js';
import { keyOf, splitKey } from '../api/keys.js';
import type { AccessGateway } from '../api/types.js';
import { realClock, type Clock } from '../clock.js';
import type { KubeClient } from '../kube/client.js';
import type { GatewayKeeper, GatewayReader } from '../kube/gateways.js';
import type { InformerEvent } from '../kube/informer.js';
import type { Metrics } from '../observability/metrics.js';
import { ClusterState } from './cluster-state.js';
import { exposedPrefix, type ExposurePolicy } from './exposure.js';
import { Controller } from './controller.js';
import { SpecKeeper } from './gateway-specs.js';
import { GatewayReconciler, recordOf, type Dataplane, type EventSink, type ExposureWriter, type StatusWriter } from './gateway-reconciler.js';
import { NamespaceLimit, rankOf } from './namespace-limit.js';
import { PortAllocator } from './ports.js';
import { RefIndex, type Ref } from './ref-index.js';

/** Where gateways come from: the cluster (a watch) or files (`serve`). */
export interface GatewaySource {
  start(): void;
  firstSync(): Promise<void>;
  stop(): Promise<void>;
  get(ns: string, name: string): AccessGateway | undefined;
  keys(): string[];
  values(): IterableIterator<AccessGateway>;
  /** Reads a gateway again, whole (a cluster's source; one of files keeps every gateway whole). */
  read?: GatewayReader;
  /** Caches `obj` in place of its key's cached object, if `when` holds for that one. */
  replace?(obj: AccessGateway, when: (cached: AccessGateway) => boolean): boolean;
}

/** `decodeMs`: what reading the event took (a gateway's JSON: ~3.7 ms for 1.5 MB), charged to its namespace. */
export type GatewayEvents = (type: InformerEvent, obj: AccessGateway, old: AccessGateway | undefined, decodeMs?: number) => void;

export interface GatewayControllerOptions {
  client: KubeClient;
  /** Makes the gateway source, given the handler of its events and what to cache of a gateway
   * read (a source that caches: without its spec over the namespace limit). */
  source: (onEvent: GatewayEvents, keeper: GatewayKeeper) => GatewaySource;
  dataplane: Dataplane;
  writeStatus: StatusWriter;
  events?: EventSink;
  exposure?: ExposureWriter;
  exposurePolicy?: ExposurePolicy;
  /** The platform's OIDC issuers by URL (null: usable, else the problem). */
  issuers?: Record<string, string | null>;
  isLeader?: () => boolean;
  jwksReady?: { ready(): boolean };
  /** Namespaces to watch Services, EndpointSlices, Secrets... in; empty: all. */
  namespaces: string[];
  /** --endpoint-addresses: `pods` (default) uses an EndpointSlice address only when it is an IP of
   * the running pod its endpoint names, in the Service's namespace; `any` does not check. */
  endpointAddresses?: 'pods' | 'any';
  portRange: [number, number];
  /** The ports a spec may ask for (spec.listener.port); default all. */
  requestablePorts?: [number, number];
  /** How long a port a gateway gave up stays its namespace's (0: given to anyone at once). */
  releasedPortHoldMs?: number;
  maxGatewaysPerNamespace?: number;
  /** Bytes of labelled Secrets and ConfigMaps a namespace may hold (0: no bound). */
  maxLabelledBytesPerNamespace?: number;
  advertiseHost: string;
  workers?: number;
  resyncMs?: number;
  log: Logger;
  metrics?: Metrics;
  clock?: Clock;
}

/** A namespace's reconciles may take this share of the event loop every listener shares (after a
 * burst): past it, its gateways wait, so one team's costly specs cannot slow another's requests. */
const reconcileTime = { msPerSecond: 100, burstMs: 1_000 };

export class GatewayController {
  private readonly gateways: GatewaySource;
  private readonly cluster: ClusterState;
  private readonly ports: PortAllocator;
  private readonly limit: NamespaceLimit;
  private readonly specs: SpecKeeper;
  private readonly refs = new RefIndex();
  private readonly reconciler: GatewayReconciler;
  private readonly controller: Controller;
  /** Gateways present at start-up not reconciled yet: /readyz waits for them. */
  private readonly initial = new Set<string>();
  private listed = false;
  private resyncTimer?: NodeJS.Timeout;

  constructor(private readonly opts: GatewayControllerOptions) {
    const clock = opts.clock ?? realClock;
    // a namespace holds as many ports it gave up as it may have gateways (16 without a limit), or
    // as many as its gateways held at once lately
    this.ports = new PortAllocator(opts.portRange, () => clock.now(), opts.releasedPortHoldMs ?? 0, opts.maxGatewaysPerNamespace, opts.requestablePorts);
    this.limit = new NamespaceLimit(opts.maxGatewaysPerNamespace ?? 0);
    this.specs = new SpecKeeper(opts.maxGatewaysPerNamespace ?? 0);
    this.gateways = opts.source((type, obj, old, decodeMs) => {
      // a team's gateways are read again after each status write: a large one's JSON is its time
      if (decodeMs) this.charge(obj.metadata.namespace ?? '', decodeMs, true);
      this.onGatewayEvent(type, obj, old);
    }, this.specs);
    this.cluster = new ClusterState(opts.client, { namespaces: opts.namespaces, log: opts.log, metrics: opts.metrics, onChange: (ref) => this.onRef(ref), endpointAddresses: opts.endpointAddresses ?? 'pods',
      maxLabelledBytesPerNamespace: opts.maxLabelledBytesPerNamespace ?? 0, charge: (ns, ms) => this.charge(ns, ms, true),
      onOwnedGone: (ns, name, uid) => this.ownedGone(ns, name, uid) });
    this.reconciler = new GatewayReconciler({
      gateways: this.gateways, cluster: this.cluster, dataplane: opts.dataplane, ports: this.ports,
      writeStatus: opts.writeStatus, events: opts.events, exposure: opts.exposure, exposurePolicy: opts.exposurePolicy, issuers: opts.issuers, isLeader: opts.isLeader, jwksReady: opts.jwksReady,
      limit: this.limit, advertiseHost: opts.advertiseHost, ...(this.gateways.read ? { readWhole: (gw) => this.readWhole(gw) } : {}),
      requeue: (k, afterMs) => (afterMs === undefined ? this.controller.enqueue(k) : this.controller.queue.addAfter(k, afterMs)), clock,
      // not before every gateway seen at start was reconciled once: /readyz waits for them all
      charge: (ns, ms) => this.charge(ns, ms),
    });
    this.controller = new Controller({
      name: 'accessgateway', reconcile: (key, log) => this.reconciler.reconcile(key, log), workers: opts.workers,
      groupOf: (key) => splitKey(key).namespace, // teams take turns on the queue
      groupTime: reconcileTime,
      log: opts.log, metrics: opts.metrics, clock, onReconciled: (key) => this.initial.delete(key),
    });
  }

  /** A team's reconcile, or its gateway's decoding (`reading`), charged to its namespace once
   * start-up is done. */
  private charge(namespace: string, ms: number, reading = false): void {
    if (this.ready) this.controller.queue.charge(namespace, ms, reading);
  }

  /** A gateway's agw-NAME Service or EndpointSlice was deleted (`name`, its controller's `uid`):
   * written again at its reconcile, though the cache may never have shown it (created and
   * deleted before a reconcile read it). */
  private ownedGone(namespace: string, name: string, uid: string): void {
    const gw = name.startsWith(exposedPrefix) ? this.gateways.get(namespace, name.slice(exposedPrefix.length)) : undefined;
    if (gw?.metadata.uid === uid) this.reconciler.exposureGone(keyOf(gw));
  }

  /** A gateway cached without its spec took a place under the limit: read again, cached whole
   * (and indexed by what it names) if no event has changed the cached object meanwhile. */
  private async readWhole(gw: AccessGateway): Promise<void> {
    const { namespace = '', name } = gw.metadata;
    const read = await this.gateways.read!(namespace, name);
    this.charge(namespace, read.decodeMs, true);
    // gone or made again: its events follow
    if (!read.gw || read.gw.metadata.uid !== gw.metadata.uid || !this.gateways.replace?.(read.gw, (cached) => cached === gw)) return;
    this.index(keyOf(read.gw), this.specs.keep(read.gw)); // (kept in place: whole, unless it lost its place meanwhile)
  }

  /** Caches synced and every gateway seen at start-up reconciled once (or gone). */
  get ready(): boolean {
    if (!this.listed) return false;
    for (const k of this.initial) {
      const { namespace, name } = splitKey(k);
      if (this.gateways.get(namespace, name)) return false;
      this.initial.delete(k);
    }
    return true;
  }

  async start(): Promise<void> {
    this.gateways.start();
    this.cluster.start();
    await Promise.all([this.gateways.firstSync(), this.cluster.firstSync()]);
    // ports held before a restart go back to their gateways before anyone else may claim them
    // (not to one over the limit now: it would give its port up at once, held for its namespace)
    this.ports.seed([...this.gateways.values()].filter((gw) => this.limit.served(keyOf(gw))).map(recordOf));
    for (const key of this.gateways.keys()) this.initial.add(key);
    this.listed = true;
    this.controller.start();
    this.resyncTimer = setInterval(() => this.resync(), this.opts.resyncMs ?? 300_000);
    this.resyncTimer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.resyncTimer);
    await this.controller.stop();
    await Promise.all([this.gateways.stop(), this.cluster.stop()]);
  }

  /** Reconciles every gateway (periodically, and when something all of them depend on changed). */
  resync(): void {
    for (const k of this.gateways.keys()) this.controller.enqueue(k);
  }

  /** Leadership gained: reconcile everything so this replica writes what the old leader did not. */
  resyncAll(): void {
    this.reconciler.forgetWrites();
    this.resync();
  }

  /** A gateway changed: reconcile it, unless the change is only the status this replica wrote. */
  private onGatewayEvent(type: InformerEvent, obj: AccessGateway, old: AccessGateway | undefined): void {
    const key = keyOf(obj);
    // a gateway that came or went under the namespace limit: those whose place it changed, in the
    // order that frees a port before it is claimed
    if (type === 'delete') this.specs.gone(key);
    // charged to the namespace as reading its event is (a served gateway's delete scans those
    // waiting: ~1.5 ms among 50,000)
    const started = performance.now();
    const moved = type === 'delete' ? this.limit.delete(key) : this.limit.set(key, rankOf(obj));
    this.index(key, type === 'delete' ? undefined : obj);
    for (const k of moved) {
      const { namespace, name } = splitKey(k);
      this.index(k, this.gateways.get(namespace, name));
    }
    this.charge(obj.metadata.namespace ?? '', performance.now() - started, true);
    if (moved.length) {
      // it left or lost its place: it lets go of its port first; it took others' places: they do
      if (type === 'delete' || !this.limit.served(key)) this.reconciler.requeueAfter(key, moved);
      else for (const k of moved) this.controller.enqueue(k);
      this.controller.enqueue(key);
      return;
    }
    if (type === 'update' && old && old.metadata.generation === obj.metadata.generation
      && canonical(old.metadata.annotations) === canonical(obj.metadata.annotations)
      && digest(obj.status) === this.reconciler.lastWritten(key)) return;
    // gone with nothing made for it: not left waiting (its team's share may be spent for a while)
    if (type === 'delete' && this.reconciler.holdsNothing(key)) this.controller.queue.drop(key);
    else this.controller.enqueue(key);
  }

  /** Served gateways are found by what they refer to; those over the limit read nothing. */
  private index(key: string, gw: AccessGateway | undefined): void {
    if (gw && this.limit.served(key)) this.refs.set(key, gw);
    else this.refs.delete(key);
  }

  /** A referenced object changed (an agw-NAME object too: its gateway decides): reconcile the
   * gateways that refer to it. */
  private onRef(ref: Ref): void {
    for (const k of this.refs.referring(ref)) this.controller.enqueue(k);
  }
}
