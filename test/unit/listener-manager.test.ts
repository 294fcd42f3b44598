// Plans applied as a diff on real sockets (port 0 ports picked here): an unchanged plan — a resync,
// a new generation with the same content — keeps the route table and its per-caller caches.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { applyDefaults } from '../../src/api/defaults.js';
import type { AccessGateway } from '../../src/api/types.js';
import { PoolRegistry } from '../../src/dataplane/endpoints.js';
import { ListenerManager } from '../../src/dataplane/listener-manager.js';
import type { DataplaneDeps } from '../../src/dataplane/route-table.js';
import { silentLogger } from '../../src/observability/logger.js';
import { testMetrics } from '../../src/observability/metrics.js';
import { translate } from '../../src/translate/translate.js';

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
