// What the gateway cache keeps of a gateway over --max-gateways-per-namespace (pure logic, an
// in-memory source that caches as the informer does): its metadata, not its spec; the spec is
// read again when the gateway takes a place.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AccessGateway } from '../../src/api/types.js';
import { GatewayController, type GatewayControllerOptions, type GatewayEvents } from '../../src/controller/gateway-controller.js';
import { SpecKeeper, specDropped } from '../../src/controller/gateway-specs.js';
import type { KubeClient } from '../../src/kube/client.js';
import type { GatewayKeeper } from '../../src/kube/gateways.js';
import { silentLogger } from '../../src/observability/logger.js';
import type { WorkQueue } from '../../src/controller/queue.js';
import type { GatewayPlan } from '../../src/translate/plan.js';

/** A gateway whose spec is `routes` routes long (each names Service `svc`), with a long description. */
const gw = (name: string, created: string, o: { routes?: number; svc?: string; uid?: string; rv?: string } = {}): AccessGateway => ({
  apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway',
  metadata: { name, namespace: 'a', uid: o.uid ?? `uid-${name}`, generation: 1, creationTimestamp: created, resourceVersion: o.rv ?? '1' },
  spec: {
    authentication: { audiences: ['gw'] },
    routes: Array.from({ length: o.routes ?? 1 }, (_, i) => ({ name: `r${i}`, pathPrefix: `/${'p'.repeat(200)}${i}`, service: { name: o.svc ?? 'web', port: 80 } })),
  },
});
const size = (g: AccessGateway) => JSON.stringify(g).length;

test('the cache keeps the spec of the oldest N of a namespace only, in whatever order they are read; one pushed out loses its spec where it is', () => {
  const k = new SpecKeeper(2);
  const g3 = k.keep(gw('g3', '2026-01-03T00:00:00Z'));
  const g2 = k.keep(gw('g2', '2026-01-02T00:00:00Z'));
  assert.ok(!specDropped(g3) && !specDropped(g2));
  // an older one read later (a list in name order): the youngest kept loses its spec, also
  // though the object may sit in a list not yet cached
  const g1 = k.keep(gw('g1', '2026-01-01T00:00:00Z', { routes: 3 }));
  assert.equal(g1.spec.routes.length, 3);
  assert.ok(specDropped(g3));
  assert.deepEqual(g3.spec, {});
  assert.equal(g3.metadata.uid, 'uid-g3', 'its metadata stays (ranking, status)');
  assert.ok(!specDropped(g2));
  // read again (an update) while over the limit: without its spec
  assert.ok(specDropped(k.keep(gw('g3', '2026-01-03T00:00:00Z', { rv: '2' }))));
  // an earlier object of a key read again over the limit loses its spec too (g2 pushed out by g0)
  k.keep(gw('g0', '2025-12-31T00:00:00Z'));
  assert.ok(specDropped(g2));
  assert.ok(!specDropped(g1));
  // another namespace is not counted
  assert.ok(!specDropped(k.keep({ ...gw('x', '2027-01-01T00:00:00Z'), metadata: { ...gw('x', '2027-01-01T00:00:00Z').metadata, namespace: 'b' } })));
  // a place comes free: read again, kept whole
  k.gone('a/g0');
  assert.ok(!specDropped(k.keep(gw('g2', '2026-01-02T00:00:00Z', { rv: '3' }))));
  // deleted and made again while the watch was away, now younger: the object read before loses its spec
  const one = new SpecKeeper(1);
  const first = one.keep(gw('g', '2026-01-01T00:00:00Z'));
  one.keep(gw('h', '2026-01-02T00:00:00Z'));
  assert.ok(specDropped(one.keep(gw('g', '2026-01-03T00:00:00Z', { uid: 'new' }))));
  assert.ok(specDropped(first));
  // a list that read a gateway, then failed; the gateway deleted before the next list: the next
  // list's order is made from what it reads (the gone one holds no place)
  const relist = new SpecKeeper(1);
  relist.keep(gw('x', '2026-01-01T00:00:00Z'));
  relist.listStarts(undefined);
  assert.equal((relist as unknown as { whole: Map<string, unknown> }).whole.has('a/x'), false, 'its object is not held');
  assert.ok(!specDropped(relist.keep(gw('y', '2026-01-02T00:00:00Z'))));
  // one namespace's list forgets that namespace's order only
  relist.keep({ ...gw('z', '2026-01-01T00:00:00Z'), metadata: { ...gw('z', '2026-01-01T00:00:00Z').metadata, namespace: 'b' } });
  relist.listStarts('b');
  assert.ok(specDropped(relist.keep(gw('w', '2026-01-03T00:00:00Z'))), 'y still holds namespace a\'s place');
  // no limit: every gateway whole
  const none = new SpecKeeper(0);
  for (let i = 0; i < 20; i++) assert.ok(!specDropped(none.keep(gw(`n${i}`, '2026-01-01T00:00:00Z'))));
});

/** A controller with limit 1 over an in-memory source that caches what `keep` gives it, as the
 * informer does, and reads gateways again from `live` (the apiserver). */
function setup(extra: Partial<GatewayControllerOptions> = {}) {
  const live = new Map<string, AccessGateway>();
  const cache = new Map<string, AccessGateway>();
  const reads: string[] = [];
  const plans: [string, GatewayPlan | null][] = [];
  let emit!: GatewayEvents;
  let keeper!: GatewayKeeper;
  let afterRead: () => void = () => {};
  let duringApply: (key: string) => void = () => {};
  const c = new GatewayController({
    client: {} as KubeClient, namespaces: [], portRange: [100, 109], maxGatewaysPerNamespace: 1, advertiseHost: '127.0.0.1', log: silentLogger,
    dataplane: { apply: async (key, plan) => { plans.push([key, plan]); duringApply(key); return plan ? { programmed: true, port: plan.port } : null; } }, writeStatus: async () => {},
    ...extra,
    source: (onEvent, k) => {
      emit = onEvent;
      keeper = k;
      return {
        start() {}, firstSync: async () => {}, stop: async () => {}, get: (ns, n) => cache.get(`${ns}/${n}`), keys: () => [...cache.keys()], values: () => cache.values(),
        read: async (ns, n) => {
          reads.push(`${ns}/${n}`);
          const g = live.get(`${ns}/${n}`);
          const got = g && structuredClone(g);
          afterRead(); // (events that arrive while the answer is on its way)
          return { gw: got, decodeMs: 0 };
        },
        replace: (obj, when) => {
          const key = `${obj.metadata.namespace}/${obj.metadata.name}`;
          const old = cache.get(key);
          if (!old || !when(old)) return false;
          cache.set(key, obj);
          return true;
        },
      };
    },
  });
  /** The apiserver has `g`; its watch event reaches the cache. */
  const put = (g: AccessGateway) => {
    const key = `a/${g.metadata.name}`;
    live.set(key, g);
    const old = cache.get(key);
    const kept = keeper.keep(structuredClone(g));
    cache.set(key, kept);
    emit(old ? 'update' : 'add', kept, old);
  };
  const remove = (name: string) => {
    const key = `a/${name}`;
    const old = cache.get(key)!;
    live.delete(key);
    cache.delete(key);
    emit('delete', keeper.keep(structuredClone(old)), old);
  };
  const internals = c as unknown as {
    controller: { queue: WorkQueue }; onRef(ref: { kind: string; namespace: string; name: string }): void;
    reconciler: { reconcile(key: string, log: typeof silentLogger): Promise<{ requeueAfterMs?: number }> };
  };
  const q = internals.controller.queue;
  const taken = async () => {
    const keys: string[] = [];
    while (q.depth) { const k = (await q.get())!; keys.push(k); q.done(k); }
    return keys;
  };
  return { live, cache, reads, plans, put, remove, internals, taken, setAfterRead: (f: () => void) => { afterRead = f; }, setDuringApply: (f: (key: string) => void) => { duringApply = f; } };
}

test('a team\'s gateways over the limit hold their metadata in the cache, not their specs; one that takes a place is read again and served whole', async () => {
  const s = setup();
  s.put(gw('old', '2026-01-01T00:00:00Z'));
  for (let i = 0; i < 50; i++) s.put(gw(`young${i}`, `2026-01-02T00:00:${String(i).padStart(2, '0')}Z`, { routes: 64, svc: 'web2' }));
  const big = size(s.live.get('a/young0')!);
  assert.ok(big > 15_000, `${big}`);
  const cached = [...s.cache.values()].reduce((n, g) => n + size(g), 0);
  assert.ok(cached < big, `50 gateways of ${big} bytes over the limit: ${cached} bytes cached`);
  assert.deepEqual(await s.taken(), ['a/old', ...Array.from({ length: 50 }, (_, i) => `a/young${i}`)]);
  for (const k of ['a/young0', 'a/young1']) await s.internals.reconciler.reconcile(k, silentLogger);
  assert.deepEqual(s.reads, [], 'over the limit: not read');
  // old goes: young0 takes its place, is read again (once) and served with its 64 routes
  s.remove('old');
  assert.deepEqual(await s.taken(), ['a/old']);
  await s.internals.reconciler.reconcile('a/old', silentLogger);
  assert.deepEqual(await s.taken(), ['a/young0']);
  s.plans.length = 0;
  await s.internals.reconciler.reconcile('a/young0', silentLogger);
  assert.deepEqual(s.reads, ['a/young0']);
  assert.ok(!specDropped(s.cache.get('a/young0')!));
  assert.equal(s.plans.at(-1)?.[1]?.routes.length, 64);
  // indexed by what it names: its Service's change reconciles it
  s.internals.onRef({ kind: 'Service', namespace: 'a', name: 'web2' });
  assert.deepEqual(await s.taken(), ['a/young0']);
  await s.internals.reconciler.reconcile('a/young0', silentLogger);
  assert.deepEqual(s.reads, ['a/young0'], 'read once: the cache holds it whole now');
  // pushed out again by an older gateway: the object read loses its spec
  s.put(gw('elder', '2025-01-01T00:00:00Z'));
  assert.ok(specDropped(s.cache.get('a/young0')!));
});

test('a gateway read again is not cached if an event changed it meanwhile, or it was made again; it is reconciled again then', async () => {
  const s = setup();
  s.put(gw('old', '2026-01-01T00:00:00Z'));
  s.put(gw('young', '2026-01-02T00:00:00Z', { routes: 2 }));
  s.remove('old');
  await s.taken();
  // made again under its name while it was read: the read is of another object; not cached
  s.live.set('a/young', gw('young', '2026-01-02T00:00:00Z', { uid: 'other', routes: 5 }));
  await assert.rejects(s.internals.reconciler.reconcile('a/young', silentLogger), /made again meanwhile/, 'retried, backing off');
  assert.ok(specDropped(s.cache.get('a/young')!));
  // an update arrives while it is read (served now: cached whole by its event): the read's older
  // object does not replace it
  s.live.set('a/young', gw('young', '2026-01-02T00:00:00Z', { routes: 2 }));
  s.setAfterRead(() => s.put(gw('young', '2026-01-02T00:00:00Z', { routes: 3, rv: '2' })));
  s.plans.length = 0;
  await s.internals.reconciler.reconcile('a/young', silentLogger);
  assert.equal(s.cache.get('a/young')!.metadata.resourceVersion, '2');
  assert.equal(s.plans.at(-1)?.[1]?.routes.length, 3);
  // the cached object is the one that loses its spec when an older gateway pushes it out
  s.put(gw('elder', '2025-01-01T00:00:00Z'));
  assert.ok(specDropped(s.cache.get('a/young')!));
});

test('at start-up, a gateway over the limit is given back no port (it would give it up at once, held for its namespace)', async () => {
  const client = {
    request: async () => ({ items: [], metadata: { resourceVersion: '1' } }),
    watch: (_p: string, signal: AbortSignal) => new Promise<void>((r) => signal.addEventListener('abort', () => r())),
  } as unknown as KubeClient;
  const cached = new Map<string, AccessGateway>();
  const withPort = (g: AccessGateway, port: number, ns = 'a') => ({ ...g, metadata: { ...g.metadata, namespace: ns }, status: { listener: { port } } }) as AccessGateway;
  // a's young one is over the limit; its status still names the port b's gateway records (a stale status)
  for (const g of [withPort(gw('old', '2026-01-01T00:00:00Z'), 100), withPort(gw('young', '2026-01-02T00:00:00Z'), 105), withPort(gw('bg', '2026-01-03T00:00:00Z'), 105, 'b')]) {
    cached.set(`${g.metadata.namespace}/${g.metadata.name}`, g);
  }
  let emit!: GatewayEvents;
  const c = new GatewayController({
    client, namespaces: [], portRange: [100, 109], maxGatewaysPerNamespace: 1, advertiseHost: '127.0.0.1', log: silentLogger, workers: 1,
    dataplane: { apply: async (_k, plan) => (plan ? { programmed: true, port: plan.port } : null) }, writeStatus: async () => {},
    source: (onEvent) => {
      emit = onEvent;
      return {
        start() { for (const g of cached.values()) emit('add', g, undefined); }, firstSync: async () => {}, stop: async () => {},
        get: (ns, n) => cached.get(`${ns}/${n}`), keys: () => [...cached.keys()], values: () => cached.values(),
      };
    },
  });
  const ports = (c as unknown as { ports: { portOf(k: string): number | undefined } }).ports;
  await c.start();
  try {
    assert.equal(ports.portOf('b/bg'), 105);
    assert.equal(ports.portOf('a/young'), undefined);
  } finally {
    await c.stop();
  }
});

test('a gateway that loses its place while it is reconciled is exposed as its spec asked (the cached object lost its spec meanwhile)', async () => {
  const writes: { kind: string; spec?: { type?: string } }[] = [];
  const s = setup({
    exposure: { addresses: () => ['10.0.0.1'], write: async (obj) => { writes.push(obj as never); } },
    exposurePolicy: { types: ['ClusterIP', 'LoadBalancer'], defaultType: 'ClusterIP', annotations: [] },
  });
  const lb = gw('lb', '2026-01-02T00:00:00Z');
  lb.spec.listener = { expose: { type: 'LoadBalancer' } };
  s.put(lb);
  await s.taken();
  // an older gateway arrives while lb's listener is made: lb is pushed out (its cached spec dropped)
  s.setDuringApply((key) => { if (key === 'a/lb') s.put(gw('elder', '2025-01-01T00:00:00Z')); });
  await s.internals.reconciler.reconcile('a/lb', silentLogger);
  assert.ok(specDropped(s.cache.get('a/lb')!));
  assert.deepEqual(writes.filter((w) => w.kind === 'Service').map((w) => w.spec?.type), ['LoadBalancer']);
});
