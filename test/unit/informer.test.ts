// What the informer caches keep of an object: everything a reader uses, without managedFields or
// kubectl's last-applied copy (thousands of gateways would otherwise carry both); and the
// secondary index, which keeps nothing for names that are gone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stripForCache, type KubeObject } from '../../src/kube/informer.js';
import type { KubeClient } from '../../src/kube/client.js';
import { Watched } from '../../src/kube/watched.js';
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
