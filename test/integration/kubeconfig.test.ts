// `kubectl access-gateway kubeconfig` (the kubectl plugin: an executable named
// kubectl-access_gateway on PATH) writes a kubeconfig for a gateway; the real kubectl then reaches
// the gateway as the named service account, its exec credential plugin minting audience-bound
// tokens with TokenRequest from the person's own (least-privilege) kubeconfig.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startControlPlane, type ControlPlane } from '../support/control-plane.js';
import { kubectlPluginEnv, startOperator, type OperatorProc } from '../support/operator.js';
import { applyYaml, createListenerTLS, gatewayPort, installCRD, namespaceYaml, runKubectl, tokenKubeconfig, type KubectlResult } from '../support/cluster.js';
import type { CertPair } from '../support/certs.js';

const ns = 'team-k';
let cp: ControlPlane;
let op: OperatorProc;
let ca: CertPair;
let pluginEnv: NodeJS.ProcessEnv;

/** kubectl with the plugin found on PATH, next to the Node.js that runs it. */
function run(args: string[]): Promise<KubectlResult> {
  return runKubectl(args, pluginEnv);
}

before(async () => {
  cp = await startControlPlane();
  await installCRD(cp);
  await applyYaml(cp, namespaceYaml(ns, ['app', 'dev', 'nobody']));
  // app reads configmaps; dev (a person) may read the gateway and mint tokens for app only
  await cp.kubectl(['create', 'role', 'cm-reader', '-n', ns, '--verb=get,list', '--resource=configmaps']);
  await cp.kubectl(['create', 'rolebinding', 'app-cm', '-n', ns, '--role=cm-reader', `--serviceaccount=${ns}:app`]);
  await cp.kubectl(['create', 'configmap', 'app-settings', '-n', ns, '--from-literal=k=v']);
  await applyYaml(cp, `apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: gateway-user, namespace: ${ns}}
rules:
  - {apiGroups: [access-gateway.io], resources: [accessgateways], verbs: [get]}
  - {apiGroups: [""], resources: [serviceaccounts/token], resourceNames: [app], verbs: [create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: dev-gateway-user, namespace: ${ns}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: gateway-user}
subjects: [{kind: ServiceAccount, name: dev, namespace: ${ns}}]
`);
  op = await startOperator(cp);
  ca = await createListenerTLS(cp, ns, 'api-tls');
  await applyYaml(cp, `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: api, namespace: ${ns}}
spec:
  listener: {tls: {secretName: api-tls}}
  authentication: {audiences: [team-k-gateway]}
  access: [{serviceAccounts: [{namespace: ${ns}, name: app}]}]
  routes:
    - {name: kube-api, pathPrefix: /, apiserver: {}}
`);
  await gatewayPort(cp, ns, 'api');
  pluginEnv = kubectlPluginEnv(cp.dir);
}, { timeout: 180_000 });

after(async () => {
  await op?.stop();
  await cp?.stop();
});

test('kubectl access-gateway kubeconfig: kubectl then reaches the gateway as the service account, tokens minted on demand', async () => {
  const devConfig = tokenKubeconfig(join(cp.dir, 'dev.kubeconfig'), cp.url, await cp.token(ns, 'dev', []), { ca: cp.ca.cert });
  const file = join(cp.dir, 'gateway.kubeconfig');
  const made = await run(['access-gateway', 'kubeconfig', '--gateway', `${ns}/api`, '--service-account', 'app',
    '--certificate-authority', ca.certFile, '--kubeconfig', devConfig, '--output', file]);
  assert.equal(made.code, 0, made.err);
  const config = JSON.parse(readFileSync(file, 'utf8'));
  assert.match(config.clusters[0].cluster.server, /^https:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(config.users[0].user.exec.apiVersion, 'client.authentication.k8s.io/v1');
  assert.doesNotMatch(readFileSync(file, 'utf8'), /eyJ/, 'the kubeconfig holds no token');
  const who = await run(['--kubeconfig', file, 'auth', 'whoami', '-o', 'json']);
  assert.equal(who.code, 0, who.err);
  assert.equal(JSON.parse(who.out).status.userInfo.username, `system:serviceaccount:${ns}:app`);
  const cms = await run(['--kubeconfig', file, 'get', 'configmaps', '-o', 'name']);
  assert.equal(cms.code, 0, cms.err);
  assert.match(cms.out, /configmap\/app-settings/);
});

test('without --certificate-authority the listener CA comes from its Secret, for whoever may read it', async () => {
  const file = join(cp.dir, 'admin-gateway.kubeconfig');
  const made = await run(['access-gateway', 'kubeconfig', '--gateway', `${ns}/api`, '--service-account', 'app', '--kubeconfig', cp.kubeconfig, '--output', file]);
  assert.equal(made.code, 0, made.err);
  assert.ok(JSON.parse(readFileSync(file, 'utf8')).clusters[0].cluster['certificate-authority-data'], 'a CA');
  const who = await run(['--kubeconfig', file, 'auth', 'whoami', '-o', 'json']);
  assert.equal(who.code, 0, who.err);
  assert.equal(JSON.parse(who.out).status.userInfo.username, `system:serviceaccount:${ns}:app`);
  // the person who may not read Secrets is told to give the CA
  const devConfig = join(cp.dir, 'dev.kubeconfig');
  const refused = await run(['access-gateway', 'kubeconfig', '--gateway', `${ns}/api`, '--service-account', 'app', '--kubeconfig', devConfig]);
  assert.notEqual(refused.code, 0);
  assert.match(refused.err, /cannot read the listener's CA from Secret team-k\/api-tls .*give --certificate-authority FILE/);
});

test('without the right to mint the token, kubectl fails with the plugin\'s reason, and no token is written anywhere', async () => {
  const nobodyConfig = tokenKubeconfig(join(cp.dir, 'nobody.kubeconfig'), cp.url, await cp.token(ns, 'nobody', []), { ca: cp.ca.cert });
  // reading the gateway needs get on accessgateways: refused with the apiserver's answer
  const refused = await run(['access-gateway', 'kubeconfig', '--gateway', `${ns}/api`, '--service-account', 'app', '--kubeconfig', nobodyConfig]);
  assert.notEqual(refused.code, 0);
  assert.match(refused.err, /cannot read AccessGateway team-k\/api/);
  // a kubeconfig made by someone else, used with nobody's credentials: the plugin cannot mint
  const file = join(cp.dir, 'nobody-gateway.kubeconfig');
  const made = await run(['access-gateway', 'kubeconfig', '--gateway', `${ns}/api`, '--service-account', 'app',
    '--certificate-authority', ca.certFile, '--kubeconfig', cp.kubeconfig, '--output', file]);
  assert.equal(made.code, 0, made.err);
  const cfg = JSON.parse(readFileSync(file, 'utf8'));
  const args: string[] = cfg.users[0].user.exec.args;
  args[args.indexOf('--kubeconfig') + 1] = nobodyConfig;
  writeFileSync(file, JSON.stringify(cfg));
  const r = await run(['--kubeconfig', file, 'get', 'configmaps']);
  assert.notEqual(r.code, 0);
  assert.match(r.err, /cannot mint a token for team-k\/app \(HTTP 403\)/, r.err);
  assert.doesNotMatch(r.err, /eyJ[\w-]+\.[\w-]+\./, 'a token in the error output');
});

test('made without --kubeconfig, the plugin names the kubeconfig in use by its path: export KUBECONFIG=the-new-file works, and a file that names itself fails at once (no chain of plugins)', async () => {
  const devConfig = join(cp.dir, 'dev.kubeconfig'); // written by the first test
  const file = join(cp.dir, 'exported.kubeconfig');
  const made = await runKubectl(['access-gateway', 'kubeconfig', '--gateway', `${ns}/api`, '--service-account', 'app',
    '--certificate-authority', ca.certFile, '--output', file], { ...pluginEnv, KUBECONFIG: devConfig });
  assert.equal(made.code, 0, made.err);
  const args: string[] = JSON.parse(readFileSync(file, 'utf8')).users[0].user.exec.args;
  assert.equal(args[args.indexOf('--kubeconfig') + 1], devConfig);
  const who = await runKubectl(['auth', 'whoami', '-o', 'json'], { ...pluginEnv, KUBECONFIG: file });
  assert.equal(who.code, 0, who.err);
  assert.equal(JSON.parse(who.out).status.userInfo.username, `system:serviceaccount:${ns}:app`);
  // the output may not be the kubeconfig its plugin reads
  const self = await runKubectl(['access-gateway', 'kubeconfig', '--gateway', `${ns}/api`, '--service-account', 'app',
    '--certificate-authority', ca.certFile, '--output', devConfig], { ...pluginEnv, KUBECONFIG: devConfig });
  assert.notEqual(self.code, 0);
  assert.match(self.err, /is the kubeconfig the token plugin would read/);
  // one that names itself anyway (edited by hand): one refusal, not a plugin starting plugins
  const cfg = JSON.parse(readFileSync(file, 'utf8'));
  const a: string[] = cfg.users[0].user.exec.args;
  a.splice(a.indexOf('--kubeconfig'), 2);
  const loop = join(cp.dir, 'loop.kubeconfig');
  writeFileSync(loop, JSON.stringify(cfg));
  const started = Date.now();
  const r = await runKubectl(['get', 'configmaps'], { ...pluginEnv, KUBECONFIG: loop });
  assert.notEqual(r.code, 0);
  assert.match(r.err, /exec plugin .*: exit 1|its kubeconfig runs this plugin again/, r.err);
  assert.ok(Date.now() - started < 20_000, `refused in ${Date.now() - started} ms`);
});

test('an OIDC client secret is put in the plugin\'s environment, not in its arguments', async () => {
  const file = join(cp.dir, 'oidc.kubeconfig');
  const made = await run(['access-gateway', 'kubeconfig', '--gateway', `${ns}/api`, '--oidc-issuer', 'https://idp.example.com', '--oidc-client-id', 'kubectl',
    '--oidc-client-secret', 's3cret-value', '--certificate-authority', ca.certFile, '--kubeconfig', cp.kubeconfig, '--output', file]);
  assert.equal(made.code, 0, made.err);
  const exec = JSON.parse(readFileSync(file, 'utf8')).users[0].user.exec;
  assert.ok(!exec.args.some((x: string) => x.includes('s3cret-value')), JSON.stringify(exec.args));
  assert.deepEqual(exec.env, [{ name: 'ACCESS_GATEWAY_CLIENT_SECRET', value: 's3cret-value' }]);
});
