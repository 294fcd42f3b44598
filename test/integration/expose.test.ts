// spec.listener.expose: the agw-NAME Service's type and annotations, as far as the platform lets
// teams have them (chart values expose.*, operator flags --expose-types/--expose-annotations).
// The operator creates the Service with its own rights, so a type or annotation the platform does
// not allow is refused, not created: the Service stays a plain ClusterIP and the gateway says why.
// The load balancer's address (set here as a cloud controller would) becomes status.listener.url.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startControlPlane, type ControlPlane } from '../support/control-plane.js';
import { readyReplica, startChartOperator } from '../support/chart-operator.js';
import { waitFor } from '../support/procs.js';
import { applyYaml, condition, curl, gatewayPort, getGateway, installCRD, namespaceYaml } from '../support/cluster.js';

let cp: ControlPlane;
let op: Awaited<ReturnType<typeof startChartOperator>>;

const gateway = (ns: string, name: string, expose: string) => `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: ${name}, namespace: ${ns}}
spec:
  listener: {expose: ${expose}}
  authentication: {audiences: [gw]}
  access: [{serviceAccounts: [{namespace: ${ns}, name: app}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {}}]
`;

/** The gateway once its Programmed condition has `reason`. */
const programmedAs = (ns: string, name: string, reason: string) => waitFor(`${ns}/${name} ${reason}`, async () => {
  const g = await getGateway(cp, ns, name);
  return condition(g, 'Programmed')?.reason === reason ? g : undefined;
}, 20_000);

const service = async (ns: string, name: string) => (await cp.api('GET', `/api/v1/namespaces/${ns}/services/agw-${name}`)).body;

before(async () => {
  cp = await startControlPlane();
  await installCRD(cp);
  await applyYaml(cp, namespaceYaml('team-a', ['app']));
  await applyYaml(cp, namespaceYaml('team-b', ['app']));
  // this platform lets teams have load balancers, with its own LB annotations only
  op = await startChartOperator(cp, { set: ['expose.types={ClusterIP,LoadBalancer}', 'expose.annotations={lb.example.com/*}'] });
  assert.ok(op.rendered.find((o) => o.kind === 'Deployment').spec.template.spec.containers[0].args.includes('--expose-types=ClusterIP,LoadBalancer'));
  // one ready "replica" of the chart's operator, so gateways are exposed in the cluster
  await readyReplica(cp, op.rendered);
}, { timeout: 240_000 });

after(async () => {
  await op?.stop();
  await cp?.stop();
});

test('a LoadBalancer the platform allows: the Service has the type and annotations, and the load balancer address becomes the URL', async () => {
  await applyYaml(cp, gateway('team-a', 'lb', '{type: LoadBalancer, annotations: {lb.example.com/internal: "true"}}'));
  await gatewayPort(cp, 'team-a', 'lb');
  const svc = await waitFor('agw-lb', async () => { const s = await service('team-a', 'lb'); return s.spec?.type === 'LoadBalancer' ? s : undefined; }, 20_000);
  assert.deepEqual(svc.metadata.annotations, { 'lb.example.com/internal': 'true' });
  assert.ok(svc.spec.ports[0].nodePort > 0, 'the apiserver allocated a node port for the load balancer');
  let gw = await getGateway(cp, 'team-a', 'lb');
  assert.equal(gw.status.listener.url, 'http://agw-lb.team-a.svc', 'no load balancer address yet: the in-cluster URL');
  assert.equal(condition(gw, 'Ready').status, 'True');
  // what a cloud controller does once the load balancer exists
  await cp.api('PATCH', '/api/v1/namespaces/team-a/services/agw-lb/status', { status: { loadBalancer: { ingress: [{ ip: '198.18.7.7' }] } } }, 'application/merge-patch+json');
  gw = await waitFor('url from the load balancer', async () => {
    const g = await getGateway(cp, 'team-a', 'lb');
    return g.status.listener.url === 'http://198.18.7.7' ? g : undefined;
  }, 20_000);
  // back to ClusterIP: the type, the annotations and the external URL go
  await applyYaml(cp, gateway('team-a', 'lb', '{type: ClusterIP}'));
  const plain = await waitFor('agw-lb ClusterIP without the annotation', async () => {
    const s = await service('team-a', 'lb');
    return s.spec?.type === 'ClusterIP' && s.metadata.annotations?.['lb.example.com/internal'] === undefined ? s : undefined;
  }, 20_000);
  assert.equal(plain.spec.ports[0].nodePort, undefined);
  await waitFor('in-cluster url again', async () => (await getGateway(cp, 'team-a', 'lb')).status.listener.url === 'http://agw-lb.team-a.svc', 20_000);
});

test('an allowed annotation key the apiserver refuses: Programmed=False ExposureInvalid with its reason, the listener serves, other gateways are exposed; a fixed spec is exposed', async () => {
  await applyYaml(cp, gateway('team-a', 'bad-key', '{annotations: {"lb.example.com/not a key": "x"}}'));
  const gw = await programmedAs('team-a', 'bad-key', 'ExposureInvalid');
  assert.match(condition(gw, 'Programmed').message, /the apiserver refused the Service agw-bad-key the gateway needs: .*not a key/);
  assert.equal(condition(gw, 'Ready').status, 'False');
  assert.equal((await curl(`http://127.0.0.1:${gw.status.listener.port}/api`)).status, 401, 'the listener serves');
  assert.equal((await cp.api('GET', '/api/v1/namespaces/team-a/services/agw-bad-key')).status, 404);
  await applyYaml(cp, gateway('team-a', 'beside', '{}'));
  await waitFor('beside exposed', async () => condition(await getGateway(cp, 'team-a', 'beside'), 'Ready')?.status === 'True', 20_000);
  await applyYaml(cp, gateway('team-a', 'bad-key', '{annotations: {lb.example.com/a-key: "x"}}'));
  await waitFor('bad-key exposed', async () => condition(await getGateway(cp, 'team-a', 'bad-key'), 'Ready')?.status === 'True', 20_000);
  assert.deepEqual((await service('team-a', 'bad-key')).metadata.annotations, { 'lb.example.com/a-key': 'x' });
});

test('a type or annotation the platform does not allow is not created: ClusterIP, ExposureNotPermitted, the listener still serves', async () => {
  await applyYaml(cp, gateway('team-b', 'np', '{type: NodePort}'));
  const gw = await programmedAs('team-b', 'np', 'ExposureNotPermitted');
  const port = gw.status.listener.port;
  assert.match(condition(gw, 'Programmed').message, /type NodePort \(allowed: ClusterIP, LoadBalancer; --expose-types\); exposed as a plain ClusterIP Service instead/);
  assert.equal(condition(gw, 'Ready').status, 'False');
  assert.equal(gw.status.listener.url, 'http://agw-np.team-b.svc');
  assert.equal((await service('team-b', 'np')).spec.type, 'ClusterIP');
  assert.equal((await curl(`http://127.0.0.1:${port}/api`)).status, 401, 'the listener serves');
  // another provider's annotation (choosing a shared address pool, say) is the platform's to give
  await applyYaml(cp, gateway('team-b', 'np', '{type: LoadBalancer, annotations: {metallb.universe.tf/address-pool: shared, lb.example.com/internal: "true"}}'));
  const again = await waitFor('annotation not permitted', async () => {
    const g = await getGateway(cp, 'team-b', 'np');
    return /metallb/.test(condition(g, 'Programmed')?.message ?? '') ? g : undefined;
  }, 20_000);
  assert.match(condition(again, 'Programmed').message, /annotation metallb.universe.tf\/address-pool \(allowed: lb.example.com\/\*; --expose-annotations\)/);
  const svc = await service('team-b', 'np');
  assert.equal(svc.spec.type, 'ClusterIP');
  assert.equal(svc.metadata.annotations, undefined);
  // what it may have, it gets
  await applyYaml(cp, gateway('team-b', 'np', '{type: LoadBalancer}'));
  await waitFor('np programmed', async () => condition(await getGateway(cp, 'team-b', 'np'), 'Programmed')?.status === 'True', 20_000);
  assert.equal((await service('team-b', 'np')).spec.type, 'LoadBalancer');
});
