// The fields of the objects every team writes and the operator watches cluster-wide (Pods,
// Services, EndpointSlices, labelled Secrets and ConfigMaps, and the metadata of ServiceAccounts,
// Pods, Secrets and Nodes), decoded from protobuf (protobuf.ts) as the JSON the caches keep
// would have them: only what is read, so a team's annotations, env values or topology cost only
// their length to step over. Field numbers as in k8s.io/api's and apimachinery's generated.proto.
import { eachField, text } from './protobuf.js';
import { isoSeconds } from '../clock.js';

export type WireMeta = {
  name: string; namespace?: string; uid?: string; resourceVersion?: string; deletionTimestamp?: string;
  labels?: Record<string, string>;
  ownerReferences?: { uid?: string; controller?: boolean }[];
};

/** A map<string, string> entry (key 1, value 2) into `into`; a map<string, bytes> one as base64
 * (as JSON writes a Secret's data). */
function entry(buf: Buffer, from: number, to: number, into: Record<string, string>, encoding: 'utf8' | 'base64' = 'utf8'): void {
  let k = '';
  let v = '';
  eachField(buf, from, to, (f, _v, a, b) => {
    if (f === 1) k = text(buf, a, b);
    else if (f === 2) v = buf.toString(encoding, a, b);
  });
  // an own property whatever the key (a ConfigMap's data key may be __proto__, as JSON.parse keeps it)
  Object.defineProperty(into, k, { value: v, enumerable: true, writable: true, configurable: true });
}

/** A Time's seconds as JSON writes it (RFC 3339); one no Date can hold as its number. */
function iso(seconds: number): string {
  return Number.isNaN(new Date(seconds * 1000).getTime()) ? String(seconds) : isoSeconds(seconds * 1000);
}

/** Ports read of a Service or an EndpointSlice; past them `morePorts` says how many were read. The
 * apiserver bounds neither a Service's ports nor (below 20,000) a slice's: a Service of 50,000, 0.8
 * MB, was 6.1 MiB kept and ~59 ms of the shared event loop a change. */
export const maxPortsRead = 256;

/** A ServicePort or EndpointPort (name 1, protocol 2, port 3: an int32), the fields written. */
function port(buf: Buffer, from: number, to: number): { name?: string; protocol?: string; port?: number } {
  const p: { name?: string; protocol?: string; port?: number } = {};
  eachField(buf, from, to, (h, _v, a, b, int32) => {
    if (h === 1) p.name = text(buf, a, b);
    else if (h === 2) p.protocol = text(buf, a, b);
    else if (h === 3) p.port = int32;
  });
  return p;
}

/**
 * ObjectMeta: name 1, namespace 3, uid 5, resourceVersion 6, deletionTimestamp 9 (seconds 1),
 * labels 11 (only `label`: its key is compared as bytes, so each other label costs a skip, not a
 * string: the EndpointSlice controller copies a Service's labels, 10,000 of them ~22 ms an event
 * decoded), ownerReferences 13 (uid 4, controller 6; only the controller's).
 */
function meta(buf: Buffer, from: number, to: number, label?: Buffer): WireMeta {
  const m: WireMeta = { name: '' };
  eachField(buf, from, to, (g, _w, a, b) => {
    if (g === 1) m.name = text(buf, a, b);
    else if (g === 3) { if (b > a) m.namespace = text(buf, a, b); }
    else if (g === 5) m.uid = text(buf, a, b);
    else if (g === 6) m.resourceVersion = text(buf, a, b);
    else if (g === 9) {
      let seconds = 0;
      eachField(buf, a, b, (h, v) => { if (h === 1) seconds = v; });
      m.deletionTimestamp = iso(seconds);
    } else if (g === 11 && label) {
      let key = false;
      let value: string | undefined;
      eachField(buf, a, b, (h, _x, c, d) => {
        if (h === 1) key = d - c === label.length && buf.compare(label, 0, label.length, c, d) === 0;
        else if (h === 2) value = key ? buf.toString('utf8', c, d) : undefined; // (the key comes first, as Go writes it)
      });
      if (key) Object.defineProperty((m.labels ??= {}), label.toString(), { value: value ?? '', enumerable: true, writable: true, configurable: true });
    } else if (g === 13) {
      let uid: string | undefined;
      let controller = false;
      eachField(buf, a, b, (h, v, c, d) => {
        if (h === 4) uid = text(buf, c, d);
        else if (h === 6) controller = v !== 0;
      });
      if (controller && !m.ownerReferences) m.ownerReferences = [{ uid, controller: true }];
    }
  });
  return m;
}

/** A non-empty string, or nothing (proto writes "" where JSON leaves the field out). */
const some = (s: string): string | undefined => (s ? s : undefined);
const defined = <T extends object>(o: T): T => { for (const k of Object.keys(o)) if ((o as any)[k] === undefined) delete (o as any)[k]; return o; };

/** A PartialObjectMetadata (metadata 1): what a metadata-only list or watch gives. */
export function decodeMetadata(msg: Buffer): { metadata: WireMeta } {
  let m: WireMeta = { name: '' };
  eachField(msg, 0, msg.length, (f, _v, from, to) => { if (f === 1) m = meta(msg, from, to); });
  return { metadata: m };
}

export interface WirePod {
  metadata: WireMeta;
  spec: { hostNetwork?: boolean };
  status: { phase?: string; podIPs: { ip: string }[] };
}

/** A Pod (metadata 1; PodSpec 2: hostNetwork 11; PodStatus 3: phase 1, podIPs 12 (ip 1)). */
export function decodePod(msg: Buffer): WirePod {
  const pod: WirePod = { metadata: { name: '' }, spec: {}, status: { podIPs: [] } };
  eachField(msg, 0, msg.length, (f, _v, from, to) => {
    if (f === 1) pod.metadata = meta(msg, from, to);
    else if (f === 2) eachField(msg, from, to, (g, v) => { if (g === 11) pod.spec.hostNetwork = v !== 0; });
    else if (f === 3) {
      eachField(msg, from, to, (g, _w, a, b) => {
        if (g === 1) pod.status.phase = text(msg, a, b);
        else if (g === 12) {
          eachField(msg, a, b, (h, _x, c, d) => { if (h === 1) pod.status.podIPs.push({ ip: text(msg, c, d) }); });
        }
      });
    }
  });
  return pod;
}

export interface WireService {
  metadata: WireMeta;
  spec: { ports?: { name?: string; protocol?: string; port: number }[]; morePorts?: number; selector?: Record<string, string> };
  status?: { loadBalancer: { ingress?: { ip?: string; hostname?: string }[] } };
}

/**
 * A Service (metadata 1; ServiceSpec 2: ports 1 (name 1, protocol 2, port 3), selector 2;
 * ServiceStatus 3: loadBalancer 1, its ingress 1 (ip 1, hostname 2)).
 */
export function decodeService(msg: Buffer): WireService {
  const svc: WireService = { metadata: { name: '' }, spec: {} };
  eachField(msg, 0, msg.length, (f, _v, from, to) => {
    if (f === 1) svc.metadata = meta(msg, from, to);
    else if (f === 2) {
      eachField(msg, from, to, (g, _w, a, b) => {
        if (g === 1) {
          if ((svc.spec.ports?.length ?? 0) >= maxPortsRead) { svc.spec.morePorts = maxPortsRead; return; }
          const p = port(msg, a, b);
          (svc.spec.ports ??= []).push({ ...p, port: p.port ?? 0 }); // (trimService drops an empty name)
        } else if (g === 2) entry(msg, a, b, (svc.spec.selector ??= {}));
      });
    } else if (f === 3) {
      eachField(msg, from, to, (g, _w, a, b) => {
        if (g !== 1) return;
        const lb: { ingress?: { ip?: string; hostname?: string }[] } = {};
        eachField(msg, a, b, (h, _x, c, d) => {
          if (h !== 1) return;
          const ing = { ip: '', hostname: '' };
          eachField(msg, c, d, (k, _y, e, z) => {
            if (k === 1) ing.ip = text(msg, e, z);
            else if (k === 2) ing.hostname = text(msg, e, z);
          });
          (lb.ingress ??= []).push(defined({ ip: some(ing.ip), hostname: some(ing.hostname) }));
        });
        svc.status = { loadBalancer: lb };
      });
    }
  });
  return svc;
}

export interface WireEndpointSlice {
  metadata: WireMeta;
  addressType?: string;
  ports: { name?: string; protocol?: string; port?: number }[];
  morePorts?: number;
  endpoints: { addresses: string[]; conditions: { ready?: boolean; serving?: boolean; terminating?: boolean }; targetRef?: { kind?: string; namespace?: string; name?: string; uid?: string } }[];
}

/**
 * An EndpointSlice (metadata 1, of its labels only `label`, its key's bytes made once by the caller; endpoints 2: addresses 1,
 * conditions 2 (ready 1, serving 2, terminating 3), targetRef 4 (kind 1, namespace 2, name 3,
 * uid 4); ports 3: name 1, protocol 2, port 3; addressType 4).
 */
export function decodeEndpointSlice(msg: Buffer, label: Buffer): WireEndpointSlice {
  const s: WireEndpointSlice = { metadata: { name: '' }, ports: [], endpoints: [] };
  eachField(msg, 0, msg.length, (f, _v, from, to) => {
    if (f === 1) s.metadata = meta(msg, from, to, label);
    else if (f === 4) s.addressType = text(msg, from, to);
    else if (f === 3) {
      if (s.ports.length < maxPortsRead) s.ports.push(port(msg, from, to));
      else s.morePorts = maxPortsRead;
    }
    else if (f === 2) {
      const e: WireEndpointSlice['endpoints'][number] = { addresses: [], conditions: {} };
      eachField(msg, from, to, (g, _w, a, b) => {
        if (g === 1) e.addresses.push(text(msg, a, b));
        else if (g === 2) {
          eachField(msg, a, b, (h, v) => {
            if (h === 1) e.conditions.ready = v !== 0;
            else if (h === 2) e.conditions.serving = v !== 0;
            else if (h === 3) e.conditions.terminating = v !== 0;
          });
        } else if (g === 4) {
          const r = { kind: '', namespace: '', name: '', uid: '' };
          eachField(msg, a, b, (h, _x, c, d) => {
            if (h === 1) r.kind = text(msg, c, d);
            else if (h === 2) r.namespace = text(msg, c, d);
            else if (h === 3) r.name = text(msg, c, d);
            else if (h === 4) r.uid = text(msg, c, d);
          });
          e.targetRef = defined({ kind: some(r.kind), namespace: some(r.namespace), name: some(r.name), uid: some(r.uid) });
        }
      });
      s.endpoints.push(e);
    }
  });
  return s;
}

export interface WireData { metadata: WireMeta; type?: string; data?: Record<string, string> }

/** A Secret (metadata 1, data 2: map<string, bytes>, as base64 like JSON's; type 3) or a ConfigMap
 * (metadata 1, data 2: map<string, string>; binaryData 3 is not read). */
export function decodeData(kind: 'Secret' | 'ConfigMap'): (msg: Buffer) => WireData {
  const encoding = kind === 'Secret' ? 'base64' : 'utf8';
  return (msg) => {
    const o: WireData = { metadata: { name: '' } };
    eachField(msg, 0, msg.length, (f, _v, from, to) => {
      if (f === 1) o.metadata = meta(msg, from, to);
      else if (f === 2) entry(msg, from, to, (o.data ??= {}), encoding);
      else if (f === 3 && kind === 'Secret') o.type = text(msg, from, to);
    });
    return o;
  };
}
