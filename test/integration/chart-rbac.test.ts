// The chart's RBAC, proven: the chart's rendered manifests are applied to a real apiserver, and
// the operator runs as the chart's own ServiceAccount (a minted token, no admin credentials)
// through the core scenarios: reconcile and status, TokenReview, impersonated apiserver access,
// a Service route. The same run without one ClusterRole rule fails.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import { startControlPlane, repoRoot, type ControlPlane } from '../support/control-plane.js';
import { startOperator, type OperatorProc } from '../support/operator.js';
import { applyYaml, condition, getGateway, installCRD, namespaceYaml, serviceYaml, tokenKubeconfig, waitObserved } from '../support/cluster.js';
import { createTestNet, startServer, type TestNet } from '../support/netns.js';

const release = 'access-gateway';
const releaseNs = 'access-gateway';
const ns = 'team-c';
let cp: ControlPlane;
let net: TestNet;
let rendered: any[];

function helm(): string {
  return process.env.HELM ?? execFileSync(join(repoRoot, 'scripts', 'build-helm.sh'), { encoding: 'utf8' }).trim().split('\n').pop()!;
}

before(async () => {
  cp = await startControlPlane();
  await installCRD(cp);
  const text = execFileSync(helm(), ['template', release, join(repoRoot, 'charts', 'access-gateway'), '--namespace', releaseNs], { encoding: 'utf8' });
  rendered = parseAllDocuments(text).map((d) => d.toJS()).filter(Boolean);
  await applyYaml(cp, namespaceYaml(releaseNs, []));
  await applyYaml(cp, namespaceYaml(ns, ['app']));
  await cp.kubectl(['create', 'role', 'cm', '-n', ns, '--verb=get,list', '--resource=configmaps']);
  await cp.kubectl(['create', 'rolebinding', 'cm', '-n', ns, '--role=cm', `--serviceaccount=${ns}:app`]);
  net = await createTestNet({ hosts: 1 });
  await startServer(net.hosts[0]!, { name: 'backend' });
  await applyYaml(cp, serviceYaml(ns, 'backend', [net.hosts[0]!.ip]));
}, { timeout: 240_000 });

after(async () => {
  await net?.destroy();
  await cp?.stop();
});

test('the rendered manifests (default values) are accepted by the apiserver', async () => {
  const kinds = rendered.map((o) => o.kind);
  for (const k of ['ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding', 'Deployment', 'Service', 'PodDisruptionBudget']) {
    assert.ok(kinds.includes(k), `${k} rendered`);
  }
  await cp.kubectl(['apply', '--server-side', '--field-manager', 'chart-test', '-f', '-'], rendered.map((o) => stringify(o)).join('---\n'));
});

test('every ci/ values file renders manifests the apiserver accepts (server dry-run; Prometheus Operator kinds aside)', async () => {
  const dir = join(repoRoot, 'charts', 'access-gateway', 'ci');
  const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
  assert.ok(files.length >= 3);
  for (const f of files) {
    const text = execFileSync(helm(), ['template', release, join(repoRoot, 'charts', 'access-gateway'), '--namespace', releaseNs, '-f', join(dir, f)], { encoding: 'utf8' });
    const objs = parseAllDocuments(text).map((d) => d.toJS()).filter((o) => o && !['ServiceMonitor', 'PrometheusRule'].includes(o.kind));
    for (const o of objs) if (o.metadata && !o.metadata.namespace && o.kind !== 'ClusterRole' && o.kind !== 'ClusterRoleBinding' && o.kind !== 'ValidatingAdmissionPolicy' && o.kind !== 'ValidatingAdmissionPolicyBinding') o.metadata.namespace ??= releaseNs;
    for (const n of new Set(objs.map((o) => o.metadata?.namespace).filter(Boolean))) await applyYaml(cp, namespaceYaml(n, []));
    await cp.kubectl(['apply', '--server-side', '--dry-run=server', '--field-manager', 'chart-test', '-f', '-'], objs.map((o) => stringify(o)).join('---\n'))
      .catch((e) => { throw new Error(`${f}: ${e.stderr ?? e}`); });
  }
});

/** The Deployment's operator flags, less those the test harness sets (addresses, port range, drain, logs). */
function chartArgs(): string[] {
  const dep = rendered.find((o) => o.kind === 'Deployment');
  const args: string[] = dep.spec.template.spec.containers[0].args;
  const local = /^--(admin-address|port-range|listen-address|drain-seconds|log-level|log-format)(=|$)/;
  return args.filter((a) => a !== 'operator' && !local.test(a));
}

/** Runs the core scenarios as the chart's ServiceAccount with the given ClusterRole; resolves with what worked. */
async function scenarios(name: string, clusterRole: any): Promise<{ status: boolean; review: boolean; impersonated: boolean; service: boolean }> {
  await cp.kubectl(['apply', '--server-side', '--force-conflicts', '--field-manager', 'chart-test', '-f', '-'], stringify(clusterRole));
  const sa = rendered.find((o) => o.kind === 'ServiceAccount');
  const token = await cp.token(sa.metadata.namespace ?? releaseNs, sa.metadata.name, [cp.issuer]);
  const kubeconfig = tokenKubeconfig(join(cp.dir, `${name}.kubeconfig`), cp.url, token, { ca: cp.ca.cert });
  const op: OperatorProc = await startOperator({ ...cp, kubeconfig }, {
    logName: `${name}.log`, env: { ...process.env, POD_NAMESPACE: releaseNs, POD_NAME: name },
    args: chartArgs(),
  }).catch((e) => { throw new Error(`operator as the chart's ServiceAccount did not become ready: ${e.message}`); });
  const gwName = `gw-${name}`;
  try {
    await applyYaml(cp, `
apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: ${gwName}, namespace: ${ns}}
spec:
  authentication: {audiences: [gw]}
  access: [{serviceAccounts: [{namespace: ${ns}, name: app}]}]
  routes:
    - {name: backend, pathPrefix: /backend/, rewritePrefix: /, service: {name: backend, port: http}}
    - {name: kube-api, pathPrefix: /, apiserver: {acceptPaths: ["^/api/.*"]}}
`);
    const result = { status: false, review: false, impersonated: false, service: false };
    const gw = await waitObserved(cp, ns, gwName, 20_000).catch(() => undefined);
    result.status = condition(gw, 'Ready')?.status === 'True';
    const port = gw?.status?.listener?.port ?? (await getGateway(cp, ns, gwName))?.status?.listener?.port;
    if (!port) return result;
    const app = await cp.token(ns, 'app', ['gw']);
    const get = async (path: string) => (await fetch(`http://127.0.0.1:${port}${path}`, { headers: { authorization: `Bearer ${app}` } }));
    const cm = await get(`/api/v1/namespaces/${ns}/configmaps`).catch(() => undefined);
    result.review = cm !== undefined && cm.status !== 401 && cm.status !== 503;
    result.impersonated = cm?.status === 200;
    result.service = (await get('/backend/whoami').catch(() => undefined))?.status === 200;
    return result;
  } finally {
    await op.stop();
    await cp.kubectl(['delete', 'agw', gwName, '-n', ns, '--wait=false']).catch(() => {});
  }
}

test('the operator, authenticated only as the chart ServiceAccount, passes the core scenarios', async () => {
  const role = rendered.find((o) => o.kind === 'ClusterRole');
  assert.deepEqual(await scenarios('full', role), { status: true, review: true, impersonated: true, service: true });
});

test('without one ClusterRole rule (tokenreviews) the same run fails', async () => {
  const role = structuredClone(rendered.find((o) => o.kind === 'ClusterRole'));
  const before = role.rules.length;
  role.rules = role.rules.filter((r: any) => !(r.resources ?? []).includes('tokenreviews'));
  assert.equal(role.rules.length, before - 1);
  const r = await scenarios('no-tokenreviews', role);
  assert.equal(r.review, false);
  assert.equal(r.impersonated, false);
});

test('without the impersonation rule the apiserver route fails', async () => {
  const role = structuredClone(rendered.find((o) => o.kind === 'ClusterRole'));
  role.rules = role.rules.filter((r: any) => !((r.verbs ?? []).includes('impersonate') && (r.resources ?? []).includes('serviceaccounts')));
  const r = await scenarios('no-impersonate', role);
  assert.equal(r.review, true);
  assert.equal(r.impersonated, false);
});
