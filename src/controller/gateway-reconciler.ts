// The AccessGateway reconciler: one key in, the gateway's listener, exposure and status brought
// to what its spec and the cluster say, as named steps. Level-triggered: every reconcile
// recomputes everything from the caches, whatever the event was.
import type { Logger } from 'pino';
import { digest } from '../api/canonical.js';
import { ConditionType, Reason } from '../api/conditions.js';
import { applyDefaults } from '../api/defaults.js';
import { keyOf, splitKey } from '../api/keys.js';
import type { AccessGateway, AccessGatewayStatus } from '../api/types.js';
import { TokenBucket } from '../bucket.js';
import { isoSeconds, realClock, type Clock } from '../clock.js';
import type { ApplyResult } from '../dataplane/listener-manager.js';
import { inSteps, type Pace } from '../steps.js';
import type { GatewayPlan } from '../translate/plan.js';
import { notAccepted, translateSteps, type Snapshot, type Translation } from '../translate/translate.js';
import { TerminalError, type Result } from './controller.js';
import { clusterIPOnly, exposure, exposureFor, loadBalancerURL, type ExposurePolicy } from './exposure.js';
import { rankOf, type NamespaceLimit } from './namespace-limit.js';
import type { ClaimRequest, PortAllocator } from './ports.js';
import { specDropped } from './gateway-specs.js';
import { accessExpiry, desiredStatus } from './status.js';

/** The gateways as the source has them (cluster watch or files). */
export interface GatewayStore {
  get(namespace: string, name: string): AccessGateway | undefined;
  values(): IterableIterator<AccessGateway>;
  keys(): string[];
}

/** What the cluster says beyond the spec (ClusterState). */
export interface ClusterView {
  snapshotFor(gw: AccessGateway): Omit<Snapshot, 'port'>;
  exposureState(gw: AccessGateway, name: string): { service: boolean; slice: boolean; foreign: string | null; ingress?: { ip?: string; hostname?: string } };
}

export interface Dataplane {
  /** `pace`: lets other work run while the plan's route table is made. */
  apply(key: string, plan: GatewayPlan | null, pace?: Pace): Promise<ApplyResult | null>;
}

/** Where status goes: the /status subresource, or (serve) memory. */
/** Resolves false when the gateway is gone (or made again) since it was read: nothing written. */
export type StatusWriter = (gw: AccessGateway, status: AccessGatewayStatus) => Promise<boolean | void>;

/** Kubernetes Events (the operator only). */
export interface EventSink {
  record(gw: AccessGateway, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void>;
}

/** The agw-NAME Service and EndpointSlice (the operator in a cluster only). */
export interface ExposureWriter {
  /** Addresses of the ready replicas; none: nothing is exposed. */
  addresses(): string[];
  /** false: a create found one there already (the cache had not shown it). */
  write(obj: { apiVersion: string; kind: string; metadata: { name: string; namespace: string } }, exists: boolean): Promise<boolean | void>;
}

export interface GatewayReconcilerDeps {
  gateways: GatewayStore;
  cluster: ClusterView;
  dataplane: Dataplane;
  ports: PortAllocator;
  writeStatus: StatusWriter;
  events?: EventSink;
  exposure?: ExposureWriter;
  /** The platform's OIDC issuers by URL (null: usable, else the problem); default none. */
  issuers?: Record<string, string | null>;
  /** What spec.listener.expose may ask for; default: ClusterIP, no annotations. */
  exposurePolicy?: ExposurePolicy;
  /** Only the leader writes status and owned objects; every replica serves. Default: always. */
  isLeader?: () => boolean;
  /** JWKS gateways are Ready only once tokens can be verified. */
  jwksReady?: { ready(): boolean };
  /** Which gateways are served under the per-namespace limit (the oldest N); default: all. */
  limit?: NamespaceLimit;
  /** Host named in status.listener.url when the gateway is not exposed. */
  advertiseHost: string;
  /** Reconciles another key (gateways waiting for a port or a place under the limit), after
   * `afterMs` if given. */
  requeue: (key: string, afterMs?: number) => void;
  /** Reads a gateway the cache keeps without its spec (over the limit when it was read) again,
   * and caches it whole if it is still the object cached. */
  readWhole?: (gw: AccessGateway) => Promise<void>;
  /** The event-loop time a reconcile of a gateway of `namespace` took (translate, apply): charged to the namespace. */
  charge?: (namespace: string, ms: number) => void;
  clock?: Clock;
}

type PortSnapshot = Snapshot['port'];

/** A gateway's status writes: a second's worth each 2 s, 5 at once (a new gateway takes 1–3). */
export const statusWritesPerSecond = 0.5;
export const statusWritesBurst = 5;
/** A namespace's status writes, all its gateways together: 20 a second, 200 at once (500 new
 * gateways of one namespace are written in ~15 s; a red team's namespace wrote ~2,000 a second,
 * each creating or editing a gateway, on the operator's one flow). */
export const namespaceStatusWritesPerSecond = 20;
export const namespaceStatusWritesBurst = 200;

export class GatewayReconciler {
  /** Status last written per key (its digest), and the resourceVersion the write was based on:
   * the watch event of our own write triggers nothing, and a cache that has not caught up yet
   * (still at that resourceVersion) causes no second write. */
  private readonly written = new Map<string, { digest: string; fromRv: string | undefined }>();
  /** Exposure objects last written per key (skip writes that change nothing), and whether the
   * cache has shown both since (then one gone was deleted by someone: written again). */
  private readonly exposed = new Map<string, { want: string; seen: boolean; refused?: Refused }>();
  /** Gateways waiting for a port another gateway holds, and which (undefined: any in the range):
   * retried when that one is released (`freed`). */
  private readonly waitingForPort = new Map<string, number | undefined>();
  /** Gateways whose place under the namespace limit a gateway's arrival or departure changed:
   * reconciled once that one has let go of its port (not before, to find the port still held). */
  private readonly after = new Map<string, string[]>();
  /** Each gateway's status writes (`statusWritesPerSecond`): a Service's endpoints flapping
   * changed each routing gateway's status.routes on every EndpointSlice event, and all of them
   * are written by the one operator client whose APF flow also carries every team's TokenReviews. */
  private readonly statusWrites = new Map<string, TokenBucket>();
  /** Each namespace's, together (`namespaceStatusWritesPerSecond`); full ones are forgotten past 1,024. */
  private readonly namespaceStatusWrites = new Map<string, TokenBucket>();
  private readonly clock: Clock;

  constructor(private readonly d: GatewayReconcilerDeps) {
    this.clock = d.clock ?? realClock;
  }

  /** The digest of the status this replica last wrote for `key`. */
  lastWritten(key: string): string | undefined {
    return this.written.get(key)?.digest;
  }

  /** `keys` are requeued once `key` has been reconciled as far as its port (or forgotten). */
  requeueAfter(key: string, keys: string[]): void {
    if (keys.length) this.after.set(key, [...(this.after.get(key) ?? []), ...keys]);
  }

  private requeueWaitingOn(key: string): void {
    for (const k of this.after.get(key) ?? []) this.d.requeue(k);
    this.after.delete(key);
  }

  /** The gateway's agw-NAME Service or EndpointSlice was deleted: its next reconcile writes it
   * again, whether or not the cache ever showed it (`seen`: else it waits for the cache to show
   * its own creates, which would be refused). */
  exposureGone(key: string): void {
    const e = this.exposed.get(key);
    if (e) e.seen = true;
  }

  /** Leadership changed hands: write status and exposure objects again even if this replica wrote them before. */
  forgetWrites(): void {
    this.exposed.clear();
    this.written.clear();
  }

  async reconcile(key: string, log: Logger): Promise<Result> {
    const { namespace, name } = splitKey(key);
    await turn(); // (another worker's chunk may have just run)
    let gw = this.d.gateways.get(namespace, name);
    if (!gw) return this.forget(key, log);
    if (specDropped(gw) && this.d.readWhole && (this.d.limit?.served(key) ?? true)) {
      // it took a place under the limit: its spec is read again (its events may come meanwhile)
      await this.d.readWhole(gw);
      gw = this.d.gateways.get(namespace, name);
      if (!gw) return this.forget(key, log);
      // made again meanwhile, its events not here yet: tried again, backing off
      if (specDropped(gw)) throw new Error('its spec was read again, but not for the object cached (made again meanwhile?)');
    }
    const defaulted = performance.now();
    const spec = applyDefaults(gw); // (a copy: a spec of 64 rules × 192 long names takes ~10 ms)
    const held = this.d.ports.portOf(key);
    const { port, retryInMs, moved } = this.claimPort(key, gw, spec);
    this.requeueWaitingOn(key); // its port held or given up: those it made way for, or took the place of
    // (a follower: the gateway whose older record it was closes its listener here now, not at its
    // own reconcile, which its namespace's turns could put off while this one's clients reach it)
    if (moved) await this.d.dataplane.apply(moved, null);
    // over the namespace limit: not served, so its references are neither read nor checked (a
    // namespace's thousands of waiting gateways cost a reconcile next to nothing)
    // the team's share of the loop every team's listeners share (a costly spec waits, not the
    // others): the time defaults, translate, apply, exposure and status held it, not what they
    // awaited; also when they throw
    const spent = { ms: performance.now() - defaulted };
    try {
      let t: Translation;
      let programmed: Awaited<ReturnType<GatewayReconciler['program']>>;
      try {
        // defaults, translate and apply in turns of their own, translate in as many as its routes
        // need: a costly spec's pieces one at a time
        t = 'conflict' in port && port.reason === Reason.TooManyGateways ? notAccepted(port.reason, port.conflict)
          : await inSteps(() => translateSteps(spec, { port, ...this.d.cluster.snapshotFor(spec), issuers: this.d.issuers ?? {} }), paceFor(spent));
        await turn();
        programmed = await this.program(key, spec, t.plan, spent);
      } finally {
        // a port it moved off or gave up: those waiting for it try again once its listener has
        // closed (program: the old one closes when the new one listens), not before (EADDRINUSE)
        if (held !== undefined && held !== this.d.ports.portOf(key)) this.freed(held, key);
      }
      const { applied, requeueAfterMs } = programmed;
      const listenPort = 'port' in port ? this.d.ports.portOf(key) : undefined;
      const exposed = await untilItWaits(spent, () => this.expose(key, gw, spec, t.plan, applied, listenPort));
      // time-boxed access rules: the data plane stops matching them on its own; the status lists
      // the expired ones, written again when the next one expires
      const expiry = accessExpiry(spec.spec.access, this.clock.now());
      // (a status of many conditions and routes: its digests and its patch's JSON)
      const writeInMs = await untilItWaits(spent, () => this.report(key, gw, t, exposed.applied, listenPort, exposed.url, expiry.expired, log));
      const wait = Math.min(requeueAfterMs ?? Infinity, expiry.nextMs ?? Infinity, retryInMs ?? Infinity, exposed.retryInMs ?? Infinity, writeInMs ?? Infinity);
      return wait < Infinity ? { requeueAfterMs: wait } : {};
    } finally {
      this.d.charge?.(namespace, spent.ms);
    }
  }

  private namespaceBucket(namespace: string, now: number): TokenBucket {
    let b = this.namespaceStatusWrites.get(namespace);
    if (b) return b;
    if (this.namespaceStatusWrites.size >= 1024) for (const [ns, x] of this.namespaceStatusWrites) if (x.fullAt(now)) this.namespaceStatusWrites.delete(ns);
    this.namespaceStatusWrites.set(namespace, (b = new TokenBucket(namespaceStatusWritesPerSecond, now, namespaceStatusWritesBurst)));
    return b;
  }

  /** Nothing was made or is held for the key (no port, so no listener; no status, exposure, or
   * place waited for): its forget would do nothing. */
  holdsNothing(key: string): boolean {
    return this.d.ports.portOf(key) === undefined && !this.written.has(key) && !this.exposed.has(key)
      && !this.waitingForPort.has(key) && !this.after.has(key) && !this.statusWrites.has(key);
  }

  /** The gateway is gone: close its listener, free its port, let waiting gateways try again (and
   * the one that takes its place under the namespace limit). */
  private async forget(key: string, log: Logger): Promise<Result> {
    // stop listening first, so a gateway waiting for this port can bind it
    await this.d.dataplane.apply(key, null);
    const held = this.d.ports.portOf(key);
    this.d.ports.release(key);
    this.waitingForPort.delete(key);
    if (held !== undefined) this.freed(held); // only a port freed helps them
    this.requeueWaitingOn(key);
    this.written.delete(key);
    this.statusWrites.delete(key);
    this.exposed.delete(key);
    log.debug('gateway gone; listener closed');
    return { gone: true };
  }

  /** The gateway's port: its own, a requested one, or one from the range; or why not, and when
   * to try again (a port held a while for the namespace that gave it up). */
  private claimPort(key: string, gw: AccessGateway, spec: AccessGateway): { port: PortSnapshot; retryInMs?: number; moved?: string } {
    const over = this.overLimit(key, gw);
    if (over) {
      this.d.ports.release(key); // (reconcile wakes those waiting for it)
      this.waitingForPort.delete(key);
      return { port: { conflict: over, reason: Reason.TooManyGateways } };
    }
    if (!this.leader()) return this.followPort(key, gw, spec.spec.listener?.port);
    const claim = this.d.ports.claim({ ...recordOf(gw), requested: spec.spec.listener?.port });
    if ('conflict' in claim) {
      this.waitingForPort.set(key, spec.spec.listener?.port); // (one --requestable-ports refuses is never given up)
      return { port: { conflict: claim.conflict, reason: Reason.PortConflict }, retryInMs: claim.retryInMs };
    }
    this.waitingForPort.delete(key);
    return { port: { port: claim.port } };
  }

  /**
   * A follower serves a gateway on the port the leader recorded in its status, or not at all yet:
   * the agw-NAME EndpointSlice sends clients to every replica at that port, and a port chosen here
   * could be another gateway's there (two gateways created at once, seen in another order). A
   * recorded port another gateway still holds here is waited for (that gateway is reconciled, and
   * moves to its own recorded port); a port given up here is tried again by those waiting. A spec
   * that asks for another port than the recorded one is moving: the leader gave the recorded port
   * up already (and may give it to another gateway before, or without, recording the move), so
   * it is not served here on the old one either; nor is one that asks for none while its recorded
   * port is outside the range (it was asked for, then not: the leader moves it into the range).
   */
  private followPort(key: string, gw: AccessGateway, requested: number | undefined): { port: PortSnapshot; moved?: string } {
    const recorded = gw.status?.listener?.port;
    let result: PortSnapshot;
    let moved: string | undefined;
    const moving = requested === undefined ? recorded !== undefined && !this.d.ports.inRange(recorded) : requested !== recorded;
    const refused = requested === undefined ? null : this.d.ports.refusal(requested);
    if (refused) { // whatever status says (a leader without the flag recorded it)
      this.d.ports.release(key);
      this.waitingForPort.delete(key);
      result = { conflict: refused, reason: Reason.PortConflict };
    } else if (recorded === undefined || moving) {
      // the leader's next status write (an update of this gateway) brings it back, not a release
      this.d.ports.release(key);
      this.waitingForPort.delete(key);
      result = { conflict: 'not served on this replica until the leader records its port in status.listener.port', reason: Reason.PortConflict };
    } else {
      const claim = this.d.ports.follow(key, recorded, rankOf(gw), gw.status?.listener?.since);
      if ('conflict' in claim) {
        this.waitingForPort.set(key, recorded);
        this.d.requeue(claim.holder);
        result = { conflict: claim.conflict, reason: Reason.PortConflict };
      } else {
        this.waitingForPort.delete(key);
        if (claim.moved) this.d.requeue((moved = claim.moved)); // (its record is older: it waits for its own)
        result = { port: claim.port };
      }
    }
    return { port: result, ...(moved ? { moved } : {}) }; // (reconcile wakes those waiting for a port it gave up)
  }

  /**
   * Port `port` was given up: those waiting for it (or for any in the range, if it is) try again:
   * at once those that asked for it (told it is held, if it is); those waiting for the range, of
   * another namespace than the one that gave it up, once its hold ends (a team making and deleting
   * a gateway in a loop woke every waiting gateway of every team each time, charged to them).
   */
  private freed(port: number, except?: string): void {
    const leader = this.leader();
    for (const [k, want] of this.waitingForPort) {
      if (k === except || (want === undefined ? !this.d.ports.inRange(port) : want !== port)) continue;
      const until = leader && want === undefined ? this.d.ports.heldFor(port, k) : undefined; // (a follower serves what the leader recorded)
      if (until === undefined) this.d.requeue(k);
      else this.d.requeue(k, Math.max(1, until - this.clock.now()));
    }
  }

  /** Why a gateway is over its namespace's limit (it is not among the oldest N), or null. */
  private overLimit(key: string, gw: AccessGateway): string | null {
    const limit = this.d.limit;
    if (!limit || limit.served(key)) return null;
    return `namespace ${gw.metadata.namespace} already has ${limit.max} AccessGateways, the operator's limit (--max-gateways-per-namespace); this one is served when an older one is deleted`;
  }

  /** Serves the plan (or nothing); a port another process holds is given up or retried. */
  private async program(key: string, spec: AccessGateway, plan: GatewayPlan | null, spent: { ms: number }): Promise<{ applied: ApplyResult | null; requeueAfterMs?: number }> {
    const started = performance.now();
    let pending: Promise<ApplyResult | null>;
    try {
      // its synchronous part, and each piece of the route table's steps and what follows them
      pending = this.d.dataplane.apply(key, plan, paceFor(spent));
    } finally {
      spent.ms += performance.now() - started;
    }
    let applied = await pending;
    if (plan && applied?.programmed && this.d.ports.portOf(key) !== plan.port) {
      // (a follower: its port went meanwhile to a gateway with a later record of it) closed again
      await this.d.dataplane.apply(key, null);
      return { applied: { programmed: false, reason: Reason.PortConflict, message: `port ${plan.port} was recorded for another gateway meanwhile` }, requeueAfterMs: 1_000 };
    }
    if (applied?.programmed && applied.reloaded && this.leader()) void this.d.events?.record(spec, 'Normal', 'CertificateReloaded', applied.reloaded);
    if (applied?.programmed && plan?.auth.mode === 'JWKS' && this.d.jwksReady && !this.d.jwksReady.ready()) {
      // serving already (503 with Retry-After, never 401), but not Ready until tokens can be verified
      applied = { programmed: false, reason: Reason.Pending, message: 'JWKS: waiting for the apiserver signing keys and the revocation caches '
        + '(service accounts, pods, secrets, nodes) to load; requests are answered 503 until then' };
    }
    if (!applied || applied.programmed || applied.reason !== Reason.PortConflict) return { applied };
    const port = this.d.ports.portOf(key);
    if (!this.leader()) return { applied, requeueAfterMs: 1_000 }; // the recorded port: tried again (a gateway moving off it here closes it)
    if (port !== undefined && spec.spec.listener?.port === undefined) {
      // an allocated port that another process holds: take another one on the next pass
      this.d.ports.block(port);
      this.d.ports.release(key);
      return { applied, requeueAfterMs: 100 };
    }
    return { applied, requeueAfterMs: 30_000 };
  }

  /**
   * The agw-NAME Service and EndpointSlice (leader only), and the URL to publish. An object of that
   * name the gateway does not own is never written: the gateway is ExposureConflict instead.
   */
  private async expose(key: string, gw: AccessGateway, spec: AccessGateway, plan: GatewayPlan | null, applied: ApplyResult | null, port: number | undefined):
    Promise<{ applied: ApplyResult | null; url: string | undefined; retryInMs?: number }> {
    if (port === undefined || !applied?.programmed || !plan) return { applied, url: undefined };
    const direct = `${plan.tls ? 'https' : 'http'}://${this.d.advertiseHost}:${port}`;
    const addresses = this.d.exposure?.addresses() ?? [];
    if (!this.d.exposure || !addresses.length || !gw.metadata.uid) return { applied, url: direct };
    const as = exposureFor(spec, this.d.exposurePolicy ?? clusterIPOnly); // (the cached one may have lost its spec meanwhile)
    const e = exposure(gw, port, plan.tls !== null, addresses, as);
    const cached = this.d.cluster.exposureState(gw, e.service.metadata.name);
    if (cached.foreign) {
      this.exposed.delete(key);
      return { applied: { programmed: false, reason: Reason.ExposureConflict, message: cached.foreign }, url: undefined };
    }
    const want = digest([e.service, e.slice]);
    const was = this.exposed.get(key);
    // refused as invalid (an annotation key the platform allows by prefix, which the apiserver does not;
    // an admission policy): said in status, written again when the spec asks for something else,
    // or a minute later (what refused it may have changed)
    const now = this.clock.now();
    const refusal = (r: Refused) => ({ applied: { programmed: false as const, reason: r.reason, message: r.message }, url: undefined, retryInMs: r.until - now });
    if (was?.want === want && was.refused && now < was.refused.until) return refusal(was.refused);
    if (was?.want === want && cached.service && cached.slice) was.seen = true;
    // written when changed, or when one the cache had shown is gone (deleted by hand: that
    // requeues us); not again before the cache shows our own creates, which would be refused (409)
    if (this.leader() && (was?.want !== want || was.refused || (was.seen && (!cached.service || !cached.slice)))) {
      let there = false; // a Service of that name there already: whose, its watch event tells
      const why = await refusedOf(this.d.exposure.write(e.service, cached.service).then((r) => { there = r === false; }), `Service ${e.service.metadata.name} the gateway needs`)
        ?? (there ? undefined : await refusedOf(this.d.exposure.write(e.slice, cached.slice), `EndpointSlice ${e.slice.metadata.name} the gateway needs`));
      // not the slice: another's Service would get the gateway's endpoints (a review); written
      // whole at the next reconcile, its event's, or in a second
      if (there) return { applied, url: undefined, retryInMs: 1_000 };
      if (why !== undefined) {
        const refused = { ...why, until: now + refusedRetryMs };
        this.exposed.set(key, { want, seen: false, refused });
        return refusal(refused);
      }
      // seen already when both were: an update brings no reconcile when it changes nothing the
      // cache keeps (a Service's type), and a deletion after it must still be repaired
      this.exposed.set(key, { want, seen: cached.service && cached.slice });
    }
    const url = (as.type === 'LoadBalancer' ? loadBalancerURL(plan.tls !== null, cached.ingress) : undefined) ?? e.url;
    if (as.refused) return { applied: { programmed: false, reason: Reason.ExposureNotPermitted, message: as.refused }, url };
    return { applied, url };
  }

  /** Writes the status once when it changed (leader only), with an Event when Ready changed; or,
   * past the gateway's status writes, returns when to try again. */
  private async report(key: string, gw: AccessGateway, t: Translation, applied: ApplyResult | null, port: number | undefined,
    url: string | undefined, expiredAccessRules: { index: number; notAfter: string }[], log: Logger): Promise<number | undefined> {
    const status = desiredStatus({
      generation: gw.metadata.generation ?? 0,
      previous: gw.status,
      drafts: t.conditions,
      applied,
      port,
      routes: t.routes,
      url,
      now: isoSeconds(this.clock.now()),
      since: port === undefined || !this.leader() ? undefined : this.d.ports.sinceOf(key),
      expiredAccessRules,
    });
    const wanted = digest(status);
    if (!this.leader()) {
      log.debug('not the leader: status left to the leader');
      return;
    }
    const rv = gw.metadata.resourceVersion;
    if (wanted === digest(gw.status)) {
      this.written.set(key, { digest: wanted, fromRv: undefined });
      return;
    }
    // written already and the cache still holds the object we wrote over: neither a second write
    // nor a second Event (a status changed by someone else comes with a newer resourceVersion)
    const prev = this.written.get(key);
    if (prev && prev.digest === wanted && rv !== undefined && prev.fromRv === rv) return;
    const now = this.clock.now();
    let bucket = this.statusWrites.get(key);
    if (!bucket) this.statusWrites.set(key, (bucket = new TokenBucket(statusWritesPerSecond, now, statusWritesBurst)));
    if (!bucket.has(now)) {
      log.debug('status writes of this gateway over their rate: written later');
      return bucket.msUntilOne();
    }
    const ns = this.namespaceBucket(splitKey(key).namespace, now);
    if (!ns.take(now)) {
      log.debug('status writes of this namespace over their rate: written later');
      return ns.msUntilOne();
    }
    bucket.take(now);
    this.written.set(key, { digest: wanted, fromRv: rv }); // before the write: the watch event of our own write must find it
    let wrote: boolean | void;
    try {
      wrote = await terminalIfInvalid(this.d.writeStatus(gw, status), `status of AccessGateway ${key}`);
    } catch (err) {
      this.written.delete(key);
      throw err;
    }
    if (wrote === false) { // its successor's events reconcile it
      this.written.delete(key);
      log.debug('gateway gone or made again since it was read: status not written');
      return;
    }
    this.recordTransition(gw, status);
    log.info({ ready: status.conditions?.find((c) => c.type === ConditionType.Ready)?.status, port }, 'status written');
  }

  /** An Event when Ready changes status or reason: Programmed, or the reason it is not. */
  private recordTransition(gw: AccessGateway, status: AccessGatewayStatus): void {
    if (!this.d.events) return;
    const before = gw.status?.conditions?.find((c) => c.type === ConditionType.Ready);
    const after = status.conditions?.find((c) => c.type === ConditionType.Ready);
    if (!after || (before && before.status === after.status && before.reason === after.reason)) return;
    const programmed = status.conditions?.find((c) => c.type === ConditionType.Programmed);
    const ok = after.status === 'True';
    void this.d.events.record(gw, ok ? 'Normal' : 'Warning', ok ? Reason.Programmed : after.reason,
      ok ? programmed?.message ?? 'programmed' : after.message);
  }

  private leader(): boolean {
    return !this.d.isLeader || this.d.isLeader();
  }
}

/** What a gateway's status records of its port, as the allocator takes it (seeded after a restart,
 * or claimed). */
export function recordOf(gw: AccessGateway): ClaimRequest {
  return { key: keyOf(gw), requested: gw.spec?.listener?.port, previous: gw.status?.listener?.port, rank: rankOf(gw), since: gw.status?.listener?.since };
}

/** How long an agw-NAME object the apiserver refused as invalid is not written again for the same spec. */
const refusedRetryMs = 60_000;

/** The apiserver refused an object as invalid (422): it would refuse it again. */
const invalid = (err: unknown) => (err as { status?: number }).status === 422;

/** An agw-NAME write the apiserver refused, why, and until when it is not tried again. */
interface Refused { reason: typeof Reason.ExposureInvalid | typeof Reason.ExposureForbidden; message: string; until: number }

/**
 * The apiserver's refusal of `write` as invalid (422), or forbidden (403: the namespace's
 * ResourceQuota is full, an admission webhook), said in status; other errors are thrown. (A team
 * filling its quota kept every status write of its gateway from happening, status.listener too.)
 */
function refusedOf(write: Promise<unknown>, what: string): Promise<Omit<Refused, 'until'> | undefined> {
  return write.then(() => undefined, (err) => {
    const status = (err as { status?: number }).status;
    if (status !== 422 && status !== 403) throw err;
    return { reason: status === 422 ? Reason.ExposureInvalid : Reason.ExposureForbidden, message: `the apiserver refused the ${what}: ${(err as Error).message}` };
  });
}

/** A refusal as invalid is terminal: not retried. */
function terminalIfInvalid<T>(write: Promise<T>, what: string): Promise<T> {
  return write.then((v) => v, (err) => {
    throw invalid(err) ? new TerminalError(`${what} refused as invalid: ${(err as Error).message}`, { cause: err }) : err;
  });
}

/** The reconciler's turns, the time each piece held the loop added to `spent`. */
/** Calls `f`, adding to `spent` the time it held the loop before its first await. */
function untilItWaits<T>(spent: { ms: number }, f: () => Promise<T>): Promise<T> {
  const t = performance.now();
  try {
    return f();
  } finally {
    spent.ms += performance.now() - t;
  }
}

function paceFor(spent: { ms: number }): Pace {
  return { turn, held: (ms) => { spent.ms += ms; } };
}

/** The last turn handed out: reconciles' chunks take turns one after another (workers run side by side). */
let lastTurn = Promise.resolve();

/**
 * A later turn of the event loop, after the previous chunk of any reconcile's: what waits (other
 * teams' requests) goes first. A chunk runs in the loop's check phase (a `setImmediate`), and the
 * next one's `setImmediate`, set after it, in the next pass: the loop reads its sockets between.
 */
function turn(): Promise<void> {
  const next = lastTurn.then(() => new Promise<void>((resolve) => setImmediate(resolve)));
  lastTurn = next;
  return next;
}
