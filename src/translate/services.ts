// Service routes: Service + EndpointSlices (+ ReferenceGrant, CA bundle) -> endpoints, or why not.
// Pure: everything comes from the snapshot.
import { BlockList, isIP } from 'node:net';
import { caBundleLabel } from '../api/labels.js';
import { GatewayBundles } from '../api/pem.js';
import type { Route } from '../api/types.js';
import { Reason } from '../api/conditions.js';
import type { Endpoint, ServiceTarget } from './plan.js';

export interface ServiceLike {
  metadata?: { name?: string; namespace?: string };
  /** `selected`: the cache's mark of a non-empty selector (kept instead of the selector itself). */
  /** `morePorts`: it has more ports than these, the first ones (kube/wire-objects.ts maxPortsRead). */
  spec?: { ports?: { name?: string; port: number; protocol?: string }[]; selected?: true; morePorts?: number };
}

export interface EndpointSliceLike {
  metadata?: { labels?: Record<string, string> };
  addressType?: string;
  ports?: { name?: string; port?: number; protocol?: string }[] | null;
  morePorts?: number;
  endpoints?: { addresses: string[]; targetRef?: TargetRef; conditions?: { ready?: boolean; serving?: boolean; terminating?: boolean } }[] | null;
}

export interface TargetRef { kind?: string; namespace?: string; name?: string; uid?: string }

/** What is read of a pod: whether it is alive, on the pod network, and its IPs. */
export interface PodLike {
  metadata?: { uid?: string; deletionTimestamp?: string };
  spec?: { hostNetwork?: boolean };
  status?: { phase?: string; podIPs?: { ip: string }[] | null };
}

export interface ReferenceGrantLike {
  spec?: { from?: { group?: string; kind?: string; namespace?: string }[]; to?: { group?: string; kind?: string; name?: string }[] };
}

export interface ServiceSnapshot {
  /** By namespace/name. */
  services?: Record<string, ServiceLike>;
  /** EndpointSlices by the namespace/name of their Service. */
  endpointSlices?: Record<string, EndpointSliceLike[]>;
  /** ReferenceGrants by namespace. */
  referenceGrants?: Record<string, ReferenceGrantLike[]>;
  /**
   * The pods the routed Services' EndpointSlices name, by namespace/name: an address is used only
   * when it is an IP of the live pod its endpoint names, in the Service's namespace
   * (--endpoint-addresses pods, the default). Absent: addresses are not checked against pods
   * (--endpoint-addresses any).
   */
  pods?: Record<string, PodLike>;
  /** CA bundles labelled access-gateway.io/ca-bundle=true, by "ConfigMap/ns/name" or "Secret/ns/name": key -> PEM. */
  caBundles?: Record<string, Record<string, string>>;
}

export type ServiceProblem = { reason: Reason; message: string };

/** Does a ReferenceGrant in the Service's namespace admit AccessGateways from `fromNs`? */
export function granted(grants: ReferenceGrantLike[] | undefined, fromNs: string, service: string): boolean {
  return (grants ?? []).some((g) =>
    (g.spec?.from ?? []).some((f) => f.group === 'access-gateway.io' && f.kind === 'AccessGateway' && f.namespace === fromNs) &&
    (g.spec?.to ?? []).some((t) => (t.group ?? '') === '' && t.kind === 'Service' && (!t.name || t.name === service)));
}

/**
 * Whether an EndpointSlice address may be a pod's: not loopback (this process's own admin port
 * and listeners), link-local (a cloud's instance metadata, 169.254.169.254), unspecified or
 * multicast. A team that may write EndpointSlices (the default roles may not) could otherwise
 * point a route at them; they are left out here whatever the apiserver lets a slice hold.
 */
export function podAddress(ip: string): boolean {
  const family = isIP(ip);
  return family !== 0 && !notPods.check(ip, family === 6 ? 'ipv6' : 'ipv4');
}
const notPods = new BlockList();
for (const [a, bits] of [['0.0.0.0', 8], ['127.0.0.0', 8], ['169.254.0.0', 16], ['224.0.0.0', 3]] as const) {
  notPods.addSubnet(a, bits, 'ipv4');
  notPods.addSubnet(`::ffff:${a}`, 96 + bits, 'ipv6'); // the same, IPv4-mapped
}
// unspecified, loopback, link-local, multicast; AWS's instance metadata over IPv6
for (const [a, bits] of [['::', 128], ['::1', 128], ['fe80::', 10], ['ff00::', 8], ['fd00:ec2::254', 128]] as const) notPods.addSubnet(a, bits, 'ipv6');

/**
 * Whether `ip` is an IP of the pod `ref` names in namespace `ns`, that pod alive (Pending or
 * Running, not deleted: a finished pod's IPs may be another pod's next; Unknown is not trusted)
 * and on the pod network (a host-network pod's IP is its node's). A team cannot write pod status,
 * so it cannot make another team's pod IP its own.
 */
export function podOwns(pods: Record<string, PodLike>, ns: string, ref: TargetRef | undefined, ip: string): boolean {
  if (ref?.kind !== 'Pod' || !ref.name || (ref.namespace !== undefined && ref.namespace !== ns)) return false;
  const pod = pods[`${ns}/${ref.name}`];
  if (!pod || (ref.uid !== undefined && ref.uid !== pod.metadata?.uid)) return false;
  if (pod.metadata?.deletionTimestamp || pod.spec?.hostNetwork) return false;
  if (pod.status?.phase !== 'Running' && pod.status?.phase !== 'Pending') return false;
  return (pod.status?.podIPs ?? []).some((p) => p.ip === ip);
}

/** readyEndpoints once per snapshot's slices of a Service and port: the routes of a gateway that
 * name the same Service (up to 64) do not each check its endpoints again (up to 0.8 µs each). */
const readyBySlices = new WeakMap<EndpointSliceLike[], { pods: object | undefined; byPort: Map<string, { endpoints: Endpoint[]; leftOut: number }> }>();

function readyOnce(slices: EndpointSliceLike[], portName: string, ns: string, pods: Record<string, PodLike> | undefined): { endpoints: Endpoint[]; leftOut: number } {
  let memo = readyBySlices.get(slices);
  if (!memo || memo.pods !== pods) readyBySlices.set(slices, (memo = { pods, byPort: new Map() }));
  const byPort = memo.byPort;
  const key = `${ns}/${portName}`; // one slices array may be named for two Services (a test's)
  let ready = byPort.get(key);
  if (!ready) byPort.set(key, (ready = readyEndpoints(slices, portName, ns, pods)));
  return ready;
}

/** The ready endpoints of a Service's slices (`ns`: the Service's namespace), and how many ready
 * addresses were left out as not its pods' (checked when `pods` is given). */
function readyEndpoints(slices: EndpointSliceLike[], portName: string, ns: string, pods: Record<string, PodLike> | undefined): { endpoints: Endpoint[]; leftOut: number } {
  const out: Endpoint[] = [];
  const seen = new Set<string>();
  const left = new Set<string>(); // addresses left out (one named twice counts once)
  for (const s of slices) {
    if (s.addressType && s.addressType !== 'IPv4' && s.addressType !== 'IPv6') continue;
    const port = (s.ports ?? []).find((p) => (p.name ?? '') === portName && (p.protocol ?? 'TCP') === 'TCP')?.port;
    // the apiserver does not check a slice's port: -1 or 70000 made the route table's build throw
    if (!port || !Number.isInteger(port) || port < 1 || port > 65535) continue;
    for (const e of s.endpoints ?? []) {
      const c = e.conditions ?? {};
      if (c.ready === false || c.serving === false || c.terminating === true) continue;
      const ip = e.addresses?.[0];
      if (!ip || seen.has(`${ip}:${port}`)) continue;
      if (!podAddress(ip) || (pods && !podOwns(pods, ns, e.targetRef, ip))) {
        left.add(`${ip}:${port}`);
        continue;
      }
      seen.add(`${ip}:${port}`);
      out.push({ ip, port });
    }
  }
  return { endpoints: out.sort((a, b) => (a.ip === b.ip ? a.port - b.port : a.ip < b.ip ? -1 : 1)), leftOut: [...left].filter((k) => !seen.has(k)).length };
}

/** The text under `key` of a labelled ConfigMap or Secret, if it has one: its own key only (a key
 * named constructor or toString is not the object's inherited function). */
export function caBundleText(snap: Pick<ServiceSnapshot, 'caBundles'>, kind: string, ns: string, name: string, key: string): string | undefined {
  const data = snap.caBundles?.[`${kind}/${ns}/${name}`];
  return data && Object.hasOwn(data, key) ? data[key] : undefined;
}

/** Why a CA bundle reference has no text: its object is not there (nor labelled), or lacks the key. */
export function caBundleMissing(snap: Pick<ServiceSnapshot, 'caBundles'>, kind: string, ns: string, name: string, key: string): string {
  return snap.caBundles?.[`${kind}/${ns}/${name}`]
    ? `the object is there but has no key ${key}`
    : `not found (the object must exist and be labelled ${caBundleLabel}=true)`;
}

/** Resolves one service route of gateway namespace `gwNs`. */
export function resolveService(gwNs: string, r: Route, snap: ServiceSnapshot, bundles: GatewayBundles): { target: ServiceTarget; problem: ServiceProblem | null } {
  const s = r.service!;
  const ns = s.namespace ?? gwNs;
  const scheme = s.scheme ?? 'http';
  const target: ServiceTarget = {
    kind: 'service', namespace: ns, name: s.name, port: s.port, scheme,
    endpoints: [], ca: null, serverName: `${s.name}.${ns}.svc`, problem: null,
  };
  const fail = (reason: ServiceProblem['reason'], message: string, status: 403 | 503) => {
    target.problem = { status, message };
    return { target, problem: { reason, message: `route ${r.name}: ${message}` } };
  };
  if (ns !== gwNs && !granted(snap.referenceGrants?.[ns], gwNs, s.name)) {
    return fail(Reason.RefNotPermitted, `Service ${ns}/${s.name} is in another namespace and no ReferenceGrant there admits AccessGateways from ${gwNs}`, 403);
  }
  const svc = snap.services?.[`${ns}/${s.name}`];
  if (!svc) return fail(Reason.BackendNotFound, `Service ${ns}/${s.name} not found`, 503);
  const sp = (svc.spec?.ports ?? []).find((p) => (typeof s.port === 'number' ? p.port === s.port : p.name === s.port) && (p.protocol ?? 'TCP') === 'TCP');
  if (!sp) {
    const more = svc.spec?.morePorts ? ` among the first ${svc.spec.morePorts} of its ports (the operator reads no more)` : '';
    return fail(Reason.BackendNotFound, `Service ${ns}/${s.name} has no TCP port ${JSON.stringify(s.port)}${more}`, 503);
  }
  if (s.caRef) {
    const pem = caBundleText(snap, s.caRef.kind, gwNs, s.caRef.name, s.caRef.key);
    const bundle = pem === undefined ? { problem: caBundleMissing(snap, s.caRef.kind, gwNs, s.caRef.name, s.caRef.key) } : bundles.parse(pem);
    if ('problem' in bundle) return fail(Reason.InvalidCertificateRef, `${s.caRef.kind} ${gwNs}/${s.caRef.name} key ${s.caRef.key}: ${bundle.problem}`, 503);
    target.ca = bundle.pem; // the blocks checked, written anew: not the text
  }
  const slices = snap.endpointSlices?.[`${ns}/${s.name}`] ?? [];
  const ready = readyOnce(slices, sp.name ?? '', ns, snap.pods);
  target.endpoints = [...ready.endpoints];
  if (!target.endpoints.length) {
    const n = ready.leftOut === 1 ? '1 ready address' : `${ready.leftOut} ready addresses`;
    const cut = slices.find((x) => x.morePorts);
    const why = !ready.leftOut ? (cut ? ` (an EndpointSlice of it has more than ${cut.morePorts} ports: the operator reads the first ${cut.morePorts})` : '') : snap.pods
      ? ` (${n} left out: an address must be an IP of the running pod its endpoint's targetRef names in ${ns}; see --endpoint-addresses)`
      : ` (${n} left out: loopback, link-local, unspecified or multicast)`;
    return fail(Reason.NoReadyEndpoints, `Service ${ns}/${s.name} has no ready endpoints${why}`, 503);
  }
  return { target, problem: null };
}
