// spec.listener.expose against the platform's policy (pure), and the policy from operator flags.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyDefaults } from '../../src/api/defaults.js';
import { clusterIPOnly, exposure, exposureFor, loadBalancerURL } from '../../src/controller/exposure.js';
import { exposurePolicy } from '../../src/cli/operator.js';

const gw = (expose?: Record<string, unknown>) => applyDefaults({
  apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: 'g', namespace: 'team-a', uid: 'u1' },
  spec: { ...(expose ? { listener: { expose } } : {}), authentication: { audiences: ['gw'] }, routes: [{ name: 'r', pathPrefix: '/', apiserver: {} }] },
});

test('exposureFor: what the policy allows is given; anything else gives a plain ClusterIP and says why', () => {
  const lb = { types: ['ClusterIP', 'LoadBalancer'] as const, defaultType: 'LoadBalancer' as const, annotations: ['lb.example.com/*', 'exact.example.com/key'] };
  assert.deepEqual(exposureFor(gw(), clusterIPOnly), { type: 'ClusterIP', annotations: {}, refused: null });
  assert.deepEqual(exposureFor(gw(), lb), { type: 'LoadBalancer', annotations: {}, refused: null }, 'the platform default');
  assert.deepEqual(exposureFor(gw({ type: 'ClusterIP' }), lb).type, 'ClusterIP');
  assert.deepEqual(exposureFor(gw({ annotations: { 'lb.example.com/a': '1', 'exact.example.com/key': '2' } }), lb).annotations,
    { 'lb.example.com/a': '1', 'exact.example.com/key': '2' });
  const np = exposureFor(gw({ type: 'NodePort', annotations: { 'exact.example.com/key2': 'x', 'other/b': 'y' } }), lb);
  assert.equal(np.type, 'ClusterIP');
  assert.deepEqual(np.annotations, {});
  assert.equal(np.refused, 'spec.listener.expose asks for what this platform does not let gateways have: type NodePort (allowed: ClusterIP, LoadBalancer; --expose-types); ' +
    'annotations exact.example.com/key2, other/b (allowed: lb.example.com/*, exact.example.com/key; --expose-annotations); exposed as a plain ClusterIP Service instead');
  assert.match(exposureFor(gw({ type: 'LoadBalancer' }), clusterIPOnly).refused!, /type LoadBalancer \(allowed: ClusterIP/);
});

test('exposure: the Service carries the type and annotations; a load balancer address is a URL', () => {
  const e = exposure(gw(), 20001, true, ['198.18.0.1'], { type: 'LoadBalancer', annotations: { 'lb.example.com/a': '1' } });
  assert.equal(e.service.spec.type, 'LoadBalancer');
  assert.deepEqual(e.service.metadata.annotations, { 'lb.example.com/a': '1' });
  assert.equal('annotations' in exposure(gw(), 20001, true, ['198.18.0.1']).service.metadata, false);
  assert.equal(loadBalancerURL(true, { ip: '198.18.7.7' }), 'https://198.18.7.7');
  assert.equal(loadBalancerURL(false, { hostname: 'lb.example.com', ip: '198.18.7.7' }), 'http://lb.example.com');
  assert.equal(loadBalancerURL(true, { ip: '2001:db8::1' }), 'https://[2001:db8::1]');
  assert.equal(loadBalancerURL(true, {}), undefined);
  assert.equal(loadBalancerURL(true, undefined), undefined);
});

test('the policy from flags: ClusterIP only by default; a default outside the allowed types or an unknown type is refused', () => {
  assert.deepEqual(exposurePolicy({ 'expose-types': [], 'default-expose-type': 'ClusterIP', 'expose-annotations': [] }), clusterIPOnly);
  assert.throws(() => exposurePolicy({ 'expose-types': [], 'default-expose-type': 'LoadBalancer', 'expose-annotations': [] }),
    /--default-expose-type LoadBalancer is not among --expose-types \(ClusterIP\)/);
  assert.throws(() => exposurePolicy({ 'expose-types': ['ExternalName'], 'default-expose-type': 'ClusterIP', 'expose-annotations': [] }), /--expose-types: ExternalName/);
});

test('applyOwned: a create the apiserver refuses as already there (409: the cache had not shown it yet) is not an error; any other refusal is', async () => {
  const { applyOwned } = await import('../../src/kube/gateways.js');
  const { ApiError } = await import('../../src/kube/client.js');
  const svc = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'agw-x', namespace: 'team-a' } };
  let status = 409;
  const asked: string[] = [];
  const client = { request: async (method: string, path: string) => { asked.push(`${method} ${path}`); throw new ApiError(status, { message: 'no' }, 'create'); } } as never;
  assert.equal(await applyOwned(client, svc, false), false);
  status = 403;
  await assert.rejects(applyOwned(client, svc, false), (e: unknown) => (e as { status: number }).status === 403);
  assert.deepEqual(asked, ['POST /api/v1/namespaces/team-a/services?fieldManager=access-gateway', 'POST /api/v1/namespaces/team-a/services?fieldManager=access-gateway']);
});
