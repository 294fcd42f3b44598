// What the operator's cache keeps of an AccessGateway (pure logic).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AccessGateway } from '../../src/api/types.js';
import { gatewayForCache } from '../../src/kube/gateways.js';

const gw = (annotations?: Record<string, string>) => ({
  apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway',
  metadata: { name: 'g', namespace: 'a', uid: 'u', generation: 2, ...(annotations ? { annotations } : {}) },
  spec: { authentication: { audiences: ['gw'] }, routes: [] },
}) as unknown as AccessGateway;

test('the cache keeps the operator\'s own annotations of an AccessGateway, not a team\'s others (up to 256 KiB an object)', () => {
  const kept = gatewayForCache(gw({ 'access-gateway.io/access-log': 'none', note: 'x'.repeat(200_000), 'example.com/other': 'y' }));
  assert.deepEqual(kept.metadata.annotations, { 'access-gateway.io/access-log': 'none' });
  assert.deepEqual(kept.spec, gw().spec);
  assert.equal(kept.metadata.uid, 'u');
  assert.equal(gatewayForCache(gw({ note: 'x' })).metadata.annotations, undefined, 'none of ours: no annotations at all');
  const ours = gw({ 'access-gateway.io/access-log': 'errors' });
  assert.equal(gatewayForCache(ours), ours, 'nothing to drop: the object as read');
  const none = gw();
  assert.equal(gatewayForCache(none), none);
});
