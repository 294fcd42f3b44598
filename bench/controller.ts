// The controller's work per event with one team's thousands of gateways beside another team's one:
// the real GatewayController (queue, namespace limit, reference index, reconciler), in process,
// with the cluster caches empty and the data plane and status writes stubbed. Anchor: the same
// measures without the flood, in the same run.
//   scripts/bench controller [--flood 10000]
import { parseArgs } from 'node:util';
import type { AccessGateway } from '../src/api/types.js';
import { GatewayController, type GatewayEvents } from '../src/controller/gateway-controller.js';
import type { KubeClient } from '../src/kube/client.js';
import { silentLogger } from '../src/observability/logger.js';
import type { WorkQueue } from '../src/controller/queue.js';

const { values: opt } = parseArgs({ options: { flood: { type: 'string', default: '10000' } } });

const gw = (ns: string, name: string, i: number): AccessGateway => ({
  apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway',
  metadata: { name, namespace: ns, generation: 1, uid: `${ns}-${name}`, creationTimestamp: new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString(), resourceVersion: '1' },
  spec: { authentication: { audiences: ['gw'] }, routes: [{ name: 'r', pathPrefix: '/', service: { name: 'web', port: 80 } }] },
});

interface Internals { controller: { queue: WorkQueue; start(): void; stop(): Promise<void> }; onRef(ref: { kind: string; namespace: string; name: string }): void }

/** Team A's `n` gateways (limit 16) and team B's one: a resync, B's place in it, a Service event. */
async function measure(n: number) {
  const store = new Map<string, AccessGateway>();
  let emit!: GatewayEvents;
  let reconciled = 0;
  let bAt = -1;
  let bMs = 0;
  let started = 0;
  const c = new GatewayController({
    client: {} as KubeClient, namespaces: [], portRange: [20_000, 40_000], maxGatewaysPerNamespace: 16, advertiseHost: '127.0.0.1', log: silentLogger,
    dataplane: { apply: async (key, plan) => { if (key === 'team-b/b' && bAt < 0) { bAt = reconciled; bMs = performance.now() - started; } reconciled++; return plan ? { programmed: true, port: plan.port } : null; } },
    writeStatus: async (g, s) => { g.status = s; },
    source: (onEvent) => {
      emit = onEvent;
      return { start() {}, firstSync: async () => {}, stop: async () => {}, get: (ns, name) => store.get(`${ns}/${name}`), keys: () => [...store.keys()], values: () => store.values() };
    },
  });
  const inner = c as unknown as Internals;
  const q = inner.controller.queue;
  const drained = async () => { while (q.depth) await new Promise((r) => setImmediate(r)); await new Promise((r) => setTimeout(r, 5)); };
  inner.controller.start();
  const add = (g: AccessGateway) => { store.set(`${g.metadata.namespace}/${g.metadata.name}`, g); emit('add', g, undefined); };
  for (let i = 0; i < n; i++) add(gw('team-a', `a${i}`, i));
  add(gw('team-b', 'b', n));
  await drained(); // first pass: statuses written
  reconciled = 0;
  bAt = -1;
  let t = (started = performance.now());
  c.resync();
  await drained();
  const resyncMs = performance.now() - t;
  const bPlace = bAt;
  // a Service event in team-a (its 16 served gateways name it) and one in team-b
  t = performance.now();
  for (let i = 0; i < 1000; i++) inner.onRef({ kind: 'Service', namespace: i % 2 ? 'team-b' : 'team-a', name: 'web' });
  const eventUs = (performance.now() - t); // per event: ms for 1,000 = µs each
  await drained();
  await inner.controller.stop();
  return { resyncMs, bMs, bPlace, eventUs };
}

const flood = Number(opt.flood);
const alone = await measure(16);
const crowd = await measure(flood);
const row = (name: string, a: number, b: number, unit: string) =>
  console.log(`| ${name} | ${a.toFixed(1)} ${unit} | ${b.toFixed(1)} ${unit} | ${(b / a).toFixed(2)}× |`);
console.log(`| measure | team-a 16 gateways | team-a ${flood} gateways | ratio |`);
console.log('| --- | --- | --- | --- |');
row('a resync of every gateway', alone.resyncMs, crowd.resyncMs, 'ms');
row('team-b\'s gateway reconciled, from the resync\'s start', alone.bMs, crowd.bMs, 'ms');
row('team-b\'s place in the resync', alone.bPlace + 1, crowd.bPlace + 1, '');
row('a Service event (index lookup and enqueue)', alone.eventUs, crowd.eventUs, 'µs');
