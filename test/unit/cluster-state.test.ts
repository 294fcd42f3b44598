// --endpoint-addresses pods in the cluster state: a pod's change re-reads exactly the Services
// whose EndpointSlices name it, in whatever order slices and pods arrive; a gateway's snapshot
// carries the pods its Services' slices name; pods the operator may not read count as none.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Logger } from 'pino';
import { ClusterState } from '../../src/controller/cluster-state.js';
import { Informer, type KubeObject } from '../../src/kube/informer.js';
import { ApiError, type KubeClient } from '../../src/kube/client.js';
import { applyDefaults } from '../../src/api/defaults.js';
import { translate } from '../../src/translate/translate.js';
import { silentLogger } from '../../src/observability/logger.js';
import { objectBytes } from '../../src/controller/labelled-data.js';

type On = (ev: { type: string; object: unknown }) => void;

/** Empty lists; each watch's callback kept by collection path. */
function fakeClient() {
  const watches = new Map<string, On>();
  const asked: string[] = [];
  const client = {
    request: async (_m: string, path: string) => {
      asked.push(path);
      return { items: [], metadata: { resourceVersion: '1' } };
    },
    watch: (path: string, signal: AbortSignal, _t: number, _a: string | undefined, on: On) => {
      const u = new URL(path, 'https://x');
      const selector = u.searchParams.get('labelSelector');
      watches.set(selector ? `${u.pathname}?${selector}` : u.pathname, on);
      return new Promise<void>((r) => signal.addEventListener('abort', () => r()));
    },
  } as unknown as KubeClient;
  return { client, watches, asked };
}

const slice = (name: string, service: string | undefined, pods: string[], rv: string) => ({
  metadata: { name, namespace: 'a', resourceVersion: rv, ...(service ? { labels: { 'kubernetes.io/service-name': service } } : {}) },
  addressType: 'IPv4', ports: [{ name: 'http', port: 8080 }],
  endpoints: pods.map((p, i) => ({ addresses: [`198.18.0.${i + 10}`], targetRef: { kind: 'Pod', name: p } })),
});
const pod = (name: string, rv: string, over: { ip?: string; deleting?: boolean } = {}) => ({
  metadata: { name, namespace: 'a', uid: `uid-${name}`, resourceVersion: rv, ...(over.deleting ? { deletionTimestamp: '2026-12-04T00:00:00Z' } : {}), annotations: { big: 'x'.repeat(1000) } },
  spec: { containers: [{ name: 'c', image: 'x' }] },
  status: { phase: 'Running', podIPs: [{ ip: over.ip ?? '198.18.0.10' }], conditions: [{ type: 'Ready', status: 'True' }] },
});

test('a pod\'s change re-reads the Services whose slices name it, whatever the order; a slice that moves leaves its old Service re-read', async () => {
  const { client, watches, asked } = fakeClient();
  const refs: string[] = [];
  const state = new ClusterState(client, { namespaces: [], log: silentLogger, endpointAddresses: 'pods', onChange: (r) => refs.push(`${r.kind} ${r.namespace}/${r.name}`) });
  state.start();
  await state.firstSync();
  while (!watches.has('/api/v1/pods') || !watches.has('/apis/discovery.k8s.io/v1/endpointslices')) await new Promise((r) => setImmediate(r));
  // pods that can never be endpoints are not asked for
  const podList = new URL(asked.find((p) => p.startsWith('/api/v1/pods?'))!, 'https://x');
  assert.equal(podList.searchParams.get('fieldSelector'), 'status.phase!=Succeeded,status.phase!=Failed,spec.hostNetwork=false');
  const slices = watches.get('/apis/discovery.k8s.io/v1/endpointslices')!;
  const pods = watches.get('/api/v1/pods')!;
  const services = watches.get('/api/v1/services')!;
  const step = (f: () => void) => { refs.length = 0; f(); return [...refs]; };

  // a pod before any slice names it: nothing to re-read
  assert.deepEqual(step(() => pods({ type: 'ADDED', object: pod('p0', '1') })), []);
  // slice first, then its pod
  assert.deepEqual(step(() => slices({ type: 'ADDED', object: slice('web-1', 'web', ['p1'], '2') })), ['Service a/web']);
  assert.deepEqual(step(() => pods({ type: 'ADDED', object: pod('p1', '3') })), ['Service a/web']);
  // an update that changes nothing read (readiness, annotations): no reconcile
  assert.deepEqual(step(() => pods({ type: 'MODIFIED', object: { ...pod('p1', '4'), status: { ...pod('p1', '4').status, conditions: [] } } })), []);
  // each change that is read
  assert.deepEqual(step(() => pods({ type: 'MODIFIED', object: pod('p1', '5', { deleting: true }) })), ['Service a/web']);
  assert.deepEqual(step(() => pods({ type: 'MODIFIED', object: pod('p1', '6', { ip: '198.18.0.99' }) })), ['Service a/web']);
  assert.deepEqual(step(() => pods({ type: 'DELETED', object: pod('p1', '7') })), ['Service a/web']);
  // the same name again (a new uid): still named
  assert.deepEqual(step(() => pods({ type: 'ADDED', object: pod('p1', '8') })), ['Service a/web']);
  // a slice or Service update that changes nothing kept (annotations, topology): no reconcile
  const annotated = (o: any, rv: string) => ({ ...o, metadata: { ...o.metadata, resourceVersion: rv, annotations: { big: 'y'.repeat(1000) } } });
  assert.deepEqual(step(() => slices({ type: 'MODIFIED', object: annotated(slice('web-1', 'web', ['p1'], ''), '8a') })), []);
  const service = (rv: string, port: number) => ({ metadata: { name: 'web', namespace: 'a', resourceVersion: rv }, spec: { ports: [{ name: 'http', port, targetPort: 8080 }] } });
  assert.deepEqual(step(() => services({ type: 'ADDED', object: service('8b', 80) })), ['Service a/web']);
  assert.deepEqual(step(() => services({ type: 'MODIFIED', object: annotated({ ...service('', 80), spec: { ports: [{ name: 'http', port: 80, targetPort: 9090 }] } }, '8c') })), []);
  // fields not kept: a slice port's appProtocol and an endpoint's topology, a load balancer's ipMode
  const h2c = slice('web-1', 'web', ['p1'], '8ca');
  assert.deepEqual(step(() => slices({ type: 'MODIFIED', object: { ...h2c, ports: [{ ...h2c.ports[0], appProtocol: 'kubernetes.io/h2c' }], endpoints: h2c.endpoints.map((e) => ({ ...e, zone: 'z', nodeName: 'n' })) } })), []);
  const lb = (rv: string, ipMode: string) => ({ ...service(rv, 80), status: { loadBalancer: { ingress: [{ ip: '198.18.9.9', ipMode, ports: [{ port: 80 }] }] } } });
  assert.deepEqual(step(() => services({ type: 'MODIFIED', object: lb('8cb', 'VIP') })), ['Service a/web']);
  assert.deepEqual(step(() => services({ type: 'MODIFIED', object: lb('8cc', 'Proxy') })), []);
  assert.deepEqual(step(() => services({ type: 'MODIFIED', object: service('8d', 81) })), ['Service a/web']);
  // a ReferenceGrant: kept as whom it lets in, to what; an update of anything else re-reads nothing
  const grants = watches.get('/apis/gateway.networking.k8s.io/v1beta1/referencegrants')!;
  const grant = (rv: string, to: Record<string, string>) => ({ metadata: { name: 'g', namespace: 'a', resourceVersion: rv, uid: 'ug', annotations: { big: 'z'.repeat(1000) } },
    spec: { from: [{ group: 'access-gateway.io', kind: 'AccessGateway', namespace: 'b', extra: 'x' }], to: [to] } });
  assert.deepEqual(step(() => grants({ type: 'ADDED', object: grant('8e', { group: '', kind: 'Service', name: 'web' }) })), ['ReferenceGrant a/g']);
  assert.deepEqual(step(() => grants({ type: 'MODIFIED', object: { ...grant('8f', { group: '', kind: 'Service', name: 'web' }), metadata: { ...grant('8f', {}).metadata, annotations: { other: '1' } } } })), []);
  assert.deepEqual(step(() => grants({ type: 'MODIFIED', object: grant('8g', { group: '', kind: 'Service' }) })), ['ReferenceGrant a/g']);
  const kept = (state as unknown as { grants: { get(ns: string, n: string): unknown } }).grants.get('a', 'g');
  assert.deepEqual(JSON.parse(JSON.stringify(kept)), { metadata: { name: 'g', namespace: 'a', uid: 'ug', resourceVersion: '8g' },
    spec: { from: [{ group: 'access-gateway.io', kind: 'AccessGateway', namespace: 'b' }], to: [{ group: '', kind: 'Service' }] } });
  // pod before slice: p0 named later
  assert.deepEqual(step(() => slices({ type: 'MODIFIED', object: slice('web-1', 'web', ['p0'], '9') })), ['Service a/web']);
  assert.deepEqual(step(() => pods({ type: 'MODIFIED', object: pod('p1', '10', { deleting: true }) })), [], 'a pod the slice no longer names');
  assert.deepEqual(step(() => pods({ type: 'MODIFIED', object: pod('p0', '11', { deleting: true }) })), ['Service a/web']);
  // a second Service naming the same pod: both re-read
  slices({ type: 'ADDED', object: slice('api-1', 'api', ['p0'], '12') });
  assert.deepEqual(step(() => pods({ type: 'MODIFIED', object: pod('p0', '13') })).sort(), ['Service a/api', 'Service a/web']);
  // the slice moves to another Service: both are re-read, and the pod now belongs to the new one
  assert.deepEqual(step(() => slices({ type: 'MODIFIED', object: slice('web-1', 'other', ['p0'], '14') })).sort(), ['Service a/other', 'Service a/web']);
  assert.deepEqual(step(() => pods({ type: 'MODIFIED', object: pod('p0', '15', { deleting: true }) })).sort(), ['Service a/api', 'Service a/other']);
  // ... or to none
  assert.deepEqual(step(() => slices({ type: 'MODIFIED', object: slice('web-1', undefined, ['p0'], '16') })), ['Service a/other']);
  // deleted slices name nothing
  slices({ type: 'DELETED', object: slice('api-1', 'api', ['p0'], '17') });
  assert.deepEqual(step(() => pods({ type: 'MODIFIED', object: pod('p0', '18') })), []);
  const index = (state as unknown as { slices: { index: Map<string, unknown> } }).slices.index;
  assert.deepEqual([...index.keys()].filter((k) => k.startsWith('pod ')), [], 'nothing kept for pods no slice names');

  // a gateway's snapshot: the pods its Service's slices name, as cached (trimmed)
  slices({ type: 'ADDED', object: slice('web-2', 'web', ['p0', 'p1', 'missing'], '19') });
  const gw = applyDefaults({
    apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: 'g', namespace: 'a' },
    spec: { authentication: { audiences: ['gw'] }, access: [{ groups: ['g'] }], routes: [{ name: 'web', pathPrefix: '/', service: { name: 'web', port: 80 } }] },
  } as never);
  const snap = state.snapshotFor(gw);
  assert.deepEqual(Object.keys(snap.pods ?? {}).sort(), ['a/p0', 'a/p1']);
  assert.deepEqual(JSON.parse(JSON.stringify(snap.pods!['a/p0'])), {
    metadata: { name: 'p0', namespace: 'a', uid: 'uid-p0', resourceVersion: '18' }, spec: {}, status: { phase: 'Running', podIPs: [{ ip: '198.18.0.10' }] },
  });
  await state.stop();
});

test('an informer without `forbidden` does not count a 403 as synced (every other watch: the operator waits for it)', { timeout: 10_000 }, async () => {
  const warned: string[] = [];
  const log = { ...silentLogger, error: () => {}, warn: (_o: unknown, msg: string) => warned.push(msg), info: () => {}, debug: () => {} } as unknown as Logger;
  const client = { request: async () => { throw new ApiError(403, { message: 'services is forbidden' }, 'list'); } } as unknown as KubeClient;
  const clock = { now: () => 0, setTimeout: () => 0 as never, clearTimeout: () => {} };
  const i = new Informer<KubeObject>(client, { name: 'services', path: '/api/v1/services', log, clock: clock as never, onEvent: () => {} });
  i.start();
  while (!warned.length) await new Promise((r) => setImmediate(r));
  assert.equal(i.hasSynced, false);
  await i.stop();
});

test('with --endpoint-addresses any, pods are not watched and a snapshot has none (addresses unchecked)', async () => {
  const { client, asked } = fakeClient();
  const state = new ClusterState(client, { namespaces: [], log: silentLogger, endpointAddresses: 'any', onChange: () => {} });
  state.start();
  await state.firstSync();
  await state.stop();
  assert.ok(asked.length > 0 && !asked.some((p) => p.startsWith('/api/v1/pods')), asked.join(' '));
  const gw = applyDefaults({
    apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: 'g', namespace: 'a' },
    spec: { authentication: { audiences: ['gw'] }, access: [{ groups: ['g'] }], routes: [{ name: 'web', pathPrefix: '/', service: { name: 'web', port: 80 } }] },
  } as never);
  assert.equal(state.snapshotFor(gw).pods, undefined);
});

test('pods the operator may not list (403) count as none: synced, logged as an error; once listed, a refused watch keeps them, as any watch error does', { timeout: 10_000 }, async () => {
  const errors: string[] = [];
  const log = { ...silentLogger, error: (_o: unknown, msg: string) => errors.push(msg), warn: () => {}, info: () => {}, debug: () => {} } as unknown as Logger;
  let lists = 0;
  let watchOn: On | undefined;
  let failWatch!: (e: Error) => void;
  const client = {
    request: async (_m: string, path: string) => {
      // the first list refused, later ones answered
      if (++lists === 1) throw new ApiError(403, { message: 'pods is forbidden' }, `list ${path}`);
      return { items: [pod('p1', '1')], metadata: { resourceVersion: '1' } };
    },
    watch: (_p: string, signal: AbortSignal, _t: number, _a: string | undefined, on: On) => {
      watchOn = on;
      return new Promise<void>((resolve, reject) => { failWatch = reject; signal.addEventListener('abort', () => resolve()); });
    },
  } as unknown as KubeClient;
  const events: string[] = [];
  let now = 0;
  const sleeps: (() => void)[] = [];
  const clock = { now: () => now, setTimeout: (f: () => void) => { sleeps.push(f); return 0 as never; }, clearTimeout: () => {} };
  const i = new Informer<KubeObject>(client, {
    name: 'pods', path: '/api/v1/pods', log, forbidden: 'may not list pods', clock: clock as never,
    onEvent: (t, o) => events.push(`${t} ${o.metadata.name}`),
  });
  i.start();
  await i.firstSync; // synced though refused
  assert.deepEqual([i.cache.size, errors], [0, ['may not list pods']]);
  // retried: the pod is listed
  while (!sleeps.length) await new Promise((r) => setImmediate(r));
  now += 30_000;
  sleeps.shift()!();
  while (!watchOn) await new Promise((r) => setImmediate(r));
  assert.deepEqual(events, ['add p1']);
  // the watch refused later: what was listed is kept (the data plane serves from its caches while
  // the apiserver is away: one refused watch does not empty every team's routes), and it is watched again
  failWatch(new ApiError(403, { message: 'pods is forbidden' }, 'watch /api/v1/pods'));
  while (!sleeps.length) await new Promise((r) => setImmediate(r));
  assert.deepEqual([events, i.cache.size, errors.length], [['add p1'], 1, 1]);
  watchOn = undefined;
  sleeps.shift()!();
  while (!watchOn) await new Promise((r) => setImmediate(r));
  assert.deepEqual([lists, events, i.cache.size], [2, ['add p1'], 1]);
  const stopping = i.stop();
  for (const f of sleeps.splice(0)) f();
  await stopping;
});

test('labelled Secrets and ConfigMaps are kept as read: a TLS Secret\'s tls.crt and tls.key, a CA bundle\'s data; not annotations, managed fields or other keys', async () => {
  const { client, watches } = fakeClient();
  const state = new ClusterState(client, { namespaces: [], log: silentLogger, endpointAddresses: 'any', onChange: () => {} });
  state.start();
  await state.firstSync();
  const big = { annotations: { note: 'x'.repeat(200_000) }, managedFields: [{ manager: 'm', fieldsV1: { 'f:data': {} } }] };
  watches.get('/api/v1/secrets?access-gateway.io/listener-tls=true')!({ type: 'ADDED', object: {
    metadata: { name: 'tls', namespace: 'a', resourceVersion: '2', labels: { 'access-gateway.io/listener-tls': 'true' }, ...big },
    type: 'kubernetes.io/tls', data: { 'tls.crt': 'Y3J0', 'tls.key': 'a2V5', padding: 'x'.repeat(500_000) } } });
  watches.get('/api/v1/configmaps?access-gateway.io/ca-bundle=true')!({ type: 'ADDED', object: {
    metadata: { name: 'ca', namespace: 'a', resourceVersion: '3', ...big }, data: { 'bundle.pem': 'PEM' } } });
  const gw = applyDefaults({
    apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: 'g', namespace: 'a' },
    spec: { authentication: { audiences: ['gw'] }, access: [{ groups: ['g'] }], listener: { tls: { secretName: 'tls', clientCA: { kind: 'ConfigMap', name: 'ca', key: 'bundle.pem' } } },
      routes: [{ name: 'web', pathPrefix: '/', service: { name: 'web', port: 80 } },
        ...['/2', '/3'].map((p) => ({ name: `tls${p.slice(1)}`, pathPrefix: p, service: { name: 'web', port: 80, scheme: 'https', caRef: { kind: 'Secret', name: 'cas', key: 'ca.crt' } } }))] },
  } as never);
  watches.get('/api/v1/secrets?access-gateway.io/ca-bundle=true')!({ type: 'ADDED', object: {
    metadata: { name: 'cas', namespace: 'a', resourceVersion: '4', ...big }, type: 'Opaque', data: { 'ca.crt': 'UEVN', other: 'T1RIRVI=' } } });
  // each named key is read (a Secret's decoded) once, however many routes name it
  const labelled = (state as unknown as { labelled: { bundle(...a: unknown[]): unknown } }).labelled;
  const asked: unknown[][] = [];
  const bundle = labelled.bundle.bind(labelled);
  labelled.bundle = (...a: unknown[]) => (asked.push(a), bundle(...a));
  const snap = state.snapshotFor(gw);
  assert.deepEqual(asked, [['Secret', 'a', 'cas', 'ca.crt'], ['ConfigMap', 'a', 'ca', 'bundle.pem']]);
  await state.stop();
  const cached = (state as unknown as { labelled: Record<'caSecrets' | 'caConfigMaps', { watch: { get(ns: string, name: string): object } }> }).labelled;
  assert.deepEqual(cached.caConfigMaps.watch.get('a', 'ca'), { metadata: { name: 'ca', namespace: 'a', uid: undefined, resourceVersion: '3' }, data: { 'bundle.pem': 'PEM' }, bytes: 13 + objectBytes });
  assert.deepEqual(cached.caSecrets.watch.get('a', 'cas'), { metadata: { name: 'cas', namespace: 'a', uid: undefined, resourceVersion: '4' }, data: { 'ca.crt': 'UEVN', other: 'T1RIRVI=' }, bytes: 23 + objectBytes });
  const secret = snap.secrets!['a/tls'] as { type?: string; data?: object; metadata?: object };
  assert.equal(secret.type, 'kubernetes.io/tls');
  assert.deepEqual(secret.data, { 'tls.crt': 'Y3J0', 'tls.key': 'a2V5' });
  assert.deepEqual(Object.keys(secret.metadata!).sort(), ['name', 'namespace', 'resourceVersion', 'uid']);
  assert.deepEqual(snap.caBundles!['ConfigMap/a/ca'], { 'bundle.pem': 'PEM' });
  // a Secret's key a gateway names, decoded; not its other keys (a team may give it thousands)
  assert.deepEqual(snap.caBundles!['Secret/a/cas'], { 'ca.crt': 'PEM' });
  // two keys of one object (a client CA and a caRef), and a key named __proto__, each its own
  const two = structuredClone(gw);
  two.spec.routes[1]!.service!.caRef = { kind: 'ConfigMap', name: 'ca', key: '__proto__' };
  const kept = (state as unknown as { labelled: { caConfigMaps: { watch: { get(ns: string, n: string): { data: Record<string, string> } } } } }).labelled.caConfigMaps.watch.get('a', 'ca');
  Object.defineProperty(kept.data, '__proto__', { value: 'PROTO', enumerable: true });
  const both = state.snapshotFor(two).caBundles!['ConfigMap/a/ca']!;
  assert.deepEqual([Object.hasOwn(both, 'bundle.pem') && both['bundle.pem'], Object.hasOwn(both, '__proto__') && both['__proto__']], ['PEM', 'PROTO']);
  // an object that is there but lacks the key is told apart from one that is not there (the message says which)
  const lacking = structuredClone(gw);
  for (const r of lacking.spec.routes.slice(1)) r.service!.caRef = { kind: 'Secret', name: 'cas', key: 'absent.crt' };
  lacking.spec.listener!.tls!.clientCA = { kind: 'ConfigMap', name: 'nowhere', key: 'ca.crt' };
  const told = state.snapshotFor(lacking).caBundles!;
  assert.deepEqual([told['Secret/a/cas'], Object.hasOwn(told, 'ConfigMap/a/nowhere')], [{}, false]);
  assert.ok(JSON.stringify(snap).length < 1_000, 'nothing of the annotations, managed fields or other keys is kept');
});

test('a namespace\'s labelled Secrets and ConfigMaps past the byte bound are all set aside, its gateways naming one not served; under it again, they are listed again; another namespace is not affected', async () => {
  const listed: Record<string, unknown[]> = {}; // what a namespace's list answers, by path
  const asked: string[] = [];
  const watches = new Map<string, On>();
  const client = {
    request: async (_m: string, path: string) => {
      asked.push(path);
      const u = new URL(path, 'https://x');
      return { items: listed[u.pathname] ?? [], metadata: { resourceVersion: '1' } };
    },
    watch: (path: string, signal: AbortSignal, _t: number, _a: string | undefined, on: On) => {
      const u = new URL(path, 'https://x');
      watches.set(`${u.pathname}?${u.searchParams.get('labelSelector')}`, on);
      return new Promise<void>((r) => signal.addEventListener('abort', () => r()));
    },
  } as unknown as KubeClient;
  const refs: string[] = [];
  const state = new ClusterState(client, { namespaces: [], log: silentLogger, endpointAddresses: 'any', maxLabelledBytesPerNamespace: 1000 + 2 * objectBytes,
    onChange: (r) => refs.push(`${r.kind} ${r.namespace}/${r.name}`) });
  state.start();
  await state.firstSync();
  const cms = watches.get('/api/v1/configmaps?access-gateway.io/ca-bundle=true')!;
  const tls = watches.get('/api/v1/secrets?access-gateway.io/listener-tls=true')!;
  const cm = (ns: string, name: string, rv: string, bytes: number) => ({
    metadata: { name, namespace: ns, resourceVersion: rv, labels: { 'access-gateway.io/ca-bundle': 'true' }, ownerReferences: [{ uid: 'x'.repeat(5000) }] },
    data: { 'ca.crt': 'C'.repeat(bytes - 6) },
  });
  const gw = (ns: string) => applyDefaults({
    apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: 'g', namespace: ns },
    spec: { authentication: { audiences: ['gw'] }, access: [{ groups: ['g'] }], listener: { tls: { secretName: 'tls', clientCA: { kind: 'ConfigMap', name: 'ca', key: 'ca.crt' } } },
      routes: [{ name: 'web', pathPrefix: '/', service: { name: 'web', port: 80 } }] },
  } as never);
  const cached = (state as unknown as { labelled: { caConfigMaps: { watch: { get(ns: string, name: string): { data?: object } | undefined } } } }).labelled.caConfigMaps.watch;

  cms({ type: 'ADDED', object: cm('a', 'ca', '2', 500) });
  cms({ type: 'ADDED', object: cm('b', 'ca', '3', 500) });
  tls({ type: 'ADDED', object: { metadata: { name: 'tls', namespace: 'a', resourceVersion: '4' }, type: 'kubernetes.io/tls', data: { 'tls.crt': 'Y3J0', 'tls.key': 'a2V5', other: 'x'.repeat(5000) } } });
  assert.equal(state.snapshotFor(gw('a')).setAside, undefined, '500 + 18 bytes and two objects: under the bound (a TLS Secret\'s other keys do not count)');
  assert.equal(state.snapshotFor(gw('a')).caBundles!['ConfigMap/a/ca']!['ca.crt']!.length, 494);

  // past it: every labelled object of namespace a loses its data, and each is re-read
  refs.length = 0;
  cms({ type: 'ADDED', object: cm('a', 'pad', '5', 500) });
  assert.deepEqual(refs.sort(), ['ConfigMap a/ca', 'ConfigMap a/pad', 'Secret a/tls']);
  const a = state.snapshotFor(gw('a'));
  assert.match(a.setAside ?? '', /namespace a .* more than 0 MiB \(the operator's --max-labelled-mib-per-namespace\)/);
  assert.deepEqual(a.caBundles, {});
  assert.deepEqual(a.secrets, {});
  assert.equal(cached.get('a', 'ca')!.data, undefined, 'not kept');
  assert.equal(cached.get('a', 'pad')!.data, undefined, 'not kept');
  const t = translate(gw('a'), { port: { port: 20000 }, ...a });
  assert.equal(t.plan, null);
  assert.deepEqual(t.conditions.map((c) => [c.type, c.status, c.reason]), [['Accepted', 'True', 'Accepted'], ['ResolvedRefs', 'False', 'InvalidCertificateRef']]);
  // an update while still over keeps nothing either
  cms({ type: 'MODIFIED', object: cm('a', 'ca', '6', 490) });
  assert.equal(cached.get('a', 'ca')!.data, undefined);
  // namespace b: untouched
  const b = state.snapshotFor(gw('b'));
  assert.equal(b.setAside, undefined);
  assert.equal(b.caBundles!['ConfigMap/b/ca']!['ca.crt']!.length, 494);

  // back under: the namespace is listed again; what the list has at the set-aside version is kept again
  listed['/api/v1/namespaces/a/configmaps'] = [cm('a', 'ca', '6', 490)];
  listed['/api/v1/namespaces/a/secrets'] = [{ metadata: { name: 'tls', namespace: 'a', resourceVersion: '4' }, type: 'kubernetes.io/tls', data: { 'tls.crt': 'Y3J0', 'tls.key': 'a2V5' } }];
  refs.length = 0;
  cms({ type: 'DELETED', object: cm('a', 'pad', '7', 500) });
  await waitUntil(() => state.snapshotFor(gw('a')).setAside === undefined && state.snapshotFor(gw('a')).caBundles!['ConfigMap/a/ca'] !== undefined);
  const again = state.snapshotFor(gw('a'));
  assert.equal(again.caBundles!['ConfigMap/a/ca']!['ca.crt']!.length, 484);
  assert.deepEqual((again.secrets!['a/tls'] as { data?: object }).data, { 'tls.crt': 'Y3J0', 'tls.key': 'a2V5' });
  assert.ok(asked.some((p) => p.startsWith('/api/v1/namespaces/a/configmaps?') && p.includes('labelSelector=access-gateway.io%2Fca-bundle%3Dtrue')), asked.join(' '));
  assert.ok(refs.includes('ConfigMap a/ca') && refs.includes('Secret a/tls'), refs.join());
  await state.stop();
});

test('a list read again puts back only the version that was set aside; a newer one comes with the watch', async () => {
  const watches = new Map<string, On>();
  let listRv = '3';
  const client = {
    request: async (_m: string, path: string) => (path.startsWith('/api/v1/namespaces/a/configmaps')
      ? { items: [{ metadata: { name: 'ca', namespace: 'a', resourceVersion: listRv }, data: { k: 'new' } }], metadata: {} }
      : { items: [], metadata: { resourceVersion: '1' } }),
    watch: (path: string, signal: AbortSignal, _t: number, _a: string | undefined, on: On) => {
      const u = new URL(path, 'https://x');
      watches.set(`${u.pathname}?${u.searchParams.get('labelSelector')}`, on);
      return new Promise<void>((r) => signal.addEventListener('abort', () => r()));
    },
  } as unknown as KubeClient;
  const state = new ClusterState(client, { namespaces: [], log: silentLogger, endpointAddresses: 'any', maxLabelledBytesPerNamespace: 100 + 2 * objectBytes, onChange: () => {} });
  state.start();
  await state.firstSync();
  const cms = watches.get('/api/v1/configmaps?access-gateway.io/ca-bundle=true')!;
  const cached = (state as unknown as { labelled: { caConfigMaps: { watch: { get(ns: string, name: string): { data?: object; metadata: { resourceVersion?: string } } | undefined } } } }).labelled.caConfigMaps.watch;
  cms({ type: 'ADDED', object: { metadata: { name: 'ca', namespace: 'a', resourceVersion: '2' }, data: { k: 'old' } } });
  cms({ type: 'ADDED', object: { metadata: { name: 'pad', namespace: 'a', resourceVersion: '2' }, data: { k: 'x'.repeat(200) } } });
  assert.equal(cached.get('a', 'ca')!.data, undefined);
  cms({ type: 'DELETED', object: { metadata: { name: 'pad', namespace: 'a', resourceVersion: '4' }, data: { k: 'x'.repeat(200) } } });
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(cached.get('a', 'ca')!.data, undefined, 'the list had version 3, the cache version 2: left for the watch');
  cms({ type: 'MODIFIED', object: { metadata: { name: 'ca', namespace: 'a', resourceVersion: '3' }, data: { k: 'new' } } });
  assert.deepEqual(cached.get('a', 'ca')!.data, { k: 'new' });
  listRv = '2';
  await state.stop();
});

async function waitUntil(ok: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !ok(); i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(ok(), 'in time');
}

// A ReferenceGrant is read as JSON (a CRD has no protobuf): a team's grant with 2.8 MB of
// annotations and labels took ~17 ms of the shared event loop an update, charged to no one.
test('what reading a watch event took is charged to the object\'s namespace: grants, Services, slices and pods', async () => {
  const { client, watches } = fakeClient();
  const charged: string[] = [];
  const state = new ClusterState(client, { namespaces: [], log: silentLogger, endpointAddresses: 'pods', onChange: () => {}, charge: (ns, ms) => charged.push(`${ns} ${ms}`) });
  state.start();
  await state.firstSync();
  const grantsPath = '/apis/gateway.networking.k8s.io/v1beta1/referencegrants';
  while (!watches.has(grantsPath) || !watches.has('/api/v1/pods') || ![...watches.keys()].some((k) => k.startsWith('/api/v1/configmaps?'))) await new Promise((r) => setImmediate(r));
  const send = (path: string, object: unknown, ms: number) => (watches.get(path) as unknown as (ev: unknown, ms: number) => void)({ type: 'ADDED', object }, ms);
  send(grantsPath, { metadata: { name: 'g', namespace: 'team-a', resourceVersion: '1' }, spec: { from: [], to: [] } }, 17);
  send('/api/v1/services', { metadata: { name: 'web', namespace: 'team-b', resourceVersion: '2' }, spec: { ports: [] } }, 2);
  send('/apis/discovery.k8s.io/v1/endpointslices', slice('web-1', 'web', ['p1'], '3'), 3);
  send('/api/v1/pods', pod('p1', '4'), 4);
  // updates of fields not kept ask for no reconcile, and are charged all the same (a review)
  const modified = (path: string, object: unknown, ms: number) => (watches.get(path) as unknown as (ev: unknown, ms: number) => void)({ type: 'MODIFIED', object }, ms);
  modified(grantsPath, { metadata: { name: 'g', namespace: 'team-a', resourceVersion: '5', annotations: { big: 'x' } }, spec: { from: [], to: [] } }, 18);
  modified('/api/v1/services', { metadata: { name: 'web', namespace: 'team-b', resourceVersion: '6', annotations: { big: 'x' } }, spec: { ports: [] } }, 5);
  // and labelled Secrets and ConfigMaps
  const labelled = [...watches.keys()].find((k) => k.startsWith('/api/v1/configmaps?'))!;
  send(labelled, { metadata: { name: 'ca', namespace: 'team-c', resourceVersion: '7', labels: { 'access-gateway.io/ca-bundle': 'true' } }, data: { 'ca.crt': 'x' } }, 6);
  assert.deepEqual(charged, ['team-a 17', 'team-b 2', 'a 3', 'a 4', 'team-a 18', 'team-b 5', 'team-c 6']);
  await state.stop();
});

test('a deleted Service or EndpointSlice with a controller is told (its name and its controller\'s uid) before the reconciles it asks for', async () => {
  const { client, watches } = fakeClient();
  const told: string[] = [];
  const state = new ClusterState(client, { namespaces: [], log: silentLogger, endpointAddresses: 'any', onChange: (r) => told.push(`change ${r.kind} ${r.name}`),
    onOwnedGone: (ns, name, uid) => told.push(`gone ${ns}/${name} ${uid}`) });
  state.start();
  await state.firstSync();
  while (!watches.has('/api/v1/services') || !watches.has('/apis/discovery.k8s.io/v1/endpointslices')) await new Promise((r) => setImmediate(r));
  const owned = (rv: string) => ({ metadata: { name: 'agw-x', namespace: 'team-a', resourceVersion: rv, ownerReferences: [{ kind: 'AccessGateway', name: 'x', uid: 'gw-uid', controller: true }] }, spec: { ports: [] } });
  const services = watches.get('/api/v1/services')!;
  services({ type: 'ADDED', object: owned('1') });
  services({ type: 'DELETED', object: owned('2') });
  services({ type: 'ADDED', object: { metadata: { name: 'plain', namespace: 'team-a', resourceVersion: '3' }, spec: { ports: [] } } });
  services({ type: 'DELETED', object: { metadata: { name: 'plain', namespace: 'team-a', resourceVersion: '4' }, spec: { ports: [] } } });
  const slices = watches.get('/apis/discovery.k8s.io/v1/endpointslices')!;
  const base = slice('agw-x', 'agw-x', [], '5');
  const ownedSlice = (rv: string) => ({ ...base, metadata: { ...base.metadata, namespace: 'team-a', resourceVersion: rv, ownerReferences: [{ kind: 'AccessGateway', name: 'x', uid: 'gw-uid', controller: true }] } });
  slices({ type: 'ADDED', object: ownedSlice('5') });
  slices({ type: 'DELETED', object: ownedSlice('6') });
  assert.deepEqual(told, ['change Service agw-x', 'gone team-a/agw-x gw-uid', 'change Service agw-x', 'change Service plain', 'change Service plain',
    'change Service agw-x', 'gone team-a/agw-x gw-uid', 'change Service agw-x']);
  await state.stop();
});
