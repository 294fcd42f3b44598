// Wires informers, the work queue, reconcile and the data plane. Level-triggered: every
// reconcile recomputes the gateway's plan and status from the cache, whatever the event was.
import type { Logger } from 'pino';
import type { AccessGateway, AccessGatewayStatus } from '../api/types.js';
import type { Metrics } from '../observability/metrics.js';
import { applyDefaults } from '../api/defaults.js';
import type { ListenerManager } from '../dataplane/listener-manager.js';
import type { KubeClient } from '../kube/client.js';
import { applyOwned, gatewaysPath, writeStatus } from '../kube/gateways.js';
import { exposure } from './exposure.js';
import { EventRecorder } from '../kube/events.js';
import type { InformerEvent } from '../kube/informer.js';
import { translate } from '../translate/translate.js';
import { ClusterState, type Ref } from './cluster-state.js';
import { Watched } from '../kube/watched.js';
import { PortAllocator, type Claim } from './ports.js';
import { WorkQueue } from './queue.js';
import { TerminalError, type Result } from './reconcile.js';
import { canonical, desiredStatus } from './status.js';

export interface ManagerOptions {
  metrics?: Metrics;
  /** Addresses of the replicas to publish in each gateway's agw-NAME EndpointSlice; none: no exposure. */
  exposeAddresses?: () => string[];
  /** Only the leader writes status; every replica serves. Default: always leader. */
  isLeader?: () => boolean;
  namespaces: string[];
  portRange: [number, number];
  /** Gateways one namespace may have served (the oldest first); 0: no limit. */
  maxGatewaysPerNamespace?: number;
  advertiseHost: string;
  workers?: number;
  resyncMs?: number;
  log: Logger;
  /** JWKS verification readiness (keys loaded, revocation caches synced): a JWKS gateway is
   * Programmed only once it can verify, and is requeued when that happens. */
  jwksReady?: { ready(): boolean; onReady(cb: () => void): void };
}

/** Where gateways come from: the cluster (a watch) or files (`serve`). */
export interface GatewaySource {
  start(): void;
  firstSync(): Promise<void>;
  stop(): Promise<void>;
  get(ns: string, name: string): AccessGateway | undefined;
  keys(): string[];
  values(): IterableIterator<AccessGateway>;
}

export type GatewayEvents = (type: InformerEvent, obj: AccessGateway, old: AccessGateway | undefined) => void;

/** Where status goes: the /status subresource, or (for `serve`) memory and logs. */
export type StatusWriter = (gw: AccessGateway, status: AccessGatewayStatus) => Promise<void>;

export class Manager {
  private readonly gateways: GatewaySource;
  private readonly writeStatus: StatusWriter;
  private readonly cluster: ClusterState;
  readonly queue: WorkQueue;
  private readonly ports: PortAllocator;
  /** Status last written per key, so our own writes do not trigger reconciles. */
  private readonly written = new Map<string, string>();
  /** Gateways present at start-up, and every key reconciled since: /readyz waits for the first to be in the second. */
  private readonly initial = new Set<string>();
  private readonly reconciled = new Set<string>();
  /** Gateways waiting for a port another gateway holds: retried when a port is released. */
  private readonly waitingForPort = new Set<string>();
  private initialListed = false;
  private workers: Promise<void>[] = [];
  private resyncTimer?: NodeJS.Timeout;
  private reconcileSeq = 0;
  /** Exposure objects last applied per key (skip applies that change nothing). */
  private readonly exposed = new Map<string, string>();
  private readonly events: EventRecorder;

  constructor(private readonly client: KubeClient, private readonly dataplane: ListenerManager, private readonly opts: ManagerOptions & {
    /** Defaults to watching AccessGateways in the cluster. */
    source?: (onEvent: GatewayEvents) => GatewaySource;
    /** Defaults to the /status subresource. */
    writeStatus?: StatusWriter;
  }) {
    this.ports = new PortAllocator(opts.portRange);
    this.events = new EventRecorder(client, opts.log);
    const m = opts.metrics;
    this.queue = new WorkQueue(m ? {
      hooks: {
        add: () => m.queueAdds.inc(), retry: () => m.queueRetries.inc(),
        depth: (n) => m.queueDepth.set(n), waited: (s) => m.queueDuration.observe(s),
      },
    } : {});
    const onEvent: GatewayEvents = (type, obj, old) => this.onEvent(type, obj, old);
    this.gateways = opts.source ? opts.source(onEvent) : new Watched<AccessGateway>(client, {
      name: 'accessgateways', namespaces: opts.namespaces, path: gatewaysPath, log: opts.log, metrics: opts.metrics, onEvent,
    });
    this.writeStatus = opts.writeStatus ?? (async (gw, status) => { await writeStatus(client, gw, status); });
    this.cluster = new ClusterState(client, { namespaces: opts.namespaces, log: opts.log, metrics: opts.metrics, onChange: (ref) => this.onRef(ref) });
    opts.jwksReady?.onReady(() => { for (const k of this.keys()) this.queue.add(k); });
  }

  /** An Event when Ready changes status or reason: Programmed, or the reason it is not. */
  private recordTransition(gw: AccessGateway, status: AccessGatewayStatus): void {
    const before = gw.status?.conditions?.find((c) => c.type === 'Ready');
    const after = status.conditions?.find((c) => c.type === 'Ready');
    if (!after || (before && before.status === after.status && before.reason === after.reason)) return;
    const programmed = status.conditions?.find((c) => c.type === 'Programmed');
    void this.events.record(gw, after.status === 'True' ? 'Normal' : 'Warning',
      after.status === 'True' ? 'Programmed' : after.reason,
      after.status === 'True' ? programmed?.message ?? 'programmed' : after.message);
  }

  /** Leadership gained: reconcile everything so this replica writes what the old leader did not. */
  resyncAll(): void {
    this.exposed.clear();
    for (const k of this.keys()) this.queue.add(k);
  }

  /** A referenced object changed: reconcile the gateways that refer to it. */
  private onRef(ref: Ref): void {
    // an agw-NAME object changed (ours, or someone else's in the way): its gateway decides
    if (ref.kind === 'Service' && ref.name.startsWith('agw-') && this.gateways.get(ref.namespace, ref.name.slice(4))) {
      this.queue.add(`${ref.namespace}/${ref.name.slice(4)}`);
    }
    for (const gw of this.gateways.values()) {
      if (ClusterState.refersTo(gw, ref)) this.queue.add(`${gw.metadata.namespace}/${gw.metadata.name}`);
    }
  }

  /** Informers synced and every gateway seen at start-up reconciled once. */
  get ready(): boolean {
    if (!this.initialListed) return false;
    for (const k of this.initial) {
      if (!this.reconciled.has(k) && this.get(k)) return false;
      this.initial.delete(k);
    }
    return true;
  }

  async start(): Promise<void> {
    this.gateways.start();
    this.cluster.start();
    await Promise.all([this.gateways.firstSync(), this.cluster.firstSync()]);
    // ports held before a restart go back to their gateways before anyone else may claim them
    this.ports.seed([...this.gateways.values()].map((gw) => ({
      key: keyOf(gw), requested: gw.spec?.listener?.port, previous: gw.status?.listener?.port, rank: rankOf(gw),
    })));
    const n = this.opts.workers ?? 2;
    for (let w = 0; w < n; w++) this.workers.push(this.work());
    for (const key of this.keys()) this.initial.add(key);
    this.initialListed = true;
    this.resyncTimer = setInterval(() => { for (const k of this.keys()) this.queue.add(k); }, this.opts.resyncMs ?? 300_000).unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.resyncTimer);
    this.queue.shutdown();
    await Promise.all([this.gateways.stop(), this.cluster.stop()]);
    await Promise.all(this.workers);
  }

  /** Why a gateway is over its namespace's limit (it is not among the oldest N), or null. */
  private overLimit(gw: AccessGateway): string | null {
    const max = this.opts.maxGatewaysPerNamespace ?? 0;
    if (max <= 0) return null;
    const ns = gw.metadata.namespace;
    const rank = rankOf(gw);
    let older = 0;
    for (const other of this.gateways.values()) {
      if (other.metadata.namespace === ns && rankOf(other) < rank) older++;
    }
    return older < max ? null
      : `namespace ${ns} already has ${max} AccessGateways, the operator's limit (--max-gateways-per-namespace); this one is served when an older one is deleted`;
  }

  private keys(): string[] {
    return this.gateways.keys();
  }

  private get(key: string): AccessGateway | undefined {
    const [ns, name] = key.split('/') as [string, string];
    return this.gateways.get(ns, name);
  }

  private onEvent(type: InformerEvent, obj: AccessGateway, old: AccessGateway | undefined): void {
    const key = `${obj.metadata.namespace}/${obj.metadata.name}`;
    if (type === 'update' && old && old.metadata.generation === obj.metadata.generation
      && canonical(old.metadata.annotations) === canonical(obj.metadata.annotations)
      && canonical(obj.status) === this.written.get(key)) return;
    this.queue.add(key);
  }

  private async work(): Promise<void> {
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      const reconcileId = (++this.reconcileSeq).toString(36);
      const log = this.opts.log.child({ controller: 'accessgateway', key, reconcileId });
      const m = this.opts.metrics;
      const started = performance.now();
      let result = 'error';
      try {
        const r = await this.reconcile(key, log);
        this.queue.forget(key);
        result = r.requeueAfterMs ? 'requeue' : 'success';
        if (r.requeueAfterMs) this.queue.addAfter(key, r.requeueAfterMs);
      } catch (err) {
        if (err instanceof TerminalError) {
          log.error({ err }, 'reconcile failed (not retried)');
          this.queue.forget(key);
        } else {
          log.warn({ err: String(err), retries: this.queue.numRequeues(key) }, 'reconcile failed; retrying');
          this.queue.addRateLimited(key);
        }
      } finally {
        if (this.initial.size || !this.initialListed) this.reconciled.add(key);
        const seconds = (performance.now() - started) / 1000;
        m?.reconciles.inc({ result });
        m?.reconcileDuration.observe(seconds);
        m?.workDuration.observe(seconds);
        this.queue.done(key);
      }
    }
  }

  private async reconcile(key: string, log: Logger): Promise<Result> {
    const gw = this.get(key);
    if (!gw) {
      // stop listening first, so a gateway waiting for this port can bind it
      await this.dataplane.apply(key, null);
      this.ports.release(key);
      this.waitingForPort.delete(key);
      for (const k of this.waitingForPort) this.queue.add(k);
      this.written.delete(key);
      this.exposed.delete(key);
      // a place under the namespace limit may have come free
      const ns = key.slice(0, key.indexOf('/') + 1);
      for (const k of this.keys()) if (k.startsWith(ns)) this.queue.add(k);
      log.debug('gateway gone; listener closed');
      return {};
    }
    const spec = applyDefaults(gw);
    const over = this.overLimit(gw);
    let claim: Claim;
    if (over) {
      this.ports.release(key);
      claim = { conflict: over };
    } else {
      claim = this.ports.claim({ key, requested: spec.spec.listener?.port, previous: gw.status?.listener?.port, rank: rankOf(gw) });
    }
    if ('conflict' in claim && !over) this.waitingForPort.add(key);
    else this.waitingForPort.delete(key);
    const t = translate(spec, { port: 'port' in claim ? { port: claim.port } : { conflict: claim.conflict }, ...this.cluster.snapshotFor(spec) });
    if (over) t.conditions = t.conditions.map((c) => (c.type === 'Accepted' ? { ...c, reason: 'TooManyGateways' } : c));
    let applied = await this.dataplane.apply(key, t.plan);
    if (applied?.programmed && t.plan?.auth.mode === 'JWKS' && this.opts.jwksReady && !this.opts.jwksReady.ready()) {
      // Serving already (503 with Retry-After, never 401), but not Ready until tokens can be verified.
      applied = { programmed: false, reason: 'Pending', message: 'JWKS: waiting for the apiserver signing keys and the revocation caches '
        + '(service accounts, pods, secrets, nodes) to load; requests are answered 503 until then' };
    }
    let requeueAfterMs: number | undefined;
    if (applied && !applied.programmed && applied.reason === 'PortConflict') {
      const port = this.ports.portOf(key);
      if (port !== undefined && spec.spec.listener?.port === undefined) {
        // An allocated port that another process holds: pick another one on the next pass.
        this.ports.block(port);
        this.ports.release(key);
        requeueAfterMs = 100;
      } else {
        requeueAfterMs = 30_000;
      }
    }
    const port = 'port' in claim ? this.ports.portOf(key) : undefined;
    const leader = !this.opts.isLeader || this.opts.isLeader();
    const addresses = this.opts.exposeAddresses?.() ?? [];
    let url = port !== undefined && applied?.programmed ? `${t.plan?.tls ? 'https' : 'http'}://${this.opts.advertiseHost}:${port}` : undefined;
    if (port !== undefined && applied?.programmed && addresses.length && gw.metadata.uid) {
      const e = exposure(gw, port, t.plan!.tls !== null, addresses);
      const cached = this.cluster.exposureState(gw, e.service.metadata.name);
      if (cached.foreign) {
        // never write an object this gateway does not own (someone else's agw-NAME)
        applied = { programmed: false, reason: 'ExposureConflict', message: cached.foreign };
        url = undefined;
        this.exposed.delete(key);
      } else {
        url = e.url;
        const want = canonical([e.service, e.slice]);
        if (leader && this.exposed.get(key) !== want) {
          await applyOwned(this.client, e.service, cached.service);
          await applyOwned(this.client, e.slice, cached.slice);
          this.exposed.set(key, want);
        }
      }
    }
    const status = desiredStatus({
      generation: gw.metadata.generation ?? 0,
      previous: gw.status,
      drafts: t.conditions,
      applied,
      port,
      routes: t.routes,
      url,
      now: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    });
    const json = canonical(status);
    if (!leader) {
      log.debug('not the leader: status left to the leader');
    } else if (json !== canonical(gw.status)) {
      this.recordTransition(gw, status);
      this.written.set(key, json);
      await this.writeStatus(gw, status);
      log.info({ ready: status.conditions?.find((c) => c.type === 'Ready')?.status, port }, 'status written');
    } else {
      this.written.set(key, json);
    }
    return requeueAfterMs ? { requeueAfterMs } : {};
  }
}

function keyOf(gw: AccessGateway): string {
  return `${gw.metadata.namespace}/${gw.metadata.name}`;
}

/** Orders gateways by age (then key): the older wins a tie or a place under the limit. */
function rankOf(gw: AccessGateway): string {
  return `${gw.metadata.creationTimestamp ?? ''}/${keyOf(gw)}`;
}
