// What the operator's cache keeps of an AccessGateway, and how it writes one's status (pure logic, fake clients).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AccessGateway } from '../../src/api/types.js';
import { gatewayForCache, watchGateways, writeStatus } from '../../src/kube/gateways.js';
import { ApiError, type KubeClient } from '../../src/kube/client.js';
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

test('a status is written whole, and only on the gateway it was made for: one made again under its name meanwhile refuses it', async () => {
  const calls: { method: string; path: string; body?: unknown; contentType?: string }[] = [];
  let live: { uid: string } | null = { uid: 'u1' };
  const client = {
    request: async (method: string, path: string, o: { body?: unknown; contentType?: string } = {}) => {
      calls.push({ method, path, body: o.body, contentType: o.contentType });
      if (method === 'GET') {
        assert.equal(path, '/apis/access-gateway.io/v1alpha1/namespaces/team-a/accessgateways?fieldSelector=metadata.name%3Dg', 'listed by name (the operator may not get one)');
        return { items: live ? [{ metadata: { uid: live.uid } }] : [] };
      }
      const test = (o.body as { op: string; value?: unknown }[])[0]!;
      if (!live) throw new ApiError(404, { reason: 'NotFound' }, 'status');
      if (test.op === 'test' && test.value !== live.uid) throw new ApiError(422, { reason: 'Invalid' }, 'status');
      return undefined;
    },
  } as unknown as KubeClient;
  const g = { apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: 'g', namespace: 'team-a', uid: 'u1' }, spec: {}, status: { listener: { port: 1, url: 'x' } } } as unknown as AccessGateway;
  const status = { observedGeneration: 2, listener: { port: 2 } } as AccessGateway['status'];
  assert.equal(await writeStatus(client, g, status), true);
  assert.deepEqual(calls[0], {
    method: 'PATCH', path: '/apis/access-gateway.io/v1alpha1/namespaces/team-a/accessgateways/g/status', contentType: 'application/json-patch+json',
    body: [{ op: 'test', path: '/metadata/uid', value: 'u1' }, { op: 'add', path: '/status', value: status }],
  });
  // made again (u2) since it was read: refused, and that is no error
  live = { uid: 'u2' };
  calls.length = 0;
  assert.equal(await writeStatus(client, g, status), false);
  assert.deepEqual(calls.map((c) => c.method), ['PATCH', 'GET']);
  live = null;
  assert.equal(await writeStatus(client, g, status), false, 'deleted');
  // a 422 for the object it was made for is the status's own fault: thrown
  live = { uid: 'u1' };
  const own = { ...client, request: async (method: string, ...rest: unknown[]) => {
    if (method === 'PATCH') throw new ApiError(422, { reason: 'Invalid', message: 'status.x: bad' }, 'status');
    return (client.request as (...a: unknown[]) => unknown)(method, ...rest);
  } } as unknown as KubeClient;
  await assert.rejects(writeStatus(own, g, status), /status.x: bad/);
});
