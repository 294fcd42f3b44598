// The operator survives its watch being cut (apiserver restart) and fails closed while the
// apiserver is away; namespace deletion (kube-controller-manager) removes gateways.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startControlPlane, type ControlPlane } from '../support/control-plane.js';
import { startOperator, type OperatorProc } from '../support/operator.js';
import { applyYaml, bearer, condition, curl, gatewayPort, getGateway, installCRD, namespaceYaml, waitListenerClosed } from '../support/cluster.js';
import { waitFor } from '../support/procs.js';

let cp: ControlPlane;
let op: OperatorProc;

before(async () => {
  cp = await startControlPlane({ controllerManager: true });
  await installCRD(cp);
  await applyYaml(cp, namespaceYaml('team-r', ['app']));
  await cp.kubectl(['create', 'role', 'cm-reader', '-n', 'team-r', '--verb=get,list,watch', '--resource=configmaps']);
  await cp.kubectl(['create', 'rolebinding', 'app-cm-reader', '-n', 'team-r', '--role=cm-reader', '--serviceaccount=team-r:app']);
  // 198.18.255.1 is only published in EndpointSlices (the apiserver refuses loopback); nothing is sent to it
  op = await startOperator(cp, { args: ['--advertise-address', '198.18.255.1'] });
}, { timeout: 180_000 });

after(async () => {
  await op?.stop();
  await cp?.stop();
});

const gateway = (name: string, ns = 'team-r', accept = '"^/api/.*"') => `
apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: ${name}, namespace: ${ns}}
spec:
  authentication: {audiences: [gw], cacheTTLSeconds: 300}
  access: [{groups: ["system:serviceaccounts"]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {acceptPaths: [${accept}, "^/version$"]}}]
`;

test('after the apiserver restarts, changes made meanwhile are reconciled; while it is away, auth fails closed', async () => {
  await applyYaml(cp, gateway('steady'));
  const port = await gatewayPort(cp, 'team-r', 'steady');
  const cached = await cp.token('team-r', 'app', ['gw']);
  const fresh = await cp.token('team-r', 'app', ['gw']);
  assert.equal((await curl(`http://127.0.0.1:${port}/version`, bearer(cached))).status, 200);

  await cp.restartApiserver(); // the operator's watch connections are cut
  // change things right away, while the operator is still reconnecting
  await applyYaml(cp, gateway('steady', 'team-r', '"^/apis.*"'));
  await applyYaml(cp, gateway('born-after-restart'));
  const newPort = await gatewayPort(cp, 'team-r', 'born-after-restart');
  assert.ok(newPort > 0);
  await waitFor('edit reconciled', async () => {
    const gw = await getGateway(cp, 'team-r', 'steady');
    return gw.status.observedGeneration === gw.metadata.generation && condition(gw, 'Ready').status === 'True';
  }, 60_000);
  assert.equal((await curl(`http://127.0.0.1:${port}/apis`, bearer(cached))).status, 200);
  assert.equal((await curl(`http://127.0.0.1:${port}/api`, bearer(cached))).status, 403);
  const log = await import('node:fs').then((fs) => fs.readFileSync(op.logFile, 'utf8'));
  assert.match(log, /watch failed; restarting|relisting/);

  // apiserver away: a token never seen cannot be reviewed -> 503, never allowed
  await cp.stopApiserver();
  try {
    const r = await curl(`http://127.0.0.1:${port}/apis`, bearer(fresh));
    assert.equal(r.status, 503, r.body);
    assert.equal(JSON.parse(r.body).reason, 'ServiceUnavailable');
    // a cached caller is still authenticated; the upstream is down: 502
    const r2 = await curl(`http://127.0.0.1:${port}/apis`, bearer(cached));
    assert.equal(r2.status, 502, r2.body);
  } finally {
    await cp.startApiserver();
  }
  assert.equal((await curl(`http://127.0.0.1:${port}/apis`, bearer(fresh))).status, 200);
});

test('deleting a namespace removes its gateways and closes their listeners', async () => {
  await applyYaml(cp, namespaceYaml('team-gone', []));
  await applyYaml(cp, gateway('doomed', 'team-gone'));
  const port = await gatewayPort(cp, 'team-gone', 'doomed');
  await cp.kubectl(['delete', 'namespace', 'team-gone', '--wait=false']);
  await waitListenerClosed(port, 60_000);
  await waitFor('namespace gone', async () => (await cp.api('GET', '/api/v1/namespaces/team-gone')).status === 404, 60_000);
});

test('the agw-NAME Service and EndpointSlice exist with the right port and owner, and disappear with the gateway', async () => {
  await applyYaml(cp, gateway('exposed'));
  const port = await gatewayPort(cp, 'team-r', 'exposed');
  const gw = await getGateway(cp, 'team-r', 'exposed');
  assert.equal(gw.status.listener.url, 'http://agw-exposed.team-r.svc');
  const svc = (await cp.api('GET', '/api/v1/namespaces/team-r/services/agw-exposed')).body;
  assert.deepEqual(svc.spec.ports.map((p: any) => [p.name, p.port, p.targetPort]), [['http', 80, port]]);
  assert.equal(svc.spec.selector, undefined);
  assert.equal(svc.metadata.ownerReferences[0].uid, gw.metadata.uid);
  assert.equal(svc.metadata.ownerReferences[0].kind, 'AccessGateway');
  const slice = (await cp.api('GET', '/apis/discovery.k8s.io/v1/namespaces/team-r/endpointslices/agw-exposed')).body;
  assert.equal(slice.metadata.labels['kubernetes.io/service-name'], 'agw-exposed');
  assert.deepEqual(slice.endpoints.map((e: any) => e.addresses[0]), ['198.18.255.1']);
  assert.equal(slice.ports[0].port, port);
  assert.equal(slice.metadata.ownerReferences[0].uid, gw.metadata.uid);
  // deleted by hand: written again by the operator
  await cp.kubectl(['delete', 'service,endpointslice', 'agw-exposed', '-n', 'team-r']);
  const back = await waitFor('Service and EndpointSlice written again', async () => {
    const s = await cp.api('GET', '/api/v1/namespaces/team-r/services/agw-exposed');
    const e = await cp.api('GET', '/apis/discovery.k8s.io/v1/namespaces/team-r/endpointslices/agw-exposed');
    return s.status === 200 && e.status === 200 && s.body.metadata.uid !== svc.metadata.uid ? [s.body, e.body] : undefined;
  }, 30_000, 200);
  assert.equal(back[0].metadata.ownerReferences[0].uid, gw.metadata.uid);
  assert.equal(back[1].ports[0].port, port);
  // a selector someone adds (its pods would get the gateway's traffic): said, not fought over
  await cp.kubectl(['patch', 'service', 'agw-exposed', '-n', 'team-r', '--type=merge', '-p', '{"spec":{"selector":{"app":"mine"}}}']);
  const conflict = await waitFor('ExposureConflict', async () => {
    const g = await getGateway(cp, 'team-r', 'exposed');
    return condition(g, 'Programmed')?.reason === 'ExposureConflict' ? g : undefined;
  }, 30_000, 200);
  assert.match(condition(conflict, 'Programmed').message, /Service team-r\/agw-exposed has a selector someone else set/);
  assert.equal(condition(conflict, 'Ready').status, 'False');
  await cp.kubectl(['patch', 'service', 'agw-exposed', '-n', 'team-r', '--type=json', '-p', '[{"op":"remove","path":"/spec/selector"}]']);
  // nor an EndpointSlice of someone else's that joins the Service (its addresses would get a
  // share): one added by hand, and the one the EndpointSlice controller made for the selector
  // (it stays when the selector goes)
  await applyYaml(cp, `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: extra, namespace: team-r, labels: {kubernetes.io/service-name: agw-exposed}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: [198.18.9.9]}]
`);
  const joined = await waitFor('ExposureConflict (another slice)', async () => {
    const g = await getGateway(cp, 'team-r', 'exposed');
    const c = condition(g, 'Programmed');
    return c?.reason === 'ExposureConflict' && /EndpointSlice/.test(c.message) ? c : undefined;
  }, 30_000, 200);
  assert.match(joined.message, /EndpointSlice team-r\/(extra|agw-exposed-\w+), labelled kubernetes.io\/service-name=agw-exposed, exists and is not owned by this AccessGateway/);
  await cp.kubectl(['delete', 'endpointslice', '-n', 'team-r', '-l', 'kubernetes.io/service-name=agw-exposed', '--field-selector', 'metadata.name!=agw-exposed']);
  await waitFor('Ready again', async () => condition(await getGateway(cp, 'team-r', 'exposed'), 'Ready')?.status === 'True', 30_000, 200);
  await cp.kubectl(['delete', 'agw', 'exposed', '-n', 'team-r']);
  await waitFor('Service and EndpointSlice collected', async () =>
    (await cp.api('GET', '/api/v1/namespaces/team-r/services/agw-exposed')).status === 404 &&
    (await cp.api('GET', '/apis/discovery.k8s.io/v1/namespaces/team-r/endpointslices/agw-exposed')).status === 404, 60_000, 500);
});
