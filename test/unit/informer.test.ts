// What the informer caches keep of an object: everything a reader uses, without managedFields or
// kubectl's last-applied copy (thousands of gateways would otherwise carry both).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stripForCache } from '../../src/kube/informer.js';

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
