// The tenancy invariant (DESIGN.md §2), tried by two teams on one operator that runs as the
// chart's least-privilege ServiceAccount: a team that may create an AccessGateway gains nothing
// it could not already do with its own service accounts, and cannot stall or read another team's
// gateway. Each test is one of the escapes reported in issue 8, tried and refused.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { request } from 'undici';
import { referenceGrantCRD, startControlPlane, type ControlPlane } from '../support/control-plane.js';
import { readyReplica, startChartOperator } from '../support/chart-operator.js';
import { applyYaml, backendPods, bearer, condition, createListenerTLS, curl, gatewayPort, getGateway, hostPod, installCRD, namespaceYaml, applyService, runningPod as runningPodIn, serviceYaml, waitListenerClosed, waitObserved } from '../support/cluster.js';
import { freePort, waitFor } from '../support/procs.js';
import { createTestNet, startServer, type TestNet, type TestServer } from '../support/netns.js';
import { rawGet } from '../support/raw-http.js';
import { logLines } from '../support/operator.js';
import { scrapeMetrics } from '../support/metrics.js';

let cp: ControlPlane;
let op: Awaited<ReturnType<typeof startChartOperator>>;
let net: TestNet;
let privateB: TestServer; // a pod of team-b's that team-a's pods may not reach (the operator's may)
let appA: string; // team-a's workload
let appB: string; // team-b's workload
const maxPerNamespace = 12;
const operatorArgs = ['--max-gateways-per-namespace', String(maxPerNamespace), '--drain-seconds', '60', '--max-labelled-mib-per-namespace', '1'];

const gw = (ns: string, name: string, spec: string) => `
apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: ${name}, namespace: ${ns}}
spec:
  authentication: {audiences: [gw]}
${spec}`;

before(async () => {
  cp = await startControlPlane();
  await installCRD(cp);
  await applyYaml(cp, namespaceYaml('team-a', ['app', 'reader', 'limited']));
  await applyYaml(cp, namespaceYaml('team-a-prod', []));
  await applyYaml(cp, namespaceYaml('team-b', ['app']));
  // team-a:app may read configmaps and secrets of team-a, and configmaps of team-a-prod;
  // team-a:reader only configmaps of team-a. Nobody of team-a may read team-b or kube-system.
  await cp.kubectl(['create', 'role', 'rw', '-n', 'team-a', '--verb=get,list,create,delete', '--resource=configmaps,secrets']);
  await cp.kubectl(['create', 'rolebinding', 'app-rw', '-n', 'team-a', '--role=rw', '--serviceaccount=team-a:app', '--serviceaccount=team-a:limited']);
  await cp.kubectl(['create', 'role', 'cm', '-n', 'team-a-prod', '--verb=get,list', '--resource=configmaps']);
  await cp.kubectl(['create', 'rolebinding', 'app-cm', '-n', 'team-a-prod', '--role=cm', '--serviceaccount=team-a:app']);
  await cp.kubectl(['create', 'role', 'cm', '-n', 'team-a', '--verb=get,list', '--resource=configmaps']);
  await cp.kubectl(['create', 'rolebinding', 'reader-cm', '-n', 'team-a', '--role=cm', '--serviceaccount=team-a:reader']);
  await cp.kubectl(['create', 'secret', 'generic', 'b-secret', '-n', 'team-b', '--from-literal=k=v']);
  await cp.kubectl(['create', 'secret', 'generic', 'a-secret', '-n', 'team-a', '--from-literal=k=v']);
  net = await createTestNet({ hosts: 2 });
  await startServer(net.hosts[0]!, { name: 'ledger' });
  privateB = await startServer(net.hosts[1]!, { name: 'private-b' });
  await backendPods(cp, 'team-b', [net.hosts[1]!.ip]);
  await applyService(cp, 'team-a', 'ledger', [net.hosts[0]!.ip]);
  op = await startChartOperator(cp, { args: operatorArgs });
  // a team-a gateway older than team-b's (it tries to take team-b's port in test 5)
  await applyYaml(cp, gw('team-a', 'elder', `
  access: [{serviceAccounts: [{namespace: team-a, name: app}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {}}]`));
  await gatewayPort(cp, 'team-a', 'elder');
  // team-b's own gateway, which team-a must not be able to touch or slow down
  await applyYaml(cp, gw('team-b', 'b-gw', `
  access: [{serviceAccounts: [{namespace: team-b, name: app}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {}}]`));
  appA = await cp.token('team-a', 'app', ['gw']);
  appB = await cp.token('team-b', 'app', ['gw']);
}, { timeout: 240_000 });

after(async () => {
  await op?.stop();
  await net?.destroy();
  await cp?.stop();
});

async function get(port: number, path: string, token: string, method = 'GET') {
  const res = await request(`http://127.0.0.1:${port}${path}`, { method: method as any, headers: { authorization: `Bearer ${token}` } });
  const text = await res.body.text();
  let json: any;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.statusCode, text, json };
}

test('1. identity Gateway (the operator credentials) is gone: the CRD refuses it and names the replacement', async () => {
  const err = await applyYaml(cp, gw('team-a', 'as-operator', `
  access: [{serviceAccounts: [{namespace: team-a, name: app}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {identity: Gateway}}]`)).then(() => undefined, (e) => String(e.stderr ?? e));
  assert.ok(err, 'a manifest with identity: Gateway must be refused');
  assert.match(err, /identity Gateway was removed/);
  assert.match(err, /ServiceAccount/);
  assert.match(err, /serviceAccountName/);
});

test('1. identity ServiceAccount acts as a service account of the gateway namespace, never more', async () => {
  await applyYaml(cp, gw('team-a', 'as-reader', `
  access: [{serviceAccounts: [{namespace: team-a, name: app}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {identity: ServiceAccount, serviceAccountName: reader}}]`));
  const port = await gatewayPort(cp, 'team-a', 'as-reader');
  // what reader may do works...
  assert.equal((await get(port, '/api/v1/namespaces/team-a/configmaps', appA)).status, 200);
  // ...and nothing else, although the caller (app) may read team-a's secrets and the operator may read all
  const denied = {
    'team-a secrets (the caller may, reader may not)': await get(port, '/api/v1/namespaces/team-a/secrets', appA),
    'team-b secrets': await get(port, '/api/v1/namespaces/team-b/secrets/b-secret', appA),
    'kube-system secrets': await get(port, '/api/v1/namespaces/kube-system/secrets', appA),
    'all secrets': await get(port, '/api/v1/secrets', appA),
  };
  for (const [what, r] of Object.entries(denied)) {
    assert.equal(r.status, 403, `${what}: ${r.text}`);
    assert.match(r.json.message, /system:serviceaccount:team-a:reader/, what);
  }
  const patch = await request(`http://127.0.0.1:${port}/apis/access-gateway.io/v1alpha1/namespaces/team-b/accessgateways/b-gw/status`, {
    method: 'PATCH', headers: { authorization: `Bearer ${appA}`, 'content-type': 'application/merge-patch+json' },
    body: JSON.stringify({ status: { listener: { port: 1 } } }),
  });
  assert.equal(patch.statusCode, 403, await patch.body.text());
  // the apiserver's view: reader, with the gateway, route and original caller in the extras
  const who = await request(`http://127.0.0.1:${port}/apis/authentication.k8s.io/v1/selfsubjectreviews`, {
    method: 'POST', headers: { authorization: `Bearer ${appA}`, 'content-type': 'application/json' },
    body: JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' }),
  });
  const info = (await who.body.json() as any).status.userInfo;
  assert.equal(info.username, 'system:serviceaccount:team-a:reader');
  assert.deepEqual([...info.groups].sort(), ['system:authenticated', 'system:serviceaccounts', 'system:serviceaccounts:team-a']);
  assert.deepEqual(info.extra['access-gateway.io/gateway'], ['team-a/as-reader']);
  assert.deepEqual(info.extra['access-gateway.io/route'], ['kube-api']);
  assert.deepEqual(info.extra['access-gateway.io/caller'], ['system:serviceaccount:team-a:app']);
});

test('1. serviceAccountName cannot name anything outside the gateway namespace', async () => {
  for (const name of ['team-b:app', 'system:admin', '../team-b/app', 'app/../../x', '*']) {
    const err = await applyYaml(cp, gw('team-a', 'escape', `
  access: [{serviceAccounts: [{namespace: team-a, name: app}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {identity: ServiceAccount, serviceAccountName: "${name}"}}]`)).then(() => undefined, (e) => String(e.stderr ?? e));
    assert.ok(err, `serviceAccountName ${name} must be refused`);
    assert.match(err, /serviceAccountName/, name);
  }
  // a name that exists only in team-b is team-a's (absent) account, with no rights at all
  await applyYaml(cp, gw('team-a', 'as-b-name', `
  access: [{serviceAccounts: [{namespace: team-a, name: app}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {identity: ServiceAccount, serviceAccountName: b-only}}]`));
  await applyYaml(cp, namespaceYaml('team-b', ['b-only']));
  await cp.kubectl(['create', 'rolebinding', 'b-only-admin', '-n', 'team-b', '--clusterrole=admin', '--serviceaccount=team-b:b-only']);
  const port = await gatewayPort(cp, 'team-a', 'as-b-name');
  const r = await get(port, '/api/v1/namespaces/team-b/secrets', appA);
  assert.equal(r.status, 403, r.text);
  assert.match(r.json.message, /system:serviceaccount:team-a:b-only/);
});

test('1. another team\'s token that reached a gateway cannot be replayed there as that team: Impersonate routes impersonate only the gateway namespace\'s accounts', async () => {
  // team-b's app calls team-a's gateway (a Service route team-a offers it) with a token for its
  // audience; team-a, which runs the gateway, has the token and an apiserver route that admits all.
  // team-b's app may read its own b-secret (only that: list stays refused for the other tests)
  await cp.kubectl(['create', 'role', 'b-get', '-n', 'team-b', '--verb=get', '--resource=secrets', '--resource-name=b-secret']);
  await cp.kubectl(['create', 'rolebinding', 'b-get', '-n', 'team-b', '--role=b-get', '--serviceaccount=team-b:app']);
  await applyYaml(cp, gw('team-a', 'replay', `
  access: [{groups: [system:serviceaccounts]}]
  routes:
    - {name: kube-api, pathPrefix: /api/, apiserver: {}}
    - {name: as-reader, pathPrefix: /apis/, apiserver: {identity: ServiceAccount, serviceAccountName: reader}}`));
  const port = await gatewayPort(cp, 'team-a', 'replay');
  const replayed = await get(port, '/api/v1/namespaces/team-b/secrets/b-secret', appB);
  assert.equal(replayed.status, 403, replayed.text);
  assert.match(replayed.json.message, /only service accounts of namespace team-a are impersonated here \(the caller is system:serviceaccount:team-b:app\)/);
  assert.doesNotMatch(replayed.text, /"k"/);
  // the gateway's own team is impersonated as before; another team's caller may use what acts as
  // the gateway's own accounts (ServiceAccount), which gives team-a nothing it did not have
  assert.equal((await get(port, '/api/v1/namespaces/team-a/secrets/a-secret', appA)).status, 200);
  const asReader = await get(port, '/apis/authentication.k8s.io/v1', appB);
  assert.equal(asReader.status, 200, asReader.text);
  // and team-b's token still works at team-b's own gateway, as team-b
  const own = await get(await gatewayPort(cp, 'team-b', 'b-gw'), '/api/v1/namespaces/team-b/secrets/b-secret', appB);
  assert.equal(own.status, 200, own.text);
  assert.equal(own.json.metadata.name, 'b-secret');
});

test('2. percent-encoding does not slip past rejectPaths or route grants', async () => {
  await applyYaml(cp, gw('team-a', 'encoded', `
  access:
    - {serviceAccounts: [{namespace: team-a, name: app}]}
    - {serviceAccounts: [{namespace: team-a, name: limited}], routes: [rest]}
  routes:
    - {name: configmaps, pathPrefix: /api/v1/namespaces/team-a/configmaps, apiserver: {}}
    - {name: rest, pathPrefix: /, apiserver: {rejectPaths: ["^/api/v1/namespaces/team-a/secrets"]}}`));
  const port = await gatewayPort(cp, 'team-a', 'encoded');
  const limited = await cp.token('team-a', 'limited', ['gw']);
  // the plain forms are refused, as configured
  assert.equal((await get(port, '/api/v1/namespaces/team-a/secrets', appA)).status, 403);
  assert.equal((await get(port, '/api/v1/namespaces/team-a/configmaps', limited)).status, 403);
  // and so are their encodings: the filters and the route choice see the decoded path
  for (const p of ['/api/v1/namespaces/team-a/%73ecrets', '/api/v1/namespaces/team-a/secret%73', '/api/v1/namespaces/team-a/%73%65crets/a-secret']) {
    const r = await get(port, p, appA);
    assert.equal(r.status, 403, `${p}: ${r.text}`);
    assert.match(r.json.message, /rejectPaths/, p);
  }
  for (const p of ['/api/v1/namespaces/team-a/%63onfigmaps', '/api/v1/namespaces/team-%61/configmaps', '/api/v1/namespaces/team-a/configmap%73']) {
    const r = await get(port, p, limited);
    assert.equal(r.status, 403, `${p}: ${r.text}`);
    assert.match(r.json.message, /may not use route configmaps/, p);
  }
  // what is allowed still works when encoded, and reaches the apiserver as the same path
  const ok = await get(port, '/api/v1/namespaces/team-a/%63onfigmaps', appA);
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.json.kind, 'ConfigMapList');
  // double encoding is refused before anything else
  assert.equal((await get(port, '/api/v1/namespaces/team-a/%2573ecrets', appA)).status, 400);
});

test('3. the services-proxy URL form is the route: its methods, prefix, rewrite and grants apply', async () => {
  await applyYaml(cp, gw('team-a', 'svc', `
  access:
    - {serviceAccounts: [{namespace: team-a, name: app}], routes: [ledger-read]}
    - {serviceAccounts: [{namespace: team-a, name: limited}], routes: [kube-api]}
  routes:
    - {name: ledger-read, pathPrefix: /ledger/v1/, rewritePrefix: /v1/, methods: [GET], service: {name: ledger, port: http}}
    - {name: kube-api, pathPrefix: /, apiserver: {}}`));
  const port = await gatewayPort(cp, 'team-a', 'svc');
  const limited = await cp.token('team-a', 'limited', ['gw']);
  const sp = '/api/v1/namespaces/team-a/services/ledger:http/proxy';
  // the path form and the services-proxy form reach the same upstream path
  const viaPath = await get(port, '/ledger/v1/accounts', appA);
  const viaProxy = await get(port, `${sp}/v1/accounts`, appA);
  assert.equal(viaPath.status, 200, viaPath.text);
  assert.equal(viaProxy.status, 200, viaProxy.text);
  assert.equal(viaPath.json.path, '/v1/accounts');
  assert.equal(viaProxy.json.path, '/v1/accounts');
  // methods the route does not allow: the path form leaves the route (here for kube-api, which app
  // may not use: 403), so no route serves the request on that Service (404); it never reaches it
  for (const method of ['DELETE', 'POST']) {
    const a = await get(port, '/ledger/v1/accounts', appA, method);
    const b = await get(port, `${sp}/v1/accounts`, appA, method);
    assert.equal(a.status, 403, `${method}: ${a.text}`);
    assert.equal(b.status, 404, `${method}: ${b.text}`);
    assert.match(b.json.message, /no route of gateway team-a\/svc serves/, method);
  }
  // a path outside what the route forwards (its rewritePrefix): not served
  const outside = await get(port, `${sp}/admin`, appA);
  assert.equal(outside.status, 404, outside.text);
  // a caller not granted the route gets 403, exactly as with the path form
  const a = await get(port, '/ledger/v1/accounts', limited);
  const b = await get(port, `${sp}/v1/accounts`, limited);
  assert.equal(a.status, 403, a.text);
  assert.equal(b.status, 403, b.text);
});

test('4. one team\'s regex cannot stall the process: RE2, linear time', async () => {
  await applyYaml(cp, gw('team-a', 'redos', `
  access: [{serviceAccounts: [{namespace: team-a, name: app}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {acceptPaths: ["^/(a+)+$"]}}]`));
  const port = await gatewayPort(cp, 'team-a', 'redos');
  const bPort = await gatewayPort(cp, 'team-b', 'b-gw');
  const evil = '/' + 'a'.repeat(64) + '!';
  // curl's --max-time (20 s) bounds each call: a backtracking engine needs ~2^64 steps here
  const [r, healthz, other] = await Promise.all([
    curl(`http://127.0.0.1:${port}${evil}`, bearer(appA)),
    new Promise((res) => setTimeout(res, 200)).then(() => curl(`http://127.0.0.1:${op.adminPort}/healthz`)),
    new Promise((res) => setTimeout(res, 200)).then(() => curl(`http://127.0.0.1:${bPort}/api/v1/namespaces/team-b/secrets`, bearer(appB))),
  ]);
  assert.equal(r.status, 403, r.body);
  assert.match(JSON.parse(r.body).message, /is not accepted by any of spec.routes\[0\].apiserver.acceptPaths of route kube-api/);
  assert.equal(healthz.status, 200);
  assert.equal(other.status, 403, other.body); // team-b's app has no RBAC: the apiserver answered
  assert.match(JSON.parse(other.body).message, /system:serviceaccount:team-b:app/);
  // the same regex still matches what it should: accepted, so the apiserver answers (app may not get /aaaa)
  const accepted = await curl(`http://127.0.0.1:${port}/aaaa`, bearer(appA));
  assert.equal(accepted.status, 403, accepted.body);
  assert.match(JSON.parse(accepted.body).message, /cannot get path "\/aaaa"/);
});

test('4. one team\'s filters that cost milliseconds a request run off the event loop: another team is answered meanwhile', async () => {
  // patterns whose DFA builds a state per character of a path of a, b and /: RE2, linear, but slow
  const hostile = Array.from({ length: 16 }, (_, i) => `"[ab/]*a[ab/]{${40 + i}}[0-9]"`).join(', ');
  await applyYaml(cp, gw('team-a', 'redos', `
  access: [{serviceAccounts: [{namespace: team-a, name: app}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {rejectPaths: [${hostile}]}}]`));
  await waitObserved(cp, 'team-a', 'redos');
  const port = await gatewayPort(cp, 'team-a', 'redos');
  const bPort = await gatewayPort(cp, 'team-b', 'b-gw');
  let seed = 11;
  // (1,500 characters: tens of ms a check, far under the 250 ms a check may take on a loaded machine)
  const path = () => '/api/a' + Array.from({ length: 1500 }, () => 'ab/'[(seed = (seed * 1103515245 + 12345) & 0x7fffffff) % 3]).join('').replace(/\/+/g, '/') + 'b';
  const order: string[] = [];
  const mine = Promise.all(Array.from({ length: 4 }, () => curl(`http://127.0.0.1:${port}${path()}`, bearer(appA)).then((r) => (order.push('team-a'), r))));
  const other = new Promise((res) => setTimeout(res, 50))
    .then(() => curl(`http://127.0.0.1:${bPort}/api/v1/namespaces/team-b/secrets`, bearer(appB))).then((r) => (order.push('team-b'), r));
  const [as, b] = await Promise.all([mine, other]);
  for (const r of as) {
    // not rejected by the gateway: the apiserver answers (team-a's app may not get these paths)
    assert.equal(r.status, 403, r.body);
    assert.match(JSON.parse(r.body).message, /system:serviceaccount:team-a:app/);
  }
  assert.equal(b.status, 403, b.body); // team-b's app has no RBAC: the apiserver answered
  assert.equal(order[0], 'team-b', `team-b was answered while team-a's paths were checked on the filter thread: ${order.join(', ')}`);
  // the same filters still refuse what they should
  const refused = await curl(`http://127.0.0.1:${port}/api/b${'a'.repeat(50)}7`, bearer(appA));
  assert.equal(refused.status, 403, refused.body);
  assert.match(JSON.parse(refused.body).message, /is rejected by spec\.routes\[0\]\.apiserver\.rejectPaths\[0\]/);
});

test('4. a regex RE2 cannot compile is InvalidRegex with the engine\'s message', async () => {
  await applyYaml(cp, gw('team-a', 'lookbehind', `
  access: [{serviceAccounts: [{namespace: team-a, name: app}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {rejectPaths: ["(?<=x)secrets"]}}]`));
  const g = await waitObserved(cp, 'team-a', 'lookbehind');
  const accepted = condition(g, 'Accepted');
  assert.equal(accepted.status, 'False');
  assert.equal(accepted.reason, 'InvalidRegex');
  assert.match(accepted.message, /rejectPaths\[0\].*\(\?<=x\)secrets.*error parsing regexp/);
  // patterns that compile, but to more RE2 instructions than a route may have (each request's path meets them all)
  await applyYaml(cp, gw('team-a', 'lookbehind', `
  access: [{serviceAccounts: [{namespace: team-a, name: app}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {rejectPaths: ["[ab]*a[ab]{1000}x", "[ab]*b[ab]{1000}x", "[ab]*a[ab]{100}y"]}}]`));
  const big = condition(await waitObserved(cp, 'team-a', 'lookbehind'), 'Accepted');
  assert.equal(big.status, 'False');
  assert.equal(big.reason, 'InvalidRegex');
  assert.match(big.message, /^spec\.routes\[0\]\.apiserver: .* compile to more than the 2048 RE2 instructions a route may have/);
});

test('6. pathPrefix matches whole path elements', async () => {
  await applyYaml(cp, gw('team-a', 'prefix', `
  access: [{serviceAccounts: [{namespace: team-a, name: app}]}]
  routes: [{name: own-ns, pathPrefix: /api/v1/namespaces/team-a, apiserver: {}}]`));
  const port = await gatewayPort(cp, 'team-a', 'prefix');
  assert.equal((await get(port, '/api/v1/namespaces/team-a/configmaps', appA)).status, 200);
  assert.equal((await get(port, '/api/v1/namespaces/team-a', appA)).status, 403); // routed; the apiserver decides (no get on namespaces)
  const r = await get(port, '/api/v1/namespaces/team-a-prod/configmaps', appA);
  assert.equal(r.status, 404, r.text);
  assert.equal(r.json.reason, 'NotFound');
  assert.match(r.json.message, /no route/);
});

test('7. two Authorization headers are refused (401, a malformed Authorization)', async () => {
  const port = await gatewayPort(cp, 'team-b', 'b-gw');
  const two = await rawGet(port, '/api/v1/namespaces/team-b/configmaps', [`Authorization: Bearer ${appB}`, `Authorization: Bearer ${appA}`]);
  assert.equal(two.status, 401, two.head);
  assert.match(two.head, /www-authenticate: Bearer/i);
  const bad = await rawGet(port, '/api/v1/namespaces/team-b/configmaps', ['Authorization: Bearer garbage', `Authorization: Bearer ${appB}`]);
  assert.equal(bad.status, 401, bad.head);
  // one header is fine (the apiserver answers: team-b's app has no RBAC on configmaps)
  const one = await rawGet(port, '/api/v1/namespaces/team-b/configmaps', [`Authorization: Bearer ${appB}`]);
  assert.equal(one.status, 403, one.head);
  assert.match(one.body, /system:serviceaccount:team-b:app/);
});

test('5. a port another gateway holds is never taken from it: the newcomer is PortConflict, also across a restart', async () => {
  const held = await gatewayPort(cp, 'team-b', 'b-gw');
  // a team-a gateway asking for team-b's (allocated) port
  await applyYaml(cp, gw('team-a', 'squat', `
  listener: {port: ${held}}
  access: [{serviceAccounts: [{namespace: team-a, name: app}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {}}]`));
  const squat = await waitObserved(cp, 'team-a', 'squat');
  assert.equal(condition(squat, 'Accepted').reason, 'PortConflict', JSON.stringify(squat.status));
  // team-b's gateway is not named to team-a
  assert.match(condition(squat, 'Accepted').message, /port \d+ is used by a gateway of another namespace/);
  assert.doesNotMatch(JSON.stringify(squat.status), /b-gw|team-b/);
  // an older team-a gateway switching to that port does not get it either
  const elder = await getGateway(cp, 'team-a', 'elder');
  assert.ok(elder.metadata.creationTimestamp <= (await getGateway(cp, 'team-b', 'b-gw')).metadata.creationTimestamp);
  await applyYaml(cp, gw('team-a', 'elder', `
  listener: {port: ${held}}
  access: [{serviceAccounts: [{namespace: team-a, name: app}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {}}]`));
  assert.equal(condition(await waitObserved(cp, 'team-a', 'elder'), 'Accepted').reason, 'PortConflict');
  const stillB = async () => {
    const b = await getGateway(cp, 'team-b', 'b-gw');
    assert.equal(b.status.listener.port, held);
    assert.equal(condition(b, 'Ready').status, 'True');
    const r = await get(held, '/api', appB);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.kind, 'APIVersions');
    // when it was given the port, kept by the apiserver (a record's time decides between two records of a port)
    assert.match(b.status.listener.since, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    return b.status.listener.since as string;
  };
  const since = await stillB();
  // after a restart the holder gets its port back first, whatever order the gateways are reconciled in
  await op.stop();
  op = await startChartOperator(cp, { args: operatorArgs, portRange: op.portRange });
  await waitObserved(cp, 'team-a', 'squat');
  assert.equal(await stillB(), since, 'not given again: the same time');
  assert.equal(condition(await getGateway(cp, 'team-a', 'squat'), 'Accepted').reason, 'PortConflict');
  assert.equal(condition(await getGateway(cp, 'team-a', 'elder'), 'Accepted').reason, 'PortConflict');
  // team-b deletes its gateway and makes it again (kubectl replace --force, a reinstall): the port
  // stays team-b's meanwhile (its old Service and clients still send team-b's requests there), and
  // the gateway made again gets it back
  await cp.kubectl(['delete', 'agw', 'b-gw', '-n', 'team-b']);
  const told = await waitFor('squat told the port is held', async () => {
    const c = condition(await getGateway(cp, 'team-a', 'squat'), 'Accepted');
    return /given up by a gateway of another namespace less than 300 s ago/.test(c?.message ?? '') ? c : undefined;
  }, 15_000);
  assert.equal(told.reason, 'PortConflict');
  assert.doesNotMatch(told.message, /b-gw|team-b/);
  const closed = await get(held, '/api', appB).catch((err: Error) => err);
  assert.ok(closed instanceof Error, 'no one listens on the port meanwhile');
  await applyYaml(cp, gw('team-b', 'b-gw', `
  access: [{serviceAccounts: [{namespace: team-b, name: app}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {}}]`));
  assert.equal(await gatewayPort(cp, 'team-b', 'b-gw'), held);
  await stillB();
  assert.equal(condition(await getGateway(cp, 'team-a', 'squat'), 'Accepted').reason, 'PortConflict');
  await cp.kubectl(['delete', 'agw', 'squat', 'elder', '-n', 'team-a']);
});

test('5. one team cannot take every port: gateways over --max-gateways-per-namespace wait (TooManyGateways)', async () => {
  await applyYaml(cp, namespaceYaml('team-c', []));
  const many = Array.from({ length: maxPerNamespace }, (_, i) => gw('team-c', `g${i}`, `
  access: [{groups: [system:serviceaccounts:team-c]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {}}]`)).join('\n---\n');
  await applyYaml(cp, many);
  for (let i = 0; i < maxPerNamespace; i++) await gatewayPort(cp, 'team-c', `g${i}`);
  await applyYaml(cp, gw('team-c', 'one-too-many', `
  access: [{groups: [system:serviceaccounts:team-c]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {}}]`));
  const over = await waitObserved(cp, 'team-c', 'one-too-many');
  assert.equal(condition(over, 'Accepted').reason, 'TooManyGateways');
  assert.equal(over.status.listener, undefined);
  // other namespaces are not limited by team-c's gateways
  await applyYaml(cp, gw('team-b', 'b-second', `
  access: [{serviceAccounts: [{namespace: team-b, name: app}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {}}]`));
  await gatewayPort(cp, 'team-b', 'b-second');
  // a place comes free: the waiting gateway is served
  await cp.kubectl(['delete', 'agw', 'g0', '-n', 'team-c']);
  await gatewayPort(cp, 'team-c', 'one-too-many');
  await cp.kubectl(['delete', 'agw', '--all', '-n', 'team-c']);
});

test('5. the operator never writes an object the gateway does not own (a team\'s own agw-NAME Service stays untouched)', async () => {
  // one ready "replica" of the chart's operator, so gateways are exposed in the cluster
  await readyReplica(cp, op.rendered);
  // team-a's own Service that happens to be named like a gateway's
  await cp.kubectl(['create', 'service', 'clusterip', 'agw-mine', '-n', 'team-a', '--tcp=80:8080']);
  const before = (await cp.api('GET', '/api/v1/namespaces/team-a/services/agw-mine')).body;
  await applyYaml(cp, gw('team-a', 'mine', `
  access: [{serviceAccounts: [{namespace: team-a, name: app}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {}}]`));
  const g = await waitFor('mine ExposureConflict', async () => {
    const x = await getGateway(cp, 'team-a', 'mine');
    return condition(x, 'Programmed')?.reason === 'ExposureConflict' ? x : undefined;
  }, 20_000);
  assert.match(condition(g, 'Programmed').message, /Service team-a\/agw-mine exists and is not owned by this AccessGateway/);
  assert.equal(g.status.listener.url, undefined);
  const after = (await cp.api('GET', '/api/v1/namespaces/team-a/services/agw-mine')).body;
  assert.equal(after.metadata.resourceVersion, before.metadata.resourceVersion);
  assert.equal(after.metadata.ownerReferences, undefined);
  assert.equal((await cp.api('GET', '/apis/discovery.k8s.io/v1/namespaces/team-a/endpointslices/agw-mine')).status, 404);
  // once the team removes its Service, the gateway gets its own
  await cp.kubectl(['delete', 'service', 'agw-mine', '-n', 'team-a']);
  const ready = await waitFor('mine exposed', async () => {
    const x = await getGateway(cp, 'team-a', 'mine');
    return x.status?.listener?.url ? x : undefined;
  }, 20_000);
  assert.equal(ready.status.listener.url, 'http://agw-mine.team-a.svc');
  const svc = (await cp.api('GET', '/api/v1/namespaces/team-a/services/agw-mine')).body;
  assert.equal(svc.metadata.ownerReferences[0].uid, ready.metadata.uid);
});

test('8. a team moving its gateways while watches drain on them does not hold up another team\'s gateway', async () => {
  // (the operator drains for 60 s here: a move that waited for its old listener would hold one of
  // the controller's two workers, shared by every team, that long)
  await cp.kubectl(['create', 'role', 'cm-watch', '-n', 'team-a', '--verb=watch', '--resource=configmaps']);
  await cp.kubectl(['create', 'rolebinding', 'app-cm-watch', '-n', 'team-a', '--role=cm-watch', '--serviceaccount=team-a:app']);
  const mover = (name: string, port?: number) => gw('team-a', name, `${port ? `  listener: {port: ${port}}\n` : ''}\
  access: [{serviceAccounts: [{namespace: team-a, name: app}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {}}]`);
  await applyYaml(cp, `${mover('mover1')}\n---\n${mover('mover2')}`);
  const old = [await gatewayPort(cp, 'team-a', 'mover1'), await gatewayPort(cp, 'team-a', 'mover2')];
  const watches = await Promise.all(old.map((p) => openWatch(p, '/api/v1/namespaces/team-a/configmaps?watch=1', appA)));
  const moved = [await freePort(), await freePort()];
  await applyYaml(cp, `${mover('mover1', moved[0])}\n---\n${mover('mover2', moved[1])}`);
  try {
    for (const p of old) await waitListenerClosed(p, 15_000); // both moves are being applied
    await applyYaml(cp, gw('team-b', 'b-third', `
  access: [{serviceAccounts: [{namespace: team-b, name: app}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {}}]`));
    const bPort = await gatewayPort(cp, 'team-b', 'b-third', 30_000);
    assert.equal((await get(bPort, '/api', appB)).status, 200);
    assert.deepEqual(watches.map((w) => w.closed), [false, false], 'team-b was served while team-a\'s watches still drained');
    for (const p of moved) assert.equal((await get(p, '/api', appA)).status, 200, 'team-a is served on its new ports');
  } finally {
    for (const w of watches) w.socket.destroy();
  }
  await cp.kubectl(['delete', 'agw', 'mover1', 'mover2', '-n', 'team-a']);
  await cp.kubectl(['delete', 'agw', 'b-third', '-n', 'team-b']);
});

test('9. an EndpointSlice cannot point a team\'s route at another team\'s pod: an address is used only when it is an IP of the running pod its endpoint names, in the Service\'s namespace', async () => {
  const [mine, theirs] = [net.hosts[0]!.ip, net.hosts[1]!.ip];
  const hits = async () => ((await (await fetch(`${privateB.url}/__requests`)).json()) as { requests: number }).requests;
  const before = await hits();
  const runningPod = (name: string, ip: string, hostNetwork = false) => runningPodIn(cp, 'team-a', name, ip, { hostNetwork });
  await runningPod('a-own', mine);
  await runningPod('a-host', theirs, true); // on the host network: its IP is its node's
  const sliceOf = (endpoints: string) => serviceYaml('team-a', 'borrowed', [], endpoints);
  // a team that may write EndpointSlices (the default roles may not; the harness writes it):
  // team-b's pod IP named as team-b's pod, as a team-a pod of that name, as no pod, as a team-a
  // pod that has another IP, and as a team-a pod on the host network; a pod that is not there
  await applyYaml(cp, sliceOf(`[{addresses: [${theirs}], targetRef: {kind: Pod, namespace: team-b, name: ${hostPod(theirs)}}},
  {addresses: [${theirs}], targetRef: {kind: Pod, name: ${hostPod(theirs)}}}, {addresses: [${theirs}]}, {addresses: [${theirs}], targetRef: {kind: Pod, name: a-own}},
  {addresses: [${theirs}], targetRef: {kind: Pod, name: a-host}}, {addresses: [${mine}], targetRef: {kind: Pod, name: a-late}}]`));
  await applyYaml(cp, gw('team-a', 'reach', `
  access: [{serviceAccounts: [{namespace: team-a, name: app}]}]
  routes: [{name: b, pathPrefix: /, service: {name: borrowed, port: 80}}]`));
  const reach = await waitObserved(cp, 'team-a', 'reach');
  assert.equal(condition(reach, 'ResolvedRefs').reason, 'NoReadyEndpoints', JSON.stringify(reach.status));
  assert.match(condition(reach, 'ResolvedRefs').message, /Service team-a\/borrowed has no ready endpoints \(2 ready addresses left out: an address must be an IP of the running pod its endpoint's targetRef names in team-a; see --endpoint-addresses\)/);
  const port = reach.status.listener.port;
  const refused = await get(port, '/x', appA);
  assert.equal(refused.status, 503, refused.text);

  // the pod the slice named turns up (after the slice): its IP is used; once deleted, it is not
  await runningPod('a-late', mine);
  await waitFor('a pod that turned up used', async () => (await get(port, '/x', appA)).status === 200, 15_000);
  await cp.kubectl(['delete', 'pod', 'a-late', '-n', 'team-a', '--wait=false']); // bound to a node: deletionTimestamp set, the pod stays
  await waitFor('deleted pod left out', async () => (await get(port, '/x', appA)).status === 503, 15_000);
  // the slice moved to another Service: the one it left has no endpoints left
  await applyYaml(cp, sliceOf(`[{addresses: [${mine}], targetRef: {kind: Pod, name: a-own}}]`));
  await waitFor('own pod used', async () => (await get(port, '/x', appA)).status === 200, 15_000);
  await cp.kubectl(['label', 'endpointslice', 'borrowed-1', '-n', 'team-a', '--overwrite', 'kubernetes.io/service-name=elsewhere']);
  await waitFor('a slice that moved away left out', async () => (await get(port, '/x', appA)).status === 503, 15_000);
  assert.equal(await hits(), before, 'nothing reached team-b\'s pod');

  // what --endpoint-addresses any gives up: the same slice then reaches team-b's pod
  await applyYaml(cp, sliceOf(`[{addresses: [${theirs}]}]`));
  await waitFor('slice back, still refused', async () => condition(await getGateway(cp, 'team-a', 'reach'), 'ResolvedRefs')?.reason === 'NoReadyEndpoints', 15_000);
  assert.equal((await get(port, '/x', appA)).status, 503);
  await op.stop();
  op = await startChartOperator(cp, { set: ['operator.endpointAddresses=any'], args: operatorArgs, portRange: op.portRange });
  await waitFor('any: the address is used', async () => (await get(port, '/x', appA).catch(() => ({ status: 0 }))).status === 200, 30_000);
  assert.ok(await hits() > before, 'with any, team-b\'s pod is reached');
  await op.stop();
  op = await startChartOperator(cp, { args: operatorArgs, portRange: op.portRange });
  await cp.kubectl(['delete', 'pod', 'a-own', 'a-host', 'a-late', '-n', 'team-a', '--force', '--grace-period=0']);
  await cp.kubectl(['delete', 'agw', 'reach', '-n', 'team-a']);
});

test('10. one team\'s labelled Secrets and ConfigMaps cannot fill the shared operator: past --max-labelled-mib-per-namespace they are set aside and its gateways naming one not served, another team\'s served throughout; under it again, read again', async () => {
  const ca = { a: await createListenerTLS(cp, 'team-a', 'a-tls'), b: await createListenerTLS(cp, 'team-b', 'b-tls') };
  for (const [ns, secret] of [['team-a', 'a-tls'], ['team-b', 'b-tls']]) {
    await applyYaml(cp, gw(ns!, 'secure', `
  listener: {tls: {secretName: ${secret}}}
  access: [{serviceAccounts: [{namespace: ${ns}, name: app}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {}}]`));
  }
  const port = { a: await gatewayPort(cp, 'team-a', 'secure'), b: await gatewayPort(cp, 'team-b', 'secure') };
  const version = (team: 'a' | 'b') => curl(`https://127.0.0.1:${port[team]}/version`, ['--cacert', ca[team].certFile, ...bearer(team === 'a' ? appA : appB)])
    .then((r) => r.status, () => 0);
  assert.equal(await version('a'), 200);
  // team-a labels 1.2 MiB: two ConfigMaps of 600 KiB (each within the apiserver's object size)
  const file = join(cp.dir, 'pad.txt');
  writeFileSync(file, 'x'.repeat(600 * 1024));
  for (const name of ['pad-1', 'pad-2']) {
    await cp.kubectl(['create', 'configmap', name, '-n', 'team-a', `--from-file=pad=${file}`]);
    await cp.kubectl(['label', 'configmap', name, '-n', 'team-a', 'access-gateway.io/ca-bundle=true']);
  }
  const aside = await waitFor('team-a set aside', async () => {
    const g = await getGateway(cp, 'team-a', 'secure');
    return condition(g, 'ResolvedRefs')?.reason === 'InvalidCertificateRef' ? g : undefined;
  }, 20_000);
  assert.match(condition(aside, 'ResolvedRefs').message, /namespace team-a .* more than 1 MiB \(the operator's --max-labelled-mib-per-namespace\)/);
  await waitFor('team-a not served', async () => (await version('a')) === 0, 15_000);
  // team-b: its certificate read, served throughout
  assert.equal(await version('b'), 200);
  const b = await waitObserved(cp, 'team-b', 'secure');
  assert.equal(condition(b, 'Ready').status, 'True');
  assert.equal(condition(b, 'ResolvedRefs').reason, 'ResolvedRefs');
  // under the bound again: team-a's objects are listed again (the chart's rights) and served
  await cp.kubectl(['delete', 'configmap', 'pad-2', '-n', 'team-a']);
  await waitFor('team-a served again', async () => (await version('a')) === 200, 30_000);
  assert.equal(condition(await waitObserved(cp, 'team-a', 'secure'), 'Ready').status, 'True');
  await cp.kubectl(['delete', 'agw', 'secure', '-n', 'team-a']);
  await cp.kubectl(['delete', 'agw', 'secure', '-n', 'team-b']);
  await cp.kubectl(['delete', 'configmap', 'pad-1', '-n', 'team-a']);
});

test('11. one team\'s Pending pods (8.7 MB each as JSON), Services (1.5 MB) and labelled ConfigMaps (6 MB) do not stop the shared operator: they are read in protobuf, custom resources (JSON) in pages it can read, and a restart serves every team', async () => {
  // 1.45 MB of `<` fits in etcd as a pod; the apiserver's JSON writes each as \u003c (8.7 MB)
  const pad = '<'.repeat(1_450_000);
  for (let i = 0; i < 3; i++) {
    const made = await cp.api('POST', '/api/v1/namespaces/team-a/pods', { apiVersion: 'v1', kind: 'Pod', metadata: { name: `fat-${i}` },
      spec: { nodeSelector: { nowhere: 'true' }, containers: [{ name: 'c', image: 'none', env: [{ name: 'PAD', value: pad }] }] } });
    assert.equal(made.status, 201, JSON.stringify(made.body).slice(0, 300));
  }
  // 260 KB of `<` in an annotation (the most an object's may hold) is 1.56 MB as JSON: 12 Services
  // or ReferenceGrants are 18.7 MB; 3 ConfigMaps of 1 MB of `<` labelled as CA bundles, 18 MB
  await cp.kubectl(['apply', '--server-side', '-f', referenceGrantCRD()]);
  const fat = Array.from({ length: 12 }, (_, i) => `fat-${i}`);
  const annotated = (name: string) => ({ name, annotations: { pad: '<'.repeat(260_000) } });
  for (const name of fat) {
    const svc = await cp.api('POST', '/api/v1/namespaces/team-a/services', { apiVersion: 'v1', kind: 'Service', metadata: annotated(name), spec: { ports: [{ port: 80 }] } });
    assert.equal(svc.status, 201, JSON.stringify(svc.body).slice(0, 300));
    const grant = await cp.api('POST', '/apis/gateway.networking.k8s.io/v1beta1/namespaces/team-a/referencegrants', { apiVersion: 'gateway.networking.k8s.io/v1beta1', kind: 'ReferenceGrant',
      metadata: annotated(name), spec: { from: [{ group: 'access-gateway.io', kind: 'AccessGateway', namespace: 'team-a' }], to: [{ group: '', kind: 'Service', name: 'none' }] } });
    assert.equal(grant.status, 201, JSON.stringify(grant.body).slice(0, 300));
  }
  for (const name of fat.slice(0, 3)) {
    const made = await cp.api('POST', '/api/v1/namespaces/team-a/configmaps', { apiVersion: 'v1', kind: 'ConfigMap',
      metadata: { name, labels: { 'access-gateway.io/ca-bundle': 'true' } }, data: { pad: '<'.repeat(1_000_000) } });
    assert.equal(made.status, 201, JSON.stringify(made.body).slice(0, 300));
  }
  await op.stop();
  op = await startChartOperator(cp, { args: operatorArgs, portRange: op.portRange });
  const r = await get(await gatewayPort(cp, 'team-b', 'b-gw'), '/api', appB);
  assert.equal(r.status, 200, r.text);
  const halved = (informer: string) => logLines(op, (l) => l.msg === 'list page too large; asking for fewer objects a page' && l.informer === informer).map((l) => l.limit);
  // (the names asked for are the informers' own: each has listed since the restart)
  const scraped = await scrapeMetrics(cp, op.adminPort);
  for (const name of ['pods', 'services', 'configmaps(ca-bundle)', 'referencegrants']) {
    const line = scraped.split('\n').find((l) => l.startsWith(`access_gateway_informer_last_sync_timestamp_seconds{informer="${name}"} `));
    assert.ok(line && Number(line.split(' ')[1]) > Date.now() / 1000 - 120, `informer ${name} has listed: ${line}`);
  }
  // as JSON, the 3 pods (26 MB) were asked for again and again, down to one a page; the Services
  // down to 12, the ConfigMaps to 2
  assert.deepEqual(halved('pods'), []);
  assert.deepEqual(halved('services'), []);
  assert.deepEqual(halved('configmaps(ca-bundle)'), []);
  // a page of 100 ReferenceGrants (a custom resource: JSON, ~19 MB) was asked for again with fewer
  assert.deepEqual(halved('referencegrants'), [50, 25, 12, 6]);
  await cp.kubectl(['delete', 'pod', ...fat.slice(0, 3), '-n', 'team-a', '--force', '--grace-period=0']);
  await cp.kubectl(['delete', 'service,referencegrant', ...fat, '-n', 'team-a']);
  await cp.kubectl(['delete', 'configmap', ...fat.slice(0, 3), '-n', 'team-a']);
});

/** A request through the gateway on `port` whose answer has begun (200) and goes on. */
async function openWatch(port: number, path: string, token: string) {
  const socket = connect(port, '127.0.0.1');
  const w = { socket, closed: false };
  socket.on('error', () => {}).on('close', () => { w.closed = true; });
  let head = '';
  await new Promise<void>((resolve, reject) => {
    socket.on('data', (c: Buffer) => {
      head += c.toString('latin1');
      if (head.includes('\r\n\r\n')) (/^HTTP\/1\.1 200 /.test(head) ? resolve() : reject(new Error(head.slice(0, 200))));
    });
    socket.write(`GET ${path} HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${token}\r\n\r\n`);
  });
  return w;
}
