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
import { silentLogger } from '../../src/observability/logger.js';

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
    spec: { authentication: { audiences: ['gw'] }, access: [{ groups: ['g'] }], listener: { tls: { secretName: 'tls', clientCA: { kind: 'ConfigMap', name: 'ca' } } },
      routes: [{ name: 'web', pathPrefix: '/', service: { name: 'web', port: 80 } }] },
  } as never);
  watches.get('/api/v1/secrets?access-gateway.io/ca-bundle=true')!({ type: 'ADDED', object: {
    metadata: { name: 'cas', namespace: 'a', resourceVersion: '4', ...big }, type: 'Opaque', data: { 'ca.crt': 'UEVN' } } });
  const snap = state.snapshotFor(gw);
  await state.stop();
  const cached = state as unknown as Record<'caSecrets' | 'caConfigMaps', { get(ns: string, name: string): object }>;
  assert.deepEqual(cached.caConfigMaps.get('a', 'ca'), { metadata: { name: 'ca', namespace: 'a', uid: undefined, resourceVersion: '3', ownerReferences: undefined }, data: { 'bundle.pem': 'PEM' } });
  assert.deepEqual(cached.caSecrets.get('a', 'cas'), { metadata: { name: 'cas', namespace: 'a', uid: undefined, resourceVersion: '4', ownerReferences: undefined }, data: { 'ca.crt': 'UEVN' } });
  const secret = snap.secrets!['a/tls'] as { type?: string; data?: object; metadata?: object };
  assert.equal(secret.type, 'kubernetes.io/tls');
  assert.deepEqual(secret.data, { 'tls.crt': 'Y3J0', 'tls.key': 'a2V5' });
  assert.deepEqual(Object.keys(secret.metadata!).sort(), ['name', 'namespace', 'ownerReferences', 'resourceVersion', 'uid']);
  assert.deepEqual(snap.caBundles!['ConfigMap/a/ca'], { 'bundle.pem': 'PEM' });
  assert.ok(JSON.stringify(snap).length < 1_000, 'nothing of the annotations, managed fields or other keys is kept');
});
