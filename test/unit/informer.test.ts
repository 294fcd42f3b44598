// What the informer caches keep of an object: everything a reader uses, without managedFields or
// kubectl's last-applied copy (thousands of gateways would otherwise carry both); and the
// secondary index, which keeps nothing for names that are gone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClusterState } from '../../src/controller/cluster-state.js';
import { Informer, stripForCache, type KubeObject } from '../../src/kube/informer.js';
import { ApiError, TooLarge, type KubeClient } from '../../src/kube/client.js';
import { testMetrics } from '../../src/observability/metrics.js';
import { Watched } from '../../src/kube/watched.js';
import { KubeRevocation } from '../../src/kube/jwks-source.js';
import { silentLogger } from '../../src/observability/logger.js';

test('managedFields and the last-applied annotation are dropped; other annotations and fields stay', () => {
  const o = stripForCache({
    apiVersion: 'v1', kind: 'ConfigMap',
    metadata: {
      name: 'a', namespace: 'n', resourceVersion: '7', labels: { x: 'y' },
      annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{"big":true}', 'access-gateway.io/access-log': 'none' },
      managedFields: [{ manager: 'kubectl', fieldsV1: { 'f:data': {} } }],
    },
    data: { k: 'v' },
  } as any);
  assert.deepEqual(o, {
    apiVersion: 'v1', kind: 'ConfigMap',
    metadata: { name: 'a', namespace: 'n', resourceVersion: '7', labels: { x: 'y' }, annotations: { 'access-gateway.io/access-log': 'none' } },
    data: { k: 'v' },
  });
});

test('an object whose only annotation was last-applied has no annotations left; odd objects pass through', () => {
  const o = stripForCache({ metadata: { name: 'a', annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{}' } } });
  assert.deepEqual(o, { metadata: { name: 'a' } });
  assert.deepEqual(stripForCache({ metadata: { name: 'b' } }), { metadata: { name: 'b' } });
  assert.equal(stripForCache(null as any), null);
});

test('the secondary index keeps no empty entry for a name that is gone (Services come and go by name)', () => {
  const w = new Watched<KubeObject>({} as KubeClient, {
    name: 'slices', path: () => '/x', namespaces: [], log: silentLogger, onEvent: () => {},
    indexBy: (o) => o.metadata.labels?.svc,
  });
  const reindex = (type: 'add' | 'update' | 'delete', obj: KubeObject, old?: KubeObject) => (w as unknown as { reindex: Function }).reindex(type, obj, old);
  const slice = (name: string, svc: string): KubeObject => ({ metadata: { name, namespace: 'a', labels: { svc } } });
  const size = () => (w as unknown as { index: Map<string, unknown> }).index.size;
  for (let i = 0; i < 100; i++) {
    reindex('add', slice(`s${i}`, `svc-${i}`));
    reindex('delete', slice(`s${i}`, `svc-${i}`), slice(`s${i}`, `svc-${i}`));
  }
  assert.equal(size(), 0);
  reindex('add', slice('s', 'one'));
  reindex('update', slice('s', 'two'), slice('s', 'one'));
  assert.deepEqual([w.byIndex('one').length, w.byIndex('two').length, size()], [0, 1, 1]);
});

test('the cache keeps what trim leaves, for listed and for watched objects', async () => {
  const big = 'x'.repeat(100_000);
  const obj = (name: string, rv: string) => ({ metadata: { name, namespace: 'a', resourceVersion: rv, annotations: { big } }, spec: { keep: 1, drop: big } });
  let watched!: (ev: { type: string; object: unknown }) => void;
  const client = {
    request: async () => ({ items: [obj('listed', '1')], metadata: { resourceVersion: '1' } }),
    watch: (_p: string, signal: AbortSignal, _t: number, _a: string | undefined, on: typeof watched) => {
      watched = on;
      return new Promise<void>((r) => signal.addEventListener('abort', () => r()));
    },
  } as unknown as KubeClient;
  type O = KubeObject & { spec?: { keep?: number; drop?: string } };
  const events: string[] = [];
  const i = new Informer<O>(client, {
    name: 't', path: '/x', log: silentLogger, onEvent: (t, o) => events.push(`${t} ${o.metadata.name} ${JSON.stringify(o).length}`),
    trim: (o) => ({ metadata: { name: o.metadata.name, namespace: o.metadata.namespace, resourceVersion: o.metadata.resourceVersion }, spec: { keep: o.spec?.keep } }),
  });
  i.start();
  await i.firstSync;
  while (!watched) await new Promise((r) => setImmediate(r));
  watched({ type: 'ADDED', object: obj('watched', '2') });
  for (const o of i.cache.values()) {
    assert.equal(o.metadata.annotations, undefined);
    assert.deepEqual(o.spec, { keep: 1 });
  }
  assert.equal(i.cache.size, 2);
  assert.ok(events.every((e) => Number(e.split(' ')[2]) < 200), events.join('; '));
  await i.stop();
});

test('Services and EndpointSlices are cached without a team\'s annotations, labels, owners and topology; what is read stays', () => {
  const big = 'x'.repeat(200_000);
  const owner = [{ uid: 'u1', controller: true, kind: 'AccessGateway', name: 'g', apiVersion: 'access-gateway.io/v1alpha1' }];
  // a team may give its objects any number of other owners: only the controller's uid is read
  const others = Array.from({ length: 100 }, (_, i) => ({ uid: `o${i}`, kind: big, name: 'x', apiVersion: 'v1' }));
  const svc = ClusterState.trimService({
    metadata: { name: 'agw-g', namespace: 'a', uid: 's1', resourceVersion: '5', labels: { big }, annotations: { big }, ownerReferences: [...others, ...owner] },
    spec: { ports: [{ name: 'http', port: 80, protocol: 'TCP' }], selector: { big } } as never,
    status: { loadBalancer: { ingress: [{ ip: '198.18.0.1' }] } },
  } as never);
  assert.deepEqual(svc, {
    metadata: { name: 'agw-g', namespace: 'a', uid: 's1', resourceVersion: '5', ownerReferences: [{ uid: 'u1', controller: true }] },
    spec: { ports: [{ name: 'http', port: 80, protocol: 'TCP' }], selected: true }, status: { loadBalancer: { ingress: [{ ip: '198.18.0.1' }] } },
  });
  const slice = ClusterState.trimSlice({
    metadata: { name: 's', namespace: 'a', resourceVersion: '6', labels: { 'kubernetes.io/service-name': 'web', big }, annotations: { big } },
    addressType: 'IPv4', ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: [{ addresses: ['198.18.0.9', '198.18.0.10'], conditions: { ready: true }, nodeName: big, hostname: 'h', zone: 'z' }],
  } as never);
  assert.deepEqual(JSON.parse(JSON.stringify(slice)), {
    metadata: { name: 's', namespace: 'a', resourceVersion: '6', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4', ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: [{ addresses: ['198.18.0.9'], conditions: { ready: true } }],
  });
});

test('the revocation caches keep what a check reads: uid and deletionTimestamp, not a team\'s annotations', async () => {
  const big = 'x'.repeat(200_000);
  const items: Record<string, KubeObject[]> = {
    serviceaccounts: [{ metadata: { name: 'app', namespace: 'a', uid: 'sa1', resourceVersion: '1', annotations: { big }, labels: { big } } }],
    pods: [{ metadata: { name: 'p', namespace: 'a', uid: 'p1', resourceVersion: '2', annotations: { big }, deletionTimestamp: '2026-01-01T00:00:00Z', ownerReferences: [{ big }] } }],
    secrets: [], nodes: [],
  };
  const client = {
    request: async (_m: string, path: string) => ({ items: items[path.split('?')[0]!.split('/').at(-1)!], metadata: { resourceVersion: '9' } }),
    watch: (p: string, signal: AbortSignal, _t: number, _a: string | undefined, on: (ev: { type: string; object: unknown }) => void) => {
      watchers[p.split('?')[0]!.split('/').at(-1)!] = on;
      return new Promise<void>((r) => signal.addEventListener('abort', () => r()));
    },
  } as unknown as KubeClient;
  const watchers: Record<string, (ev: { type: string; object: unknown }) => void> = {};
  const rev = new KubeRevocation(client, silentLogger, undefined, () => Date.parse('2026-01-01T00:00:30Z'));
  rev.start();
  await rev.whenSynced();
  const cached = (rev as unknown as { watched: Record<string, Watched<KubeObject>> }).watched;
  assert.deepEqual(cached.serviceAccount!.get('a', 'app'), { metadata: { name: 'app', namespace: 'a', uid: 'sa1', resourceVersion: '1' } });
  assert.deepEqual(cached.pod!.get('a', 'p'), { metadata: { name: 'p', namespace: 'a', uid: 'p1', resourceVersion: '2', deletionTimestamp: '2026-01-01T00:00:00Z' } });
  // the checks still read what they need
  const sa = { name: 'app', uid: 'sa1' };
  assert.equal(rev.check({ namespace: 'a', serviceaccount: sa }), null);
  assert.deepEqual(rev.check({ namespace: 'a', serviceaccount: { name: 'app', uid: 'other' } }), { revoked: 'service account a/app has been recreated (uid sa1, token bound to other)' });
  assert.equal(rev.check({ namespace: 'a', serviceaccount: sa, pod: { name: 'p', uid: 'p1' } }), null, 'deleted 30 s ago: within the grace');
  // a token issued 5 s ago: its pod not in the cache may be a new one (unknown), unless the
  // watch delivered that pod's deletion (revoked)
  const iat = Date.parse('2026-01-01T00:00:25Z') / 1000;
  assert.deepEqual(rev.check({ namespace: 'a', serviceaccount: sa, pod: { name: 'q', uid: 'q1' }, iat }), { unknown: 'pod a/q (uid q1) is not in the cache yet' });
  while (!watchers.pods) await new Promise((r) => setImmediate(r));
  watchers.pods({ type: 'DELETED', object: { metadata: { name: 'p', namespace: 'a', uid: 'p1', resourceVersion: '10' } } });
  assert.deepEqual(rev.check({ namespace: 'a', serviceaccount: sa, pod: { name: 'p', uid: 'p1' }, iat }), { revoked: 'pod a/p no longer exists' });
  await rev.stop();
});

test('lists come in pages a replica can read: 100 objects, 10 of labelled Secrets and ConfigMaps, continued to the end', async () => {
  const asked: string[] = [];
  const client = {
    request: async (_m: string, path: string) => {
      asked.push(path);
      const u = new URL(path, 'https://x');
      // two pages for Services, one for the rest
      const more = u.pathname.endsWith('/services') && !u.searchParams.get('continue');
      return { items: [], metadata: { resourceVersion: '1', ...(more ? { continue: 'c1' } : {}) } };
    },
    watch: (_p: string, signal: AbortSignal) => new Promise<void>((r) => signal.addEventListener('abort', () => r())),
  } as unknown as KubeClient;
  const state = new ClusterState(client, { namespaces: [], log: silentLogger, onChange: () => {}, endpointAddresses: 'pods' });
  state.start();
  await state.firstSync();
  await state.stop();
  const limits = asked.map((p) => { const u = new URL(p, 'https://x'); return `${u.pathname} ${u.searchParams.get('labelSelector') ?? ''} limit=${u.searchParams.get('limit')}${u.searchParams.get('continue') ? ' continue' : ''}`; }).sort();
  assert.deepEqual(limits, [
    '/api/v1/configmaps access-gateway.io/ca-bundle=true limit=10',
    '/api/v1/pods  limit=100',
    '/api/v1/secrets access-gateway.io/ca-bundle=true limit=10',
    '/api/v1/secrets access-gateway.io/listener-tls=true limit=10',
    '/api/v1/services  limit=100',
    '/api/v1/services  limit=100 continue',
    '/apis/discovery.k8s.io/v1/endpointslices  limit=100',
    '/apis/gateway.networking.k8s.io/v1beta1/referencegrants  limit=100',
  ]);
});

test('a list page past maxPageBytes is asked for again with half as many objects, down to one; pages grow again once small', { timeout: 10_000 }, async () => {
  const asked: string[] = [];
  const objects = Array.from({ length: 7 }, (_, i) => ({ metadata: { name: `p${i}`, namespace: 'a', resourceVersion: '1' } }));
  const client = {
    request: async (_m: string, path: string, o: { maxBytes?: number; what?: string; onBytes?: (n: number) => void }) => {
      const u = new URL(path, 'https://x');
      const limit = Number(u.searchParams.get('limit'));
      const from = Number(u.searchParams.get('continue') ?? 0);
      asked.push(`${from}:${limit}`);
      // p2 alone fills a page; the others are small
      const page = objects.slice(from, from + limit);
      const bytes = page.reduce((n, p) => n + (p.metadata.name === 'p2' ? 16 : 1), 0);
      if (bytes > o.maxBytes!) throw new TooLarge(o.maxBytes!, o.what!);
      o.onBytes?.(bytes);
      const next = from + page.length;
      return { items: page, metadata: { resourceVersion: '9', ...(next < objects.length ? { continue: String(next) } : {}) } };
    },
  } as unknown as KubeClient;
  const inf = new Informer<KubeObject>(client, { name: 'pods', path: '/api/v1/pods', log: silentLogger, onEvent: () => {}, pageSize: 8, maxPageBytes: 16 });
  assert.equal(await (inf as unknown as { list(): Promise<string> }).list(), '9');
  assert.deepEqual([...inf.cache.keys()].sort(), objects.map((o) => `a/${o.metadata.name}`));
  // halved until a page fits; a page under a quarter of the bound doubles the next, up to less
  // than the smallest size that was too large (8, then 4, then 3 here)
  assert.deepEqual(asked, ['0:8', '0:4', '0:2', '2:3', '2:1', '3:1', '4:2', '6:2']);
  // one object past it: no page can be read; the list fails (and is tried again), nothing is lost
  const none = new Informer<KubeObject>(client, { name: 'pods', path: '/api/v1/pods', log: silentLogger, onEvent: () => {}, pageSize: 8, maxPageBytes: 15 });
  await assert.rejects((none as unknown as { list(): Promise<string> }).list(), TooLarge);
});

test('pages of small objects grow past the first page size up to maxPageSize (a team\'s 50,000 empty labelled ConfigMaps were 5,000 lists of 10)', async () => {
  const asked: string[] = [];
  const objects = Array.from({ length: 50 }, (_, i) => ({ metadata: { name: `c${i}`, namespace: 'a', resourceVersion: '1' } }));
  const client = {
    request: async (_m: string, path: string, o: { onBytes?: (n: number) => void }) => {
      const u = new URL(path, 'https://x');
      const limit = Number(u.searchParams.get('limit'));
      const from = Number(u.searchParams.get('continue') ?? 0);
      asked.push(`${from}:${limit}`);
      const page = objects.slice(from, from + limit);
      o.onBytes?.(page.length);
      const next = from + page.length;
      return { items: page, metadata: { resourceVersion: '9', ...(next < objects.length ? { continue: String(next) } : {}) } };
    },
  } as unknown as KubeClient;
  const inf = new Informer<KubeObject>(client, { name: 'configmaps', path: '/api/v1/configmaps', log: silentLogger, onEvent: () => {}, pageSize: 2, maxPageSize: 16 });
  await (inf as unknown as { list(): Promise<string> }).list();
  assert.equal(inf.cache.size, 50);
  assert.deepEqual(asked, ['0:2', '2:4', '6:8', '14:16', '30:16', '46:16']);
});

test('an optional resource that stops being served after a sync drops its last-sync series (nothing is stale)', async () => {
  let lists = 0;
  let watches = 0;
  const client = {
    request: async () => {
      if (++lists > 1) throw new ApiError(404, { message: 'the server could not find the requested resource' }, 'list');
      return { items: [], metadata: { resourceVersion: '1' } };
    },
    watch: async () => {
      if (++watches === 1) return; // ended by the apiserver at its timeout
      throw new ApiError(410, { message: 'too old' }, 'watch');
    },
  } as unknown as KubeClient;
  const metrics = testMetrics();
  let now = 1_000_000;
  const clock = { now: () => now, setTimeout, clearTimeout } as unknown as NonNullable<ConstructorParameters<typeof Informer>[1]['clock']>;
  const series = async () => /access_gateway_informer_last_sync_timestamp_seconds\{informer="grants"\} (\S+)/.exec(await metrics.registry.metrics())?.[1];
  const inf = new Informer<KubeObject>(client, { name: 'grants', path: '/apis/x/v1/grants', optional: true, log: silentLogger, onEvent: () => {}, metrics, clock });
  const seen: (string | undefined)[] = [];
  const first = inf.firstSync.then(async () => { seen.push(await series()); now += 5_000; });
  inf.start();
  await first;
  for (let i = 0; i < 200 && lists < 2; i++) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(lists, 2);
  assert.equal(seen[0], '1000', 'listed');
  assert.equal(await series(), undefined, 'gone once the resource is not served');
  await inf.stop();
});

test('a watch the apiserver ends at its timeout counts as a sync (a quiet cluster stays recent); one that fails does not', async () => {
  let now = 1_000_000;
  let watches = 0;
  let release!: () => void;
  const blocked = new Promise<void>((r) => { release = r; });
  const client = {
    request: async () => ({ items: [], metadata: { resourceVersion: '1' } }),
    watch: async (_p: string, _s: AbortSignal, _t: number, _a: string | undefined, onEvent: (ev: { type: string; object: unknown }) => void) => {
      watches++;
      now += 60_000;
      if (watches === 1) return; // ended cleanly, nothing happened
      if (watches === 2) onEvent({ type: 'ERROR', object: { code: 500, message: 'conversion webhook failed' } }); // failed (it throws)
      if (watches === 3) throw new Error('connection reset'); // failed
      await blocked;
    },
  } as unknown as KubeClient;
  const metrics = testMetrics();
  const clock = { now: () => now, setTimeout: (f: () => void) => setTimeout(f, 1), clearTimeout } as unknown as NonNullable<ConstructorParameters<typeof Informer>[1]['clock']>;
  const series = async () => /access_gateway_informer_last_sync_timestamp_seconds\{informer="quiet"\} (\S+)/.exec(await metrics.registry.metrics())?.[1];
  const inf = new Informer<KubeObject>(client, { name: 'quiet', path: '/api/v1/services', log: silentLogger, onEvent: () => {}, metrics, clock });
  inf.start();
  for (let i = 0; i < 400 && watches < 4; i++) await new Promise((r) => setTimeout(r, 5));
  assert.equal(watches, 4);
  assert.equal(await series(), '1060', 'the list at 1000, the clean end at 1060; not the ERROR event at 1120 nor the failure at 1180');
  release();
  await inf.stop();
});

test('what reading a watch event took reaches the handler through Watched and its informer', async () => {
  let release!: () => void;
  const blocked = new Promise<void>((r) => { release = r; });
  const client = {
    request: async () => ({ items: [], metadata: { resourceVersion: '1' } }),
    watch: async (_p: string, _s: AbortSignal, _t: number, _a: string | undefined, onEvent: (ev: { type: string; object: unknown }, ms: number) => void) => {
      onEvent({ type: 'ADDED', object: { metadata: { name: 'g', namespace: 'a', resourceVersion: '2' } } }, 7.5);
      await blocked;
    },
  } as unknown as KubeClient;
  const seen: [string, number | undefined][] = [];
  const w = new Watched<KubeObject>(client, { name: 'gws', namespaces: [], path: () => '/x', log: silentLogger, onEvent: (type, _o, _old, ms) => seen.push([type, ms]) });
  w.start();
  for (let i = 0; i < 200 && !seen.length; i++) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(seen, [['add', 7.5]]);
  release();
  await w.stop();
});
