// AccessGateway access: where they live, and status writes through /status (a JSON patch testing the uid).
import { group, plural, version } from '../api/schema.js';
import { accessLogAnnotation } from '../api/labels.js';
import type { AccessGateway } from '../api/types.js';
import type { Logger } from 'pino';
import type { Metrics } from '../observability/metrics.js';
import { ApiError, type KubeClient } from './client.js';
import type { InformerEvent } from './informer.js';
import { Watched } from './watched.js';

/** An AccessGateway as the operator's cache keeps it: of its metadata, what the operator reads
 * (who and which version it is, and of its annotations `access-gateway.io/access-log`); a team's
 * labels, other annotations, finalizers and owner references (an object's 1.5 MB, whatever their
 * keys) are never read. */
export function gatewayForCache(gw: AccessGateway): AccessGateway {
  const m = gw.metadata as AccessGateway['metadata'] & Record<string, unknown>;
  const a = m.annotations;
  const ours = a ? Object.entries(a).filter(([k]) => readAnnotations.has(k)) : [];
  if (Object.keys(m).every((k) => readMetadata.has(k)) && ours.length === Object.keys(a ?? {}).length) return gw;
  const metadata: Record<string, unknown> = {};
  for (const k of readMetadata) if (k !== 'annotations' && m[k] !== undefined) metadata[k] = m[k];
  if (ours.length) metadata.annotations = Object.fromEntries(ours);
  return { ...gw, metadata: metadata as AccessGateway['metadata'] };
}
const readMetadata = new Set(['name', 'namespace', 'uid', 'resourceVersion', 'generation', 'creationTimestamp', 'deletionTimestamp', 'annotations']);
const readAnnotations = new Set([accessLogAnnotation]);

/** What the cache keeps of each gateway read (after `gatewayForCache`), told when a list begins. */
export interface GatewayKeeper {
  keep(gw: AccessGateway): AccessGateway;
  listStarts(namespace: string | undefined): void;
}

/** The operator's watch of AccessGateways (in `namespaces`; all when empty), each kept as
 * `gatewayForCache` makes it, then as `keeper` does (default: whole). `read` reads one again, whole. */
export function watchGateways(client: KubeClient, o: { namespaces: string[]; log: Logger; metrics?: Metrics; keeper?: GatewayKeeper;
  onEvent: (type: InformerEvent, gw: AccessGateway, old: AccessGateway | undefined, decodeMs?: number) => void }): Watched<AccessGateway> & { read: GatewayReader } {
  const k = o.keeper;
  const watched = new Watched<AccessGateway>(client, { name: 'accessgateways', namespaces: o.namespaces, path: gatewaysPath,
    trim: k ? (gw) => k.keep(gatewayForCache(gw)) : gatewayForCache, ...(k ? { onListStart: (ns: string | undefined) => k.listStarts(ns) } : {}),
    log: o.log, ...(o.metrics ? { metrics: o.metrics } : {}), onEvent: o.onEvent });
  return Object.assign(watched, { read: (ns: string, name: string) => readGateway(client, ns, name) });
}

/** A gateway read now (`gatewayForCache`'s part), or undefined if there is none; and what decoding it took. */
export type GatewayReader = (namespace: string, name: string) => Promise<{ gw: AccessGateway | undefined; decodeMs: number }>;

/** Listed by name: the operator may list and watch gateways, not get one. */
async function readGateway(client: KubeClient, namespace: string, name: string): ReturnType<GatewayReader> {
  let decodeMs = 0;
  const list = await client.request<{ items?: AccessGateway[] }>('GET', `${gatewaysPath(namespace)}?fieldSelector=${encodeURIComponent(`metadata.name=${name}`)}`, {
    what: `list AccessGateway ${namespace}/${name}`, onDecodeMs: (ms) => { decodeMs = ms; },
  });
  const gw = list?.items?.[0];
  return { gw: gw && gatewayForCache(gw), decodeMs };
}

export function gatewaysPath(namespace?: string): string {
  return namespace ? `/apis/${group}/${version}/namespaces/${namespace}/${plural}` : `/apis/${group}/${version}/${plural}`;
}

/**
 * Writes an object the gateway owns (Service, EndpointSlice), as field manager access-gateway:
 * created when it does not exist (a create never replaces anyone's object: false if one appeared
 * meanwhile), else server-side applied — the caller has checked that the existing one is ours.
 */
export async function applyOwned(client: KubeClient, obj: { apiVersion: string; kind: string; metadata: { name: string; namespace: string } }, exists: boolean): Promise<boolean> {
  const plural = obj.kind === 'Service' ? 'services' : 'endpointslices';
  const base = obj.apiVersion === 'v1' ? '/api/v1' : `/apis/${obj.apiVersion}`;
  const collection = `${base}/namespaces/${obj.metadata.namespace}/${plural}`;
  const what = `${exists ? 'apply' : 'create'} ${obj.kind} ${obj.metadata.namespace}/${obj.metadata.name}`;
  if (exists) {
    const path = `${collection}/${obj.metadata.name}`;
    const live = await client.request<any>('PATCH', `${path}?fieldManager=access-gateway&force=true`, { body: obj, contentType: 'application/apply-patch+yaml', what });
    if (obj.kind === 'Service') await dropStale(client, path, obj as unknown as ServiceLike, live, what);
  } else {
    try {
      await client.request('POST', `${collection}?fieldManager=access-gateway`, { body: obj, what });
    } catch (err) {
      // there already (the cache had not shown it yet): false; its watch event reconciles the
      // gateway again, which applies it if it is the gateway's, or says whose it is
      if ((err as { status?: number }).status !== 409) throw err;
      return false;
    }
  }
  return true;
}

interface ServiceLike { metadata: { annotations?: Record<string, string> }; spec: { ports: { port: number; protocol: string }[] } }

/**
 * What an earlier write of ours set and the Service no longer wants (an annotation, a port after
 * TLS was switched): the create owns those fields as an Update, so an apply that leaves them out
 * does not remove them. Removed with a strategic merge patch; others' fields are not touched.
 */
async function dropStale(client: KubeClient, path: string, want: ServiceLike, live: any, what: string): Promise<void> {
  const ours = ((live?.metadata?.managedFields ?? []) as { manager?: string; fieldsV1?: any }[]).filter((m) => m.manager === 'access-gateway');
  const keys = (o: unknown) => Object.keys((o ?? {}) as object);
  const annotations = new Set(ours.flatMap((m) => keys(m.fieldsV1?.['f:metadata']?.['f:annotations']).map((k) => k.slice(2))));
  const ports = ours.flatMap((m) => keys(m.fieldsV1?.['f:spec']?.['f:ports']).flatMap((k) => {
    try { return k.startsWith('k:') ? [JSON.parse(k.slice(2)) as { port: number; protocol: string }] : []; } catch { return []; }
  }));
  const staleAnnotations = [...annotations].filter((k) => want.metadata.annotations?.[k] === undefined && live?.metadata?.annotations?.[k] !== undefined);
  const livePorts = (live?.spec?.ports ?? []) as { port: number; protocol?: string }[];
  const stalePorts = ports.filter((p) => !want.spec.ports.some((w) => w.port === p.port && w.protocol === p.protocol)
    && livePorts.some((l) => l.port === p.port && (l.protocol ?? 'TCP') === p.protocol));
  if (!staleAnnotations.length && !stalePorts.length) return;
  const patch = {
    ...(staleAnnotations.length ? { metadata: { annotations: Object.fromEntries(staleAnnotations.map((k) => [k, null])) } } : {}),
    ...(stalePorts.length ? { spec: { ports: stalePorts.map((p) => ({ port: p.port, protocol: p.protocol, $patch: 'delete' })) } } : {}),
  };
  await client.request('PATCH', `${path}?fieldManager=access-gateway`, { body: patch, contentType: 'application/strategic-merge-patch+json', what: `${what} (stale fields)` });
}

/** Writes `status`; a gateway deleted (or made again) meanwhile is not an error (returns false). */
export async function writeStatus(client: KubeClient, gw: AccessGateway, status: AccessGateway['status']): Promise<boolean> {
  const path = `${gatewaysPath(gw.metadata.namespace)}/${gw.metadata.name}/status`;
  // the status is replaced whole, and only on the object it was made for: a gateway deleted and
  // made again under its name since it was read refuses it (422; a merge patch's metadata.uid is
  // no precondition on the status subresource: it landed on the new one, Ready and all)
  const uid = gw.metadata.uid;
  const patch = [...(uid ? [{ op: 'test', path: '/metadata/uid', value: uid }] : []), { op: 'add', path: '/status', value: status ?? {} }];
  try {
    await client.request('PATCH', path, { body: patch, contentType: 'application/json-patch+json', discard: true, what: `status of ${gw.metadata.namespace}/${gw.metadata.name}` });
    return true;
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return false;
    if (uid && err instanceof ApiError && err.status === 422 && await replaced(client, gw, uid)) return false;
    throw err;
  }
}

/** Whether the gateway `gw` names is gone or another object than `uid` (the test's 422 says no
 * more). Listed by name, its metadata only: the operator may list and watch gateways, not get one. */
async function replaced(client: KubeClient, gw: AccessGateway, uid: string): Promise<boolean> {
  const name = encodeURIComponent(`metadata.name=${gw.metadata.name}`);
  const list = await client.request<{ items?: { metadata?: { uid?: string } }[] }>('GET', `${gatewaysPath(gw.metadata.namespace)}?fieldSelector=${name}`, {
    accept: 'application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1', what: `list AccessGateway ${gw.metadata.namespace}/${gw.metadata.name}`,
  });
  return list?.items?.[0]?.metadata?.uid !== uid;
}
