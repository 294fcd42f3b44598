// Which gateways an object's change reconciles (pure logic): each kind of reference, other
// namespaces' same-named objects left out, and a gateway's old references dropped on update.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AccessGateway } from '../../src/api/types.js';
import { RefIndex, type Ref } from '../../src/controller/ref-index.js';

const gw = (ns: string, name: string, spec: Partial<AccessGateway['spec']>): AccessGateway => ({
  apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name, namespace: ns },
  spec: { routes: [], ...spec } as AccessGateway['spec'],
});
const svcRoute = (name: string, service: Record<string, unknown>) => ({ name, pathPrefix: `/${name}`, service: { port: 80, ...service } }) as AccessGateway['spec']['routes'][number];
const who = (i: RefIndex, kind: Ref['kind'], namespace: string, name: string) => [...i.referring({ kind, namespace, name })].sort();

test('each kind of reference reconciles the gateways that refer to it, and no other', () => {
  const i = new RefIndex();
  i.set('a/tls', gw('a', 'tls', { listener: { tls: { secretName: 'cert', clientCA: { kind: 'ConfigMap', name: 'cas', key: 'ca.crt' } } } as AccessGateway['spec']['listener'] }));
  i.set('a/svc', gw('a', 'svc', { routes: [svcRoute('web', { name: 'web', scheme: 'https', caRef: { kind: 'Secret', name: 'web-ca', key: 'ca.crt' } })] }));
  i.set('a/cross', gw('a', 'cross', { routes: [svcRoute('db', { name: 'db', namespace: 'data' })] }));
  i.set('b/svc', gw('b', 'svc', { routes: [svcRoute('web', { name: 'web' })] }));
  assert.deepEqual(who(i, 'Secret', 'a', 'cert'), ['a/tls']);
  assert.deepEqual(who(i, 'ConfigMap', 'a', 'cas'), ['a/tls']);
  assert.deepEqual(who(i, 'Secret', 'a', 'cas'), [], 'the kind counts');
  assert.deepEqual(who(i, 'Secret', 'b', 'cert'), [], 'the namespace counts');
  assert.deepEqual(who(i, 'Service', 'a', 'web'), ['a/svc']);
  assert.deepEqual(who(i, 'Service', 'b', 'web'), ['b/svc']);
  assert.deepEqual(who(i, 'Secret', 'a', 'web-ca'), ['a/svc']);
  assert.deepEqual(who(i, 'Service', 'data', 'db'), ['a/cross']);
  // any ReferenceGrant in the Service's namespace, whatever its name; none for a same-namespace route
  assert.deepEqual(who(i, 'ReferenceGrant', 'data', 'anything'), ['a/cross']);
  assert.deepEqual(who(i, 'ReferenceGrant', 'a', 'x'), []);
  // each gateway's own agw-NAME Service
  assert.deepEqual(who(i, 'Service', 'a', 'agw-tls'), ['a/tls']);
  assert.deepEqual(who(i, 'Service', 'b', 'agw-tls'), []);
});

test('an update drops the references the gateway no longer has; a delete drops them all', () => {
  const i = new RefIndex();
  i.set('a/g', gw('a', 'g', { routes: [svcRoute('one', { name: 'one' })] }));
  i.set('a/h', gw('a', 'h', { routes: [svcRoute('one', { name: 'one' })] }));
  i.set('a/g', gw('a', 'g', { routes: [svcRoute('two', { name: 'two' })] }));
  assert.deepEqual(who(i, 'Service', 'a', 'one'), ['a/h']);
  assert.deepEqual(who(i, 'Service', 'a', 'two'), ['a/g']);
  i.delete('a/g');
  i.delete('a/h');
  assert.deepEqual(who(i, 'Service', 'a', 'two'), []);
  assert.deepEqual(who(i, 'Service', 'a', 'agw-g'), []);
  assert.equal((i as unknown as { byRef: Map<string, unknown> }).byRef.size, 0, 'nothing kept for deleted gateways');
});
