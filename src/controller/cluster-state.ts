// What gateways refer to, watched: Services, EndpointSlices, ReferenceGrants, and the labelled
// Secrets and ConfigMaps (listener certificates, CA bundles). Builds translate()'s snapshot.
import type { Logger } from 'pino';
import type { AccessGateway } from '../api/types.js';
import type { KubeClient } from '../kube/client.js';
import type { Metrics } from '../observability/metrics.js';
import { objectKey, type InformerEvent, type KubeObject } from '../kube/informer.js';
import { Watched } from '../kube/watched.js';
import { decodeEndpointSlice, decodePod, decodeService, maxPortsRead } from '../kube/wire-objects.js';
import type { EndpointSliceLike, PodLike, ReferenceGrantLike, ServiceLike, TargetRef } from '../translate/services.js';
import type { Snapshot } from '../translate/translate.js';
import { serviceNameLabel } from '../api/labels.js';
import { LabelledData } from './labelled-data.js';
import type { Ref } from './ref-index.js';

/** The label an EndpointSlice names its Service by, as the bytes its protobuf holds. */
const serviceNameBytes = Buffer.from(serviceNameLabel);

type Obj<T> = T & KubeObject;

/** What is read of an object's metadata: who it is, and its controller (agw-NAME objects are the
 * operator's; a team may give its objects thousands of other owners). */
function identity(m: KubeObject['metadata']): KubeObject['metadata'] {
  const owner = (m.ownerReferences as { uid?: string; controller?: boolean }[] | undefined)?.find((r) => r?.controller === true);
  return { name: m.name, namespace: m.namespace, uid: m.uid, resourceVersion: m.resourceVersion, ...(owner ? { ownerReferences: [{ uid: owner.uid, controller: true }] } : {}) };
}

/**
 * Every Service and EndpointSlice in the cluster is watched, any team's: the caches keep only what
 * is read (ports, addresses and their conditions, owners, a load balancer's address), not a team's
 * annotations (up to 256 KiB an object), labels or topology.
 */
function trimService(o: Obj<ServiceLike>): Obj<ServiceLike> {
  const lb = (o as { status?: { loadBalancer?: { ingress?: { ip?: string; hostname?: string }[] } } }).status?.loadBalancer;
  const ingress = lb?.ingress?.map((i) => ({ ...(i.ip ? { ip: i.ip } : {}), ...(i.hostname ? { hostname: i.hostname } : {}) }));
  const sel = (o.spec as { selector?: Record<string, string> } | undefined)?.selector;
  const selected = sel && Object.keys(sel).length ? { selected: true as const } : {};
  const all = o.spec?.ports;
  const ports = all?.slice(0, maxPortsRead).map((p) => ({ ...(p.name ? { name: p.name } : {}), ...(p.protocol ? { protocol: p.protocol } : {}), port: p.port }));
  const more = o.spec?.morePorts || (all?.length ?? 0) > maxPortsRead ? { morePorts: maxPortsRead } : {};
  return { metadata: identity(o.metadata), spec: { ports, ...selected, ...more }, ...(lb ? { status: { loadBalancer: ingress ? { ingress } : {} } } : {}) } as Obj<ServiceLike>;
}

function trimSlice(o: Obj<EndpointSliceLike>): Obj<EndpointSliceLike> {
  const svc = o.metadata.labels?.[serviceNameLabel];
  return {
    metadata: { ...identity(o.metadata), ...(svc ? { labels: { [serviceNameLabel]: svc } } : {}) },
    addressType: o.addressType,
    ...(o.morePorts || (o.ports?.length ?? 0) > maxPortsRead ? { morePorts: maxPortsRead } : {}),
    ports: (o.ports ?? []).slice(0, maxPortsRead).map((p) => ({ ...(p.name !== undefined ? { name: p.name } : {}), ...(p.protocol !== undefined ? { protocol: p.protocol } : {}), ...(p.port !== undefined ? { port: p.port } : {}) })),
    endpoints: (o.endpoints ?? []).map((e) => ({ addresses: (e.addresses ?? []).slice(0, 1), conditions: e.conditions, ...(e.targetRef?.kind === 'Pod' ? { targetRef: podRef(e.targetRef) } : {}) })), // the first is read
  } as Obj<EndpointSliceLike>;
}

function podRef(r: TargetRef): TargetRef {
  return { kind: 'Pod', name: r.name, ...(r.namespace !== undefined ? { namespace: r.namespace } : {}), ...(r.uid !== undefined ? { uid: r.uid } : {}) };
}

/** A pod as --endpoint-addresses pods reads it: alive or not, host network or not, its IPs. */
function trimPod(o: Obj<PodLike>): Obj<PodLike> {
  const m = o.metadata as KubeObject['metadata'] & { deletionTimestamp?: string };
  return {
    metadata: { name: m.name, namespace: m.namespace, uid: m.uid, resourceVersion: m.resourceVersion, ...(m.deletionTimestamp ? { deletionTimestamp: m.deletionTimestamp } : {}) },
    spec: o.spec?.hostNetwork ? { hostNetwork: true } : {},
    status: { phase: o.status?.phase, podIPs: (o.status?.podIPs ?? []).map((p) => ({ ip: p?.ip })) },
  } as Obj<PodLike>;
}

/** A ReferenceGrant as read: whom it lets in, to what (not its annotations, up to 256 KiB). */
function trimGrant(o: Obj<ReferenceGrantLike>): Obj<ReferenceGrantLike> {
  const from = o.spec?.from?.map((f) => ({ group: f.group, kind: f.kind, namespace: f.namespace }));
  const to = o.spec?.to?.map((t) => ({ group: t.group, kind: t.kind, ...(t.name !== undefined ? { name: t.name } : {}) }));
  return { metadata: identity(o.metadata), spec: { ...(from ? { from } : {}), ...(to ? { to } : {}) } } as Obj<ReferenceGrantLike>;
}

/** The names of the pods a slice's endpoints name (in its namespace: only those can be its Service's). */
function slicePods(s: Obj<EndpointSliceLike>): string[] {
  const out: string[] = [];
  for (const e of s.endpoints ?? []) if (e.targetRef?.kind === 'Pod' && e.targetRef.name) out.push(e.targetRef.name);
  return out;
}

export class ClusterState {
  private readonly all: Watched<any>[];
  private readonly services: Watched<Obj<ServiceLike>>;
  private readonly slices: Watched<Obj<EndpointSliceLike>>;
  private readonly grants: Watched<Obj<ReferenceGrantLike>>;
  private readonly labelled: LabelledData;
  /** --endpoint-addresses pods: the pods in scope. */
  private readonly pods: Watched<Obj<PodLike>> | undefined;

  static trimService = trimService;
  static trimSlice = trimSlice;
  static trimPod = trimPod;

  constructor(client: KubeClient, opts: {
    namespaces: string[]; log: Logger; metrics?: Metrics; onChange: (ref: Ref) => void; endpointAddresses: 'pods' | 'any';
    /** Bytes of labelled Secrets and ConfigMaps a namespace may hold (0: no bound). */
    maxLabelledBytesPerNamespace?: number;
    /** What reading a watch event's object took, charged to its namespace (a ReferenceGrant is
     * JSON: 2.8 MB of annotations and labels took ~17 ms of the shared event loop an update). */
    charge?: (namespace: string, ms: number) => void;
    /** A Service or EndpointSlice with a controller (its uid) was deleted: told before the
     * reconciles it asks for. */
    onOwnedGone?: (namespace: string, name: string, ownerUid: string) => void;
  }) {
    // an update that changes nothing kept asks for no reconcile: a team patching its Service's
    // annotations in a loop re-reads no gateway, another team's routed to it included
    const base = { namespaces: opts.namespaces, log: opts.log, metrics: opts.metrics };
    // what reading an event took is charged to its object's namespace, whether it asks for a
    // reconcile or not (a team's annotations patched in a loop ask for none)
    const quiet = { ...base, quietWhenUnchanged: true, onDecode: (o: KubeObject, ms: number) => opts.charge?.(o.metadata.namespace ?? '', ms) };
    const core = (plural: string) => (ns?: string) => (ns ? `/api/v1/namespaces/${ns}/${plural}` : `/api/v1/${plural}`);
    // an object names what it refers to; one that changed whom it names (a slice moved to another
    // Service) also re-reads the one it named
    const emit = (kind: Ref['kind'], name: (o: any) => string | undefined = (o) => o.metadata.name) => (t: InformerEvent, o: KubeObject, old?: KubeObject) => {
      // the cache may never have shown it (created and deleted before a reconcile read it): its
      // gateway is told, so that it writes it again
      if (t === 'delete' && kind === 'Service') { // (a Service's or an EndpointSlice's)
        const owner = (o.metadata.ownerReferences as { uid?: string; controller?: boolean }[] | undefined)?.find((r) => r.controller === true);
        if (owner?.uid) opts.onOwnedGone?.(o.metadata.namespace ?? '', o.metadata.name, owner.uid);
      }
      for (const n of new Set([name(o), old && name(old)])) if (n) opts.onChange({ kind, namespace: o.metadata.namespace ?? '', name: n });
    };
    // Pods, Services and EndpointSlices, which every team writes, are read in protobuf, of which only
    // the fields read are decoded: a team's pod of 1.45 MB (an env value of `<`) is 8.7 MB as JSON,
    // ~45 ms of JSON.parse on the shared event loop per change; a Service's 256 KiB of annotations,
    // 1.5 MB
    this.services = new Watched(client, {
      ...quiet, name: 'services', path: core('services'), trim: trimService, onEvent: emit('Service'),
      protobuf: decodeService,
    });
    this.slices = new Watched(client, {
      ...quiet, name: 'endpointslices',
      path: (ns) => (ns ? `/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices` : '/apis/discovery.k8s.io/v1/endpointslices'),
      // by its Service, and (for --endpoint-addresses pods) by each pod it names: a pod's change
      // re-reads the Services whose slices name it
      indexBy: (s) => {
        const svc = s.metadata.labels?.[serviceNameLabel];
        return svc ? [`${s.metadata.namespace}/${svc}`, ...(this.pods ? slicePods(s).map((p) => `pod ${s.metadata.namespace}/${p}`) : [])] : [];
      },
      trim: trimSlice,
      protobuf: (msg: Buffer) => decodeEndpointSlice(msg, serviceNameBytes),
      onEvent: emit('Service', (s) => s.metadata.labels?.[serviceNameLabel]),
    });
    if (opts.endpointAddresses === 'pods') {
      this.pods = new Watched<Obj<PodLike>>(client, {
        ...quiet, name: 'pods', path: core('pods'), trim: trimPod,
        protobuf: decodePod,
        // pods that can never be a route's endpoint are not sent (a pod that finishes leaves as deleted)
        fieldSelector: 'status.phase!=Succeeded,status.phase!=Failed,spec.hostNetwork=false',
        forbidden: 'the operator may not list and watch pods: service routes get no endpoints (--endpoint-addresses pods); grant list/watch on pods, or run with --endpoint-addresses any',
        onEvent: (_type, p) => {
          const services = new Set(this.slices.byIndex(`pod ${objectKey(p)}`).map((s) => s.metadata.labels![serviceNameLabel]!));
          for (const name of services) opts.onChange({ kind: 'Service', namespace: p.metadata.namespace ?? '', name });
        },
      });
    }
    this.grants = new Watched<Obj<ReferenceGrantLike>>(client, {
      ...quiet, name: 'referencegrants', optional: true,
      path: (ns) => (ns ? `/apis/gateway.networking.k8s.io/v1beta1/namespaces/${ns}/referencegrants` : '/apis/gateway.networking.k8s.io/v1beta1/referencegrants'),
      indexBy: (g) => g.metadata.namespace, // a route into a namespace reads only that namespace's
      trim: trimGrant,
      onEvent: emit('ReferenceGrant'),
    });
    this.labelled = new LabelledData(client, { ...base, maxBytesPerNamespace: opts.maxLabelledBytesPerNamespace ?? 0, onChange: opts.onChange, charge: opts.charge });
    this.all = [this.services, this.slices, this.grants, ...this.labelled.watches, ...(this.pods ? [this.pods] : [])];
  }

  start(): void {
    for (const w of this.all) w.start();
  }

  async firstSync(): Promise<void> {
    await Promise.all(this.all.map((w) => w.firstSync()));
  }

  async stop(): Promise<void> {
    this.labelled.close();
    await Promise.all(this.all.map((w) => w.stop()));
  }

  /**
   * The gateway's agw-NAME Service and EndpointSlice as cached: whether each exists, and why the
   * gateway may not write them (an object of that name it does not own), or null.
   */
  exposureState(gw: AccessGateway, name: string): { service: boolean; slice: boolean; foreign: string | null; ingress?: { ip?: string; hostname?: string } } {
    const ns = gw.metadata.namespace;
    const svc = this.services.get(ns, name);
    const slice = this.slices.get(ns, name);
    return {
      service: svc !== undefined, slice: slice !== undefined,
      ingress: (svc as { status?: { loadBalancer?: { ingress?: { ip?: string; hostname?: string }[] } } } | undefined)?.status?.loadBalancer?.ingress?.[0],
      foreign: this.exposureConflict(gw, name, svc, slice),
    };
  }

  /** Why the gateway may not write or use its agw-NAME objects, or null. */
  private exposureConflict(gw: AccessGateway, name: string, svc: KubeObject | undefined, slice: KubeObject | undefined): string | null {
    const ns = gw.metadata.namespace;
    const owned = (o: KubeObject) => (o.metadata.ownerReferences as { uid?: string; controller?: boolean }[] | undefined)
      ?.some((r) => r.uid === gw.metadata.uid && r.controller === true) ?? false;
    const notOwned = (what: string) => `${what} exists and is not owned by this AccessGateway: the gateway is not exposed in the cluster (the operator never writes objects it does not own); delete or rename it`;
    if (svc && !owned(svc)) return notOwned(`Service ${ns}/${name}`);
    if (slice && !owned(slice)) return notOwned(`EndpointSlice ${ns}/${name}`);
    // someone else's selector: its pods, not the operator's, would get the gateway's traffic
    if ((svc as Obj<ServiceLike> | undefined)?.spec?.selected) {
      return `Service ${ns}/${name} has a selector someone else set: an agw-NAME Service is selector-less (its endpoints are the operator's); the gateway is not exposed in the cluster until the selector is removed`;
    }
    // another EndpointSlice labelled for agw-NAME would add its addresses to the gateway's Service
    const extra = this.slices.byIndex(`${ns}/${name}`).find((x) => !owned(x));
    return extra ? notOwned(`EndpointSlice ${ns}/${extra.metadata.name}, labelled kubernetes.io/service-name=${name},`) : null;
  }

  /** The parts of translate()'s snapshot this gateway refers to. */
  snapshotFor(gw: AccessGateway): Omit<Snapshot, 'port'> {
    const ns = gw.metadata.namespace;
    const snap: Required<Omit<Snapshot, 'port' | 'issuers' | 'pods' | 'setAside'>> & Pick<Snapshot, 'pods'> = {
      secrets: {}, services: {}, endpointSlices: {}, referenceGrants: {}, caBundles: {}, ...(this.pods ? { pods: {} } : {}),
    };
    let aside = false; // a labelled object it names is set aside (its namespace over the bound)
    const tls = gw.spec.listener?.tls?.secretName;
    const secret = tls ? this.labelled.listenerSecret(ns, tls) : undefined;
    if (secret === 'aside') aside = true;
    else if (secret) snap.secrets[`${ns}/${tls}`] = secret;
    for (const r of gw.spec.routes) {
      const s = r.service;
      if (!s) continue;
      const sns = s.namespace ?? ns;
      const key = `${sns}/${s.name}`;
      if (s.caRef) aside = this.addBundle(snap.caBundles, ns, s.caRef) || aside;
      if (Object.hasOwn(snap.endpointSlices, key)) continue; // another route's Service: read once
      const svc = this.services.get(sns, s.name);
      if (svc) snap.services[key] = svc;
      const slices = this.slices.byIndex(key);
      snap.endpointSlices[key] = slices;
      if (snap.pods) {
        for (const slice of slices) {
          for (const name of slicePods(slice)) {
            const p = this.pods!.get(sns, name);
            if (p) snap.pods[`${sns}/${name}`] = p;
          }
        }
      }
      if (sns !== ns) snap.referenceGrants[sns] ??= this.grants.byIndex(sns);
    }
    const clientCA = gw.spec.listener?.tls?.clientCA;
    if (clientCA) aside = this.addBundle(snap.caBundles, ns, clientCA) || aside;
    return aside ? { ...snap, setAside: this.labelled.asideMessage(ns) } : snap;
  }

  /** The key a gateway names of a labelled ConfigMap or Secret (decoded), under KIND/NS/NAME and
   * the key, each once however many routes name it; true when it is set aside. */
  private addBundle(into: Record<string, Record<string, string>>, ns: string, ref: { kind: 'ConfigMap' | 'Secret'; name: string; key: string }): boolean {
    const at = `${ref.kind}/${ns}/${ref.name}`;
    if (into[at] && Object.hasOwn(into[at], ref.key)) return false;
    const text = this.labelled.bundle(ref.kind, ns, ref.name, ref.key);
    if (text === 'aside') return true;
    if (text !== undefined) into[at] ??= {};
    // (defined, not assigned: a key named __proto__ is a key like another)
    if (typeof text === 'string') Object.defineProperty(into[at], ref.key, { value: text, enumerable: true, writable: true, configurable: true });
    return false;
  }
}
