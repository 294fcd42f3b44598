// What the operator's cache keeps of an AccessGateway (pure logic).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AccessGateway } from '../../src/api/types.js';
import { gatewayForCache, watchGateways } from '../../src/kube/gateways.js';
import type { KubeClient } from '../../src/kube/client.js';
import { silentLogger } from '../../src/observability/logger.js';

const gw = (annotations?: Record<string, string>) => ({
  apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway',
  metadata: { name: 'g', namespace: 'a', uid: 'u', generation: 2, ...(annotations ? { annotations } : {}) },
  spec: { authentication: { audiences: ['gw'] }, routes: [] },
}) as unknown as AccessGateway;

test('the cache keeps the annotations the operator reads of an AccessGateway, not a team\'s others (up to 256 KiB an object), whatever their keys', () => {
  const kept = gatewayForCache(gw({ 'access-gateway.io/access-log': 'none', note: 'x'.repeat(200_000), 'example.com/other': 'y', 'access-gateway.io/pad': 'x'.repeat(200_000) }));
  assert.deepEqual(kept.metadata.annotations, { 'access-gateway.io/access-log': 'none' }, 'whatever the key: access-gateway.io/pad too');
  assert.deepEqual(kept.spec, gw().spec);
  assert.equal(kept.metadata.uid, 'u');
  assert.equal(gatewayForCache(gw({ note: 'x' })).metadata.annotations, undefined, 'none of ours: no annotations at all');
  const ours = gw({ 'access-gateway.io/access-log': 'errors' });
  assert.equal(gatewayForCache(ours), ours, 'nothing to drop: the object as read');
  const none = gw();
  assert.equal(gatewayForCache(none), none);
  // labels, finalizers, owner references and managed fields are never read either
  const heavy = gw({ 'access-gateway.io/access-log': 'none' });
  Object.assign(heavy.metadata, { resourceVersion: '7', creationTimestamp: '2026-01-01T00:00:00Z', labels: { big: 'x'.repeat(63) }, finalizers: ['a/b'],
    ownerReferences: [{ uid: 'x'.repeat(100_000) }], managedFields: [{ manager: 'x'.repeat(100_000) }] });
  assert.deepEqual(gatewayForCache(heavy).metadata, { name: 'g', namespace: 'a', uid: 'u', resourceVersion: '7', generation: 2,
    creationTimestamp: '2026-01-01T00:00:00Z', annotations: { 'access-gateway.io/access-log': 'none' } });
  assert.deepEqual(gatewayForCache(heavy).spec, heavy.spec);
});

test('the operator\'s watch of AccessGateways keeps each as gatewayForCache makes it', async () => {
  const watches = new Map<string, (ev: { type: string; object: unknown }) => void>();
  const client = {
    request: async () => ({ items: [], metadata: { resourceVersion: '1' } }),
    watch: (path: string, signal: AbortSignal, _t: number, _a: string | undefined, on: (ev: { type: string; object: unknown }) => void) => {
      watches.set(new URL(path, 'https://x').pathname, on);
      return new Promise<void>((r) => signal.addEventListener('abort', () => r()));
    },
  } as unknown as KubeClient;
  const seen: AccessGateway[] = [];
  const w = watchGateways(client, { namespaces: [], log: silentLogger, onEvent: (_t, g) => seen.push(g) });
  w.start();
  await w.firstSync();
  for (let i = 0; i < 50 && !watches.size; i++) await new Promise((r) => setTimeout(r, 10));
  const g = gw({ 'access-gateway.io/access-log': 'none', 'access-gateway.io/pad': 'x'.repeat(200_000) });
  watches.get('/apis/access-gateway.io/v1alpha1/accessgateways')!({ type: 'ADDED', object: { ...g, metadata: { ...g.metadata, resourceVersion: '2' } } });
  await w.stop();
  assert.deepEqual(w.get('a', 'g')?.metadata.annotations, { 'access-gateway.io/access-log': 'none' });
  assert.deepEqual(seen[0]?.metadata.annotations, { 'access-gateway.io/access-log': 'none' }, 'the controller gets it trimmed too');
});
