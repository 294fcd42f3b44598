// "Why was I denied?": every 401/403 Status body names the step and the rule that refused;
// /.well-known/access-gateway/can-i answers the caller's own question on the listener; and
// `kubectl access-gateway can-i` answers it offline for anyone, with the apiserver's RBAC asked
// by a SubjectAccessReview. Real kubectl and curl, the chart's least-privilege operator, two teams.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startControlPlane, type ControlPlane } from '../support/control-plane.js';
import { startChartOperator } from '../support/chart-operator.js';
import { kubectlPluginEnv } from '../support/operator.js';
import { waitFor } from '../support/procs.js';
import {
  applyYaml, bearer, createListenerTLS, curl, gatewayPort, installCRD, namespaceYaml, runKubectl, tokenKubeconfig, type KubectlResult,
} from '../support/cluster.js';
import type { CertPair } from '../support/certs.js';

const ns = 'team-a';
let cp: ControlPlane;
let op: Awaited<ReturnType<typeof startChartOperator>>;
let ca: CertPair;
let url: string;
let pluginEnv: NodeJS.ProcessEnv;
const tokens: Record<string, string> = {};

/** kubectl with the plugin on PATH (as `npm install -g` would put it). */
function kubectl(args: string[]): Promise<KubectlResult> {
  return runKubectl(args, pluginEnv);
}

async function canI(who: string, method: string, path: string): Promise<any> {
  const r = await curl(`${url}/.well-known/access-gateway/can-i?method=${method}&path=${encodeURIComponent(path)}`, ['--cacert', ca.certFile, ...bearer(tokens[who]!)]);
  assert.equal(r.status, 200, r.body);
  return JSON.parse(r.body);
}

const verdicts = (e: any) => e.steps.map((s: any) => `${s.step}:${s.allowed === null ? '?' : s.allowed ? 'yes' : 'no'}`);

before(async () => {
  cp = await startControlPlane();
  await installCRD(cp);
  await applyYaml(cp, namespaceYaml(ns, ['reader', 'oncall', 'stranger', 'person']));
  await applyYaml(cp, namespaceYaml('team-b', ['intruder']));
  await cp.kubectl(['create', 'role', 'cm-reader', '-n', ns, '--verb=get,list', '--resource=configmaps']);
  // a person who may read gateways (and nothing else: no SubjectAccessReviews)
  await cp.kubectl(['create', 'role', 'agw-reader', '-n', ns, '--verb=get', '--resource=accessgateways.access-gateway.io']);
  await cp.kubectl(['create', 'rolebinding', 'person-agw', '-n', ns, '--role=agw-reader', `--serviceaccount=${ns}:person`]);
  op = await startChartOperator(cp);
  ca = await createListenerTLS(cp, ns, 'api-tls');
  await applyYaml(cp, `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: api, namespace: ${ns}}
spec:
  listener: {tls: {secretName: api-tls}}
  authentication: {audiences: [gw]}
  access:
    - serviceAccounts: [{namespace: ${ns}, name: reader}]
      routes: [kube-api]
    - serviceAccounts: [{namespace: ${ns}, name: oncall}]
      notAfter: "2020-01-01T00:00:00Z"
  routes:
    - name: status
      pathPrefix: /version
      apiserver: {}
    - name: kube-api
      pathPrefix: /
      apiserver:
        acceptPaths: ["^/api/.*", "^/apis/.*"]
        rejectPaths: ["^/api/.*/pods/.*/exec"]
        rejectMethods: ["^DELETE$"]
`);
  url = `https://127.0.0.1:${await gatewayPort(cp, ns, 'api')}`;
  for (const [n, sa] of [[ns, 'reader'], [ns, 'oncall'], [ns, 'stranger'], ['team-b', 'intruder']] as const) tokens[sa] = await cp.token(n, sa, ['gw']);
  pluginEnv = kubectlPluginEnv(cp.dir);
}, { timeout: 240_000 });

after(async () => {
  await op?.stop();
  await cp?.stop();
});

test('every refusal names its step and rule, in the Status body and in what kubectl prints', async () => {
  const tls = ['--cacert', ca.certFile];
  const cases: [string, string[], number, string, string, RegExp][] = [
    ['no token', [], 401, 'authentication', 'spec.authentication', /bearer token/],
    ['stranger', bearer(tokens.stranger!), 403, 'access', 'spec.access', /system:serviceaccount:team-a:stranger is not allowed to use this gateway: no rule of spec.access names it/],
    ['intruder', bearer(tokens.intruder!), 403, 'access', 'spec.access', /team-b:intruder is not allowed/],
    ['oncall (expired)', bearer(tokens.oncall!), 403, 'access', 'spec.access[1]', /spec.access\[1\] names it, but its notAfter 2020-01-01T00:00:00.000Z has passed/],
  ];
  for (const [who, auth, status, step, field, message] of cases) {
    const r = await curl(`${url}/api/v1/namespaces/${ns}/configmaps`, [...tls, ...auth]);
    assert.equal(r.status, status, `${who}: ${r.body}`);
    const body = JSON.parse(r.body);
    assert.match(body.message, message, who);
    assert.deepEqual(body.details.causes[0], { reason: status === 401 ? 'AGW_ERR_UNAUTHENTICATED' : 'AGW_ERR_FORBIDDEN', message: `refused by the gateway at step ${step}`, field }, who);
    assert.doesNotMatch(r.body, /eyJ/, 'never a token');
  }
  const reader = bearer(tokens.reader!);
  const route = await curl(`${url}/version`, [...tls, ...reader]);
  assert.equal(route.status, 403);
  assert.equal(JSON.parse(route.body).details.causes[0].field, 'spec.access[0].routes');
  assert.match(JSON.parse(route.body).message, /may not use route status of gateway team-a\/api: spec.access\[0\] grants only kube-api/);
  const del = await curl(`${url}/api/v1/namespaces/${ns}/configmaps/x`, [...tls, ...reader, '-X', 'DELETE']);
  assert.equal(JSON.parse(del.body).details.causes[0].field, 'spec.routes[1].apiserver.rejectMethods[0]');
  const accept = await curl(`${url}/healthz`, [...tls, ...reader]);
  assert.equal(JSON.parse(accept.body).details.causes[0].field, 'spec.routes[1].apiserver.acceptPaths');
  // kubectl prints the message: the rule is there for the person to read
  const kc = tokenKubeconfig(join(cp.dir, 'reader.kubeconfig'), url, tokens.reader!, { ca: ca.cert });
  const exec = await kubectl(['--kubeconfig', kc, 'get', '--raw', `/api/v1/namespaces/${ns}/pods/p/exec`]);
  assert.notEqual(exec.code, 0);
  assert.match(exec.err, /is rejected by spec.routes\[1\].apiserver.rejectPaths\[0\] "\^\/api\/\.\*\/pods\/\.\*\/exec" of route kube-api/);
});

test('the listener answers can-i for the caller itself: the gateway steps, then the apiserver RBAC', async () => {
  const path = `/api/v1/namespaces/${ns}/configmaps`;
  const before = await canI('reader', 'GET', path);
  assert.equal(before.kind, 'AccessGatewayReview');
  assert.equal(before.caller.username, 'system:serviceaccount:team-a:reader');
  assert.deepEqual(verdicts(before), ['access:yes', 'route:yes', 'filter:yes', 'rbac:no']);
  assert.equal(before.route, 'kube-api');
  assert.equal(before.steps[2].field, 'spec.routes[1].apiserver.acceptPaths[0]');
  assert.match(before.steps[3].message, /the apiserver says no: system:serviceaccount:team-a:reader may list configmaps in namespace team-a/);
  assert.equal(before.allowed, false);
  await cp.kubectl(['create', 'rolebinding', 'reader-cm', '-n', ns, '--role=cm-reader', `--serviceaccount=${ns}:reader`]);
  // answers are remembered for 10 s: the new binding shows within that
  const after = await waitFor('rbac yes', async () => {
    const e = await canI('reader', 'GET', path);
    return e.allowed === true ? e : undefined;
  }, 20_000, 2_000);
  assert.deepEqual(verdicts(after), ['access:yes', 'route:yes', 'filter:yes', 'rbac:yes']);
  assert.equal(after.allowed, true);
  // and the request itself agrees
  const r = await curl(`${url}${path}`, ['--cacert', ca.certFile, ...bearer(tokens.reader!)]);
  assert.equal(r.status, 200, r.body);
  const exec = await canI('reader', 'POST', `/api/v1/namespaces/${ns}/pods/p/exec`);
  assert.deepEqual(verdicts(exec), ['access:yes', 'route:yes', 'filter:no']);
  assert.equal(exec.steps[2].field, 'spec.routes[1].apiserver.rejectPaths[0]');
  // a caller no rule names learns that, and nothing of the routes
  const stranger = await canI('stranger', 'GET', path);
  assert.deepEqual(verdicts(stranger), ['access:no']);
  assert.doesNotMatch(JSON.stringify(stranger), /kube-api|acceptPaths/);
  assert.equal(stranger.gateway, undefined, 'nor whose gateway it is');
  assert.equal((await canI('stranger', 'GET', '/a//b')).gateway, undefined, 'nor when the path is refused first');
  assert.deepEqual((await canI('reader', 'GET', '/a//b')).gateway, { namespace: ns, name: 'api' }, 'a caller a rule names is told, whatever the path');
  assert.doesNotMatch(JSON.stringify(stranger), new RegExp(`${ns}/api|"name":"api"`));
  assert.deepEqual(before.gateway, { namespace: ns, name: 'api' });
  const bad = await curl(`${url}/.well-known/access-gateway/can-i?method=GET`, ['--cacert', ca.certFile, ...bearer(tokens.reader!)]);
  assert.equal(bad.status, 400, bad.body);
  const anon = await curl(`${url}/.well-known/access-gateway/can-i?path=/api`, ['--cacert', ca.certFile]);
  assert.equal(anon.status, 401);
  // each question may cost a SubjectAccessReview: one a second per caller, bursts of five
  const burst = await Promise.all(Array.from({ length: 8 }, () =>
    curl(`${url}/.well-known/access-gateway/can-i?path=/api/v1/namespaces/${ns}/pods`, ['--cacert', ca.certFile, ...bearer(tokens.oncall!)])));
  const codes = burst.map((r) => r.status).sort();
  assert.ok(codes.filter((c) => c === 200).length <= 6 && codes.includes(429), codes.join(','));
  assert.match(burst.find((r) => r.status === 429)!.headers, /retry-after: \d/i);
  assert.doesNotMatch(burst.find((r) => r.status === 429)!.body, new RegExp(`${ns}/api`));
});

test('kubectl access-gateway can-i evaluates offline for anyone, with RBAC asked by a SubjectAccessReview', async () => {
  const admin = cp.kubeconfig;
  const sa = `system:serviceaccount:${ns}:reader`;
  const yes = await kubectl(['access-gateway', 'can-i', '--kubeconfig', admin, '--gateway', `${ns}/api`, '--as', sa, 'list', `/api/v1/namespaces/${ns}/configmaps`]);
  assert.equal(yes.code, 0, yes.err + yes.out);
  assert.match(yes.out, /^access\s+yes\s+spec.access\[0\]/m);
  assert.match(yes.out, /^route\s+yes\s+spec.routes\[1\]\s+route kube-api/m);
  assert.match(yes.out, /^rbac\s+yes\s+-\s+the apiserver says yes: system:serviceaccount:team-a:reader may list configmaps in namespace team-a/m);
  assert.match(yes.out, /\nyes\n$/);
  const secrets = await kubectl(['access-gateway', 'can-i', '--kubeconfig', admin, '--gateway', `${ns}/api`, '--as', sa, 'get', `/api/v1/namespaces/${ns}/secrets/s`]);
  assert.equal(secrets.code, 1, secrets.out);
  assert.match(secrets.out, /^rbac\s+no\s+-\s+the apiserver says no: system:serviceaccount:team-a:reader may get secrets s in namespace team-a/m);
  const del = await kubectl(['access-gateway', 'can-i', '--kubeconfig', admin, '--gateway', `${ns}/api`, '--as', sa, 'delete', `/api/v1/namespaces/${ns}/configmaps/x`, '--output', 'json']);
  assert.equal(del.code, 1);
  const e = JSON.parse(del.out);
  assert.deepEqual(verdicts(e), ['access:yes', 'route:yes', 'filter:no']);
  assert.equal(e.steps[2].field, 'spec.routes[1].apiserver.rejectMethods[0]');
  const user = await kubectl(['access-gateway', 'can-i', '--kubeconfig', admin, '--gateway', `${ns}/api`, '--as', 'alice', '--group', 'devs', 'get', '/version']);
  assert.equal(user.code, 1);
  assert.match(user.out, /^caller\s+alice \[devs, system:authenticated\]/m);
  assert.match(user.out, /^access\s+no\s+spec.access\s+alice is not allowed to use this gateway: no rule of spec.access names it/m);
  // a person who may read the gateway but not ask RBAC: the gateway part, and RBAC unknown (exit 3)
  const person = tokenKubeconfig(join(cp.dir, 'person.kubeconfig'), cp.url, await cp.token(ns, 'person', []), { ca: cp.ca.cert });
  const unknown = await kubectl(['access-gateway', 'can-i', '--kubeconfig', person, '--gateway', `${ns}/api`, '--as', sa, 'list', `/api/v1/namespaces/${ns}/configmaps`]);
  assert.equal(unknown.code, 3, unknown.err + unknown.out);
  assert.match(unknown.out, /^rbac\s+\?\s+-\s+not answered \(.*(forbidden|Forbidden|403).*\)/m);
  assert.match(unknown.out, /\nunknown\n$/);
  // a gateway for people of an OIDC issuer: the question is about its rules, the issuer not asked
  await applyYaml(cp, `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: people, namespace: ${ns}}
spec:
  listener: {tls: {secretName: api-tls}}
  authentication: {audiences: [gw], issuers: ["https://idp.example.com"]}
  access: [{users: ["oidc:alice@example.com"]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {}}]
`);
  const alice = await kubectl(['access-gateway', 'can-i', '--kubeconfig', admin, '--gateway', `${ns}/people`, '--as', 'oidc:alice@example.com', 'get', '/version']);
  assert.equal(alice.code, 0, alice.err + alice.out);
  assert.match(alice.out, /^access\s+yes\s+spec.access\[0\]/m);
  const bob = await kubectl(['access-gateway', 'can-i', '--kubeconfig', admin, '--gateway', `${ns}/people`, '--as', 'oidc:bob@example.com', 'get', '/version']);
  assert.equal(bob.code, 1, bob.err + bob.out);
  const refused = await kubectl(['access-gateway', 'can-i', '--kubeconfig', person, '--gateway', 'team-b/api', '--as', sa, 'get', '/version']);
  assert.equal(refused.code, 2, 'no answer is not a no');
  assert.match(refused.err, /cannot read AccessGateway team-b\/api/);
});
