// --audit-extras none (the chart's operator.auditExtras), with the chart's least-privilege operator
// and curl: a service-account caller reaches the apiserver by its name alone (the apiserver adds
// its groups; no UID, token extras or gateway extras), its own RBAC still applies and nothing
// else; a ServiceAccount route acts as its account alone; and each access line names the
// apiserver's audit event (auditId), which a client cannot choose.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { auditEvent, startControlPlane, type ControlPlane } from '../support/control-plane.js';
import { chartArgs, startChartOperator } from '../support/chart-operator.js';
import { waitForLogLines } from '../support/operator.js';
import { applyYaml, bearer, curl, gatewayPort, installCRD, namespaceYaml } from '../support/cluster.js';

let cp: ControlPlane;
let op: Awaited<ReturnType<typeof startChartOperator>>;
let base: string;
let app: string;

const whoami = (path = '', more: string[] = []) => curl(`${base}${path}/apis/authentication.k8s.io/v1/selfsubjectreviews`, [...bearer(app), ...more, '-X', 'POST',
  '-H', 'Content-Type: application/json', '-d', JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' })]);

before(async () => {
  cp = await startControlPlane({ audit: true });
  await installCRD(cp);
  await applyYaml(cp, namespaceYaml('team-a', ['app', 'robot']));
  await applyYaml(cp, namespaceYaml('team-b', ['app']));
  await cp.kubectl(['create', 'role', 'cm-reader', '-n', 'team-a', '--verb=get,list', '--resource=configmaps']);
  await cp.kubectl(['create', 'rolebinding', 'app-cm', '-n', 'team-a', '--role=cm-reader', '--serviceaccount=team-a:app']);
  await cp.kubectl(['create', 'role', 'secret-reader', '-n', 'team-a', '--verb=list', '--resource=secrets']);
  await cp.kubectl(['create', 'rolebinding', 'robot-secrets', '-n', 'team-a', '--role=secret-reader', '--serviceaccount=team-a:robot']);
  // app may act as the user alice (kubectl --as), who is in the group auditors
  await cp.kubectl(['create', 'clusterrole', 'as-alice', '--verb=impersonate', '--resource=users,groups', '--resource-name=alice', '--resource-name=auditors']);
  await cp.kubectl(['create', 'clusterrolebinding', 'app-as-alice', '--clusterrole=as-alice', '--serviceaccount=team-a:app']);
  op = await startChartOperator(cp, { set: ['operator.auditExtras=none', 'operator.minAccessLog=all'] });
  assert.ok(chartArgs(op.rendered).includes('--audit-extras=none'), 'the chart passes the value on');
  await applyYaml(cp, `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: api, namespace: team-a}
spec:
  authentication: {audiences: [gw]}
  access: [{serviceAccounts: [{namespace: team-a, name: app}]}]
  routes:
    - {name: robot, pathPrefix: /robot/, rewritePrefix: /, apiserver: {identity: ServiceAccount, serviceAccountName: robot}}
    - {name: slow, pathPrefix: /slow/, rewritePrefix: /, timeoutSeconds: 1, apiserver: {identity: Impersonate}}
    - {name: kube-api, pathPrefix: /, apiserver: {identity: Impersonate}}
`);
  base = `http://127.0.0.1:${await gatewayPort(cp, 'team-a', 'api')}`;
  app = await cp.token('team-a', 'app', ['gw']);
}, { timeout: 240_000 });

after(async () => {
  await op?.stop();
  await cp?.stop();
});

test('a service-account caller is impersonated by its name alone: the apiserver adds its groups, no UID or extras', async () => {
  const r = await whoami();
  assert.equal(r.status, 201, r.body);
  const u = JSON.parse(r.body).status.userInfo;
  assert.equal(u.username, 'system:serviceaccount:team-a:app');
  assert.deepEqual([...u.groups].sort(), ['system:authenticated', 'system:serviceaccounts', 'system:serviceaccounts:team-a']);
  assert.equal(u.uid, undefined);
  assert.deepEqual(u.extra ?? {}, {});
});

test('its own RBAC applies and nothing more: its configmaps, not its namespace\'s secrets nor another team\'s configmaps', async () => {
  assert.equal((await curl(`${base}/api/v1/namespaces/team-a/configmaps`, bearer(app))).status, 200);
  for (const path of ['/api/v1/namespaces/team-a/secrets', '/api/v1/namespaces/team-b/configmaps', '/api/v1/configmaps']) {
    const r = await curl(`${base}${path}`, bearer(app));
    assert.equal(r.status, 403, `${path}: ${r.body}`);
    assert.match(JSON.parse(r.body).message, /system:serviceaccount:team-a:app/);
  }
});

test('a ServiceAccount route acts as its account alone, with its RBAC', async () => {
  const r = await whoami('/robot');
  assert.equal(r.status, 201, r.body);
  const u = JSON.parse(r.body).status.userInfo;
  assert.equal(u.username, 'system:serviceaccount:team-a:robot');
  assert.deepEqual([...u.groups].sort(), ['system:authenticated', 'system:serviceaccounts', 'system:serviceaccounts:team-a']);
  assert.deepEqual(u.extra ?? {}, {});
  assert.equal((await curl(`${base}/robot/api/v1/namespaces/team-a/secrets`, bearer(app))).status, 200);
  assert.equal((await curl(`${base}/robot/api/v1/namespaces/team-a/configmaps`, bearer(app))).status, 403);
});

test('a caller\'s own Impersonate-* headers (kubectl --as): the user and groups asked for, no gateway extras; the access line names both', async () => {
  const r = await whoami('', ['-H', 'Impersonate-User: alice', '-H', 'Impersonate-Group: auditors']);
  assert.equal(r.status, 201, r.body);
  const u = JSON.parse(r.body).status.userInfo;
  assert.equal(u.username, 'alice');
  assert.deepEqual([...u.groups].sort(), ['auditors', 'system:authenticated']);
  assert.deepEqual(u.extra ?? {}, {});
  const lines = await waitForLogLines(op, 1, (l) => l.msg === 'request' && l.as === 'alice' && l.status === 201);
  assert.equal(lines[0]?.caller, 'system:serviceaccount:team-a:app');
  assert.ok(lines[0]?.auditId, 'with its auditId');
});

test('a request the apiserver did not answer in time (504) still names its audit event', async () => {
  assert.equal((await curl(`${base}/slow/api/v1/namespaces/team-a/configmaps`, bearer(app))).status, 200, 'the token is known');
  await cp.pauseApiserver();
  let r;
  try {
    r = await curl(`${base}/slow/api/v1/namespaces/team-a/configmaps?limit=3`, bearer(app));
  } finally {
    cp.resumeApiserver();
  }
  assert.equal(r.status, 504, r.body);
  const [line] = await waitForLogLines(op, 1, (l) => l.msg === 'request' && l.route === 'slow' && l.status === 504);
  assert.match(line.auditId ?? '', /^[0-9a-f-]{36}$/);
  // the apiserver, going on, read the request and recorded it under that ID
  const event = await auditEvent(cp, line.auditId);
  // (its first stage, RequestReceived, is written before impersonation is read)
  assert.equal(event.user.username, 'system:serviceaccount:access-gateway:access-gateway');
  assert.equal(event.requestURI, '/api/v1/namespaces/team-a/configmaps?limit=3');
});

test('each access line names the apiserver\'s audit event (auditId); a client\'s Audit-ID is not forwarded', async () => {
  const chosen = '00000000-0000-0000-0000-00000000c0de';
  const r = await curl(`${base}/api/v1/namespaces/team-a/configmaps?limit=7`, [...bearer(app), '-H', `Audit-ID: ${chosen}`]);
  assert.equal(r.status, 200, r.body);
  const given = /^audit-id: *(\S+)/im.exec(r.headers)?.[1];
  assert.ok(given, `the apiserver's Audit-Id in the answer: ${r.headers}`);
  assert.notEqual(given, chosen);
  const lines = await waitForLogLines(op, 1, (l) => l.msg === 'request' && l.route === 'kube-api' && l.auditId === given);
  assert.equal(lines.length, 1, 'the line of that request carries its auditId');
  assert.equal(lines[0].caller, 'system:serviceaccount:team-a:app');
  assert.equal(lines[0].status, 200);
  // the apiserver's event of that ID: the operator impersonating the caller, that request
  const event = await auditEvent(cp, given, (s) => s === 'ResponseComplete');
  assert.equal(event.user.username, `system:serviceaccount:access-gateway:access-gateway`);
  assert.equal(event.impersonatedUser.username, 'system:serviceaccount:team-a:app');
  assert.equal(event.requestURI, '/api/v1/namespaces/team-a/configmaps?limit=7');
});
