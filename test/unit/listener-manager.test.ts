// Plans applied as a diff on real sockets (port 0 ports picked here): an unchanged plan — a resync,
// a new generation with the same content — keeps the route table and its per-caller caches.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, createServer, type Socket } from 'node:net';
import { applyDefaults } from '../../src/api/defaults.js';
import type { AccessGateway } from '../../src/api/types.js';
import { PoolRegistry } from '../../src/dataplane/endpoints.js';
import { ListenerManager } from '../../src/dataplane/listener-manager.js';
import { defaultLimits } from '../../src/dataplane/listener.js';
import type { DataplaneDeps } from '../../src/dataplane/route-table.js';
import { silentLogger } from '../../src/observability/logger.js';
import { testMetrics } from '../../src/observability/metrics.js';
import { translate } from '../../src/translate/translate.js';
import type { ServiceTarget } from '../../src/translate/plan.js';

const freePort = () => new Promise<number>((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as { port: number }).port; s.close(() => resolve(p)); });
});

const plan = (port: number, generation: number, accept = '^/api/.*') => translate(applyDefaults({
  apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: 'gw', namespace: 'team-a', generation },
  spec: { authentication: { audiences: ['gw'] }, routes: [{ name: 'r', pathPrefix: '/', apiserver: { acceptPaths: [accept] } }] },
} as unknown as AccessGateway), { port: { port } }).plan!;

test('an unchanged plan (a new generation, a resync) keeps the route table; a changed one swaps it', async (t) => {
  const deps = { apiserver: {}, reviewer: { review: async () => ({ authenticated: false, error: '' }) }, log: silentLogger,
    pools: new PoolRegistry(), metrics: testMetrics() } as unknown as DataplaneDeps;
  const m = new ListenerManager(deps, '127.0.0.1', 0);
  t.after(() => m.closeAll(0));
  const port = await freePort();
  const first = plan(port, 1);
  assert.deepEqual(await m.apply('team-a/gw', first), { programmed: true, port });
  const listener = m.get('team-a/gw')!;
  assert.equal(listener.plan, first);
  assert.deepEqual(await m.apply('team-a/gw', plan(port, 2)), { programmed: true, port });
  assert.equal(m.get('team-a/gw'), listener);
  assert.equal(listener.plan, first, 'the table (and its caches) was rebuilt for an unchanged plan');
  const changed = plan(port, 3, '^/apis/.*');
  await m.apply('team-a/gw', changed);
  assert.equal(m.get('team-a/gw'), listener, 'same port: the listener stays, only its table is swapped');
  assert.equal(listener.plan, changed);
});

const planOf = (namespace: string, name: string, port: number) => translate(applyDefaults({
  apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name, namespace, generation: 1 },
  spec: { authentication: { audiences: ['gw'] }, routes: [{ name: 'r', pathPrefix: '/', apiserver: {} }] },
} as unknown as AccessGateway), { port: { port } }).plan!;

/** Connects and resolves whether the server kept the connection open for 300 ms. */
const kept = (port: number, held: Socket[]) => new Promise<boolean>((resolve) => {
  const s = connect(port, '127.0.0.1');
  held.push(s);
  s.on('error', () => {});
  s.on('close', () => resolve(false));
  s.on('connect', () => setTimeout(() => resolve(!s.destroyed && s.readyState === 'open'), 300));
});

for (const cap of [3, 0]) {
  test(`connections per namespace: ${cap ? `at most ${cap} over all of its listeners, other namespaces unaffected` : '0 is no limit'}`, async (t) => {
    const deps = { apiserver: {}, reviewer: { review: async () => ({ authenticated: false, error: '' }) }, log: silentLogger,
      pools: new PoolRegistry(), metrics: testMetrics() } as unknown as DataplaneDeps;
    const m = new ListenerManager(deps, '127.0.0.1', 0, { ...defaultLimits, maxConnections: 100, maxConnectionsPerNamespace: cap });
    const held: Socket[] = [];
    t.after(async () => {
      for (const s of held) s.destroy();
      await m.closeAll(0);
    });
    const [a1, a2, b] = [await freePort(), await freePort(), await freePort()];
    await m.apply('team-a/gw', planOf('team-a', 'gw', a1));
    await m.apply('team-a/gw2', planOf('team-a', 'gw2', a2));
    await m.apply('team-b/gw', planOf('team-b', 'gw', b));
    assert.deepEqual([await kept(a1, held), await kept(a1, held), await kept(a2, held)], [true, true, true]);
    assert.equal(await kept(a2, held), cap === 0, 'a 4th connection of team-a');
    assert.equal(await kept(a1, held), cap === 0, 'a 5th connection of team-a');
    assert.equal(await kept(b, held), true, 'team-b');
    const e = await deps.metrics.exposition();
    const all = e.head + Buffer.concat([...e.chunks]).toString();
    assert.match(all, new RegExp(`access_gateway_open_connections\\{namespace="team-a",gateway="gw"\\} ${cap ? 2 : 3}\\n`));
    if (cap) {
      assert.match(all, /access_gateway_connections_refused_total\{namespace="team-a",gateway="gw2",limit="namespace"\} 1\n/);
      // a closed connection gives its place back
      held.shift()!.destroy();
      assert.equal(await waitUntil(() => kept(a2, held)), true);
    }
  });
}

/** Retries `fn` for up to 3 s until it resolves true. */
async function waitUntil(fn: () => Promise<boolean>): Promise<boolean> {
  for (const end = Date.now() + 3_000; Date.now() < end;) if (await fn()) return true;
  return false;
}

test('a listener that cannot listen gives back what its route table took (endpoint pools)', async (t) => {
  const deps = { apiserver: {}, reviewer: { review: async () => ({ authenticated: false, error: '' }) }, log: silentLogger,
    pools: new PoolRegistry(), metrics: testMetrics() } as unknown as DataplaneDeps;
  const m = new ListenerManager(deps, '127.0.0.1', 0);
  const taken = createServer();
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()));
  t.after(async () => {
    await m.closeAll(0);
    taken.close();
  });
  const port = (taken.address() as { port: number }).port;
  const p = planOf('team-a', 'gw', port);
  const service: ServiceTarget = { kind: 'service', namespace: 'team-a', name: 'echo', port: 80, scheme: 'http', endpoints: [{ ip: '127.0.0.1', port: 9 }],
    ca: null, serverName: 'echo.team-a.svc', problem: null };
  const r = await m.apply('team-a/gw', { ...p, routes: [{ ...p.routes[0]!, target: service }] });
  assert.equal(r?.programmed, false);
  assert.equal(deps.pools.size, 0);
});
