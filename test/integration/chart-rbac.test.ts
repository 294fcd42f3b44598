// The chart's RBAC and admission policies, proven: the chart's rendered manifests are applied to a
// real apiserver, and the operator runs as the chart's own ServiceAccount (a minted token, no admin
// credentials) through the core scenarios: reconcile and status, TokenReview, impersonated
// apiserver access, a Service route, its agw-NAME Service/EndpointSlice and Events (through the
// chart's ValidatingAdmissionPolicies), /metrics for the chart's metrics-reader. The same run
// without one ClusterRole rule fails; writes as that ServiceAccount that are not a gateway's own
// are refused by the policies.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { parseAllDocuments, stringify } from 'yaml';
import { startControlPlane, repoRoot, type ControlPlane } from '../support/control-plane.js';
import { startOperator, type OperatorProc } from '../support/operator.js';
import { grantsInEffect, grantsOf } from '../support/chart-operator.js';
import { applyYaml, condition, getGateway, installCRD, namespaceYaml, applyService, tokenKubeconfig } from '../support/cluster.js';
import { createTestNet, startServer, type TestNet } from '../support/netns.js';
import { waitFor } from '../support/procs.js';

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
  await applyService(cp, ns, 'backend', [net.hosts[0]!.ip]);
  // a Ready operator replica (no kubelet here: its status is written by hand), so that the operator
  // publishes each gateway's agw-NAME Service and EndpointSlice (--replica-selector)
  await applyYaml(cp, namespaceYaml(releaseNs, ['default'])); // no controller-manager makes it here
  await applyYaml(cp, `apiVersion: v1
kind: Pod
metadata: {name: replica-0, namespace: ${releaseNs}, labels: {app.kubernetes.io/name: access-gateway, app.kubernetes.io/instance: ${release}}}
spec: {containers: [{name: c, image: example.invalid/none}]}
`);
  const st = await cp.api('PATCH', `/api/v1/namespaces/${releaseNs}/pods/replica-0/status`,
    { status: { podIP: '10.1.2.3', podIPs: [{ ip: '10.1.2.3' }], conditions: [{ type: 'Ready', status: 'True' }] } }, 'application/merge-patch+json');
  assert.equal(st.status, 200, JSON.stringify(st.body));
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
    for (const o of objs) if (o.metadata && !o.metadata.namespace && o.kind !== 'ClusterRole' && o.kind !== 'ClusterRoleBinding' && o.kind !== 'ValidatingAdmissionPolicy' && o.kind !== 'ValidatingAdmissionPolicyBinding' && o.kind !== 'FlowSchema') o.metadata.namespace ??= releaseNs;
    for (const n of new Set(objs.map((o) => o.metadata?.namespace).filter(Boolean))) await applyYaml(cp, namespaceYaml(n, []));
    await cp.kubectl(['apply', '--server-side', '--dry-run=server', '--field-manager', 'chart-test', '-f', '-'], objs.map((o) => stringify(o)).join('---\n'))
      .catch((e) => { throw new Error(`${f}: ${e.stderr ?? e}`); });
  }
});

test('the chart ServiceAccount\'s Lease requests are in the leader-election priority level; its other requests are not', async () => {
  // API Priority and Fairness is off in the shared control plane: one of its own
  const apf = await startControlPlane({ priorityAndFairness: true });
  try {
    const objs = rendered.filter((o) => ['Namespace', 'ServiceAccount', 'FlowSchema'].includes(o.kind));
    await applyYaml(apf, namespaceYaml(releaseNs, []));
    await apf.kubectl(['apply', '--server-side', '--field-manager', 'chart-test', '-f', '-'], objs.map((o) => stringify(o)).join('---\n'));
    const sa = rendered.find((o) => o.kind === 'ServiceAccount');
    const token = await apf.token(releaseNs, sa.metadata.name, [apf.issuer]);
    const fs = await apf.api('GET', `/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/${release}-leader-election`);
    assert.equal(fs.status, 200, JSON.stringify(fs.body));
    const pl = await apf.api('GET', '/apis/flowcontrol.apiserver.k8s.io/v1/prioritylevelconfigurations/leader-election');
    assert.equal(pl.status, 200, 'the apiserver\'s own level is there');
    const agent = new Agent({ connect: { ca: apf.ca.cert } });
    const classified = async (path: string, method = 'GET', body?: unknown) => {
      const r = await request(apf.url + path, { dispatcher: agent, method: method as 'GET', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
      await r.body.dump();
      return { status: r.statusCode, flowSchema: r.headers['x-kubernetes-pf-flowschema-uid'], level: r.headers['x-kubernetes-pf-prioritylevel-uid'] };
    };
    // the apiserver's controller reads a new FlowSchema a moment after it is made
    let last: unknown;
    const lease = await waitFor('the Lease request classified by the chart FlowSchema', async () => {
      const r = await classified(`/apis/coordination.k8s.io/v1/namespaces/${releaseNs}/leases/${release}`);
      last = r;
      return r.flowSchema === fs.body.metadata.uid ? r : undefined;
    }, 30_000).catch((e) => { throw new Error(`${e.message}: last ${JSON.stringify(last)}`); });
    assert.equal(lease.level, pl.body.metadata.uid);
    const review = await classified('/apis/authentication.k8s.io/v1/tokenreviews', 'POST', { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token: 'x' } });
    assert.ok(review.flowSchema, 'classified');
    assert.notEqual(review.flowSchema, fs.body.metadata.uid);
    assert.notEqual(review.level, pl.body.metadata.uid);
    await agent.close();
  } finally {
    await apf.stop();
  }
});

/** The Deployment's operator flags, less those the test harness sets (addresses, port range, drain, logs). */
function chartArgs(): string[] {
  const dep = rendered.find((o) => o.kind === 'Deployment');
  const args: string[] = dep.spec.template.spec.containers[0].args;
  const local = /^--(admin-address|port-range|listen-address|drain-seconds|log-level|log-format)(=|$)/;
  return args.filter((a) => a !== 'operator' && !local.test(a));
}

type Result = { status: boolean; review: boolean; impersonated: boolean; service: boolean; exposed: boolean; event: boolean; metrics: number; kubeApi: number; kubeApiMessage: string };

/** The rendered chart applied once (each test may run alone). */
let installed: Promise<unknown> | undefined;
const install = () => (installed ??= cp.kubectl(['apply', '--server-side', '--force-conflicts', '--field-manager', 'chart-test', '-f', '-'],
  rendered.map((o) => stringify(o)).join('---\n')));

/** The chart's ServiceAccount as a kubeconfig with a minted token. */
async function chartKubeconfig(name: string): Promise<{ token: string; kubeconfig: string }> {
  await install();
  const sa = rendered.find((o) => o.kind === 'ServiceAccount');
  const token = await cp.token(sa.metadata.namespace ?? releaseNs, sa.metadata.name, [cp.issuer]);
  return { token, kubeconfig: tokenKubeconfig(join(cp.dir, `${name}.kubeconfig`), cp.url, token, { ca: cp.ca.cert }) };
}

/** A token of a scraper bound to the chart's metrics-reader ClusterRole by the chart's own binding (metrics.reader.subjects). */
let scraper: Promise<string> | undefined;
function scraperToken(): Promise<string> {
  scraper ??= (async () => {
    await applyYaml(cp, namespaceYaml('monitoring', ['prometheus']));
    const text = execFileSync(helm(), ['template', release, join(repoRoot, 'charts', 'access-gateway'), '--namespace', releaseNs,
      '--set', 'metrics.reader.subjects[0].kind=ServiceAccount,metrics.reader.subjects[0].name=prometheus,metrics.reader.subjects[0].namespace=monitoring'], { encoding: 'utf8' });
    const binding = parseAllDocuments(text).map((d) => d.toJS()).find((o) => o?.kind === 'ClusterRoleBinding' && o.metadata.name === `${release}-metrics-reader`);
    assert.ok(binding, 'the chart renders the metrics-reader binding');
    await cp.kubectl(['apply', '--server-side', '--field-manager', 'chart-test', '-f', '-'], stringify(binding));
    return cp.token('monitoring', 'prometheus', []);
  })();
  return scraper;
}

/** Waits until the apiserver's authorizer answers as `role` says for the chart's ServiceAccount:
 * each grant of the chart's role allowed when `role` has it, denied when not. */
async function roleInEffect(role: any): Promise<void> {
  const sa = rendered.find((o) => o.kind === 'ServiceAccount');
  const has = grantsOf(role);
  await grantsInEffect(cp, { namespace: sa.metadata.namespace ?? releaseNs, name: sa.metadata.name }, has, grantsOf(chartRole()).filter((g) => !has.includes(g)));
}

/** Runs the core scenarios as the chart's ServiceAccount with the given ClusterRole; resolves with what worked. */
async function scenarios(name: string, clusterRole: any): Promise<Result> {
  await install(); // before the role below replaces the chart's own
  await cp.kubectl(['apply', '--server-side', '--force-conflicts', '--field-manager', 'chart-test', '-f', '-'], stringify(clusterRole));
  await roleInEffect(clusterRole);
  const { kubeconfig } = await chartKubeconfig(name);
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
    const result: Result = { status: false, review: false, impersonated: false, service: false, exposed: false, event: false, metrics: 0, kubeApi: 0, kubeApiMessage: '' };
    const metrics = await request(`http://127.0.0.1:${op.adminPort}/metrics`, { headers: { authorization: `Bearer ${await scraperToken()}` } });
    await metrics.body.dump();
    result.metrics = metrics.statusCode;
    // Ready within 20 s (a pass that is not Ready, e.g. a port taken meanwhile, may come first)
    const gw = await waitFor(`${gwName} Ready`, async () => {
      const g = await getGateway(cp, ns, gwName);
      return condition(g, 'Ready')?.status === 'True' && g.status.observedGeneration === g.metadata.generation ? g : undefined;
    }, 20_000).catch(() => getGateway(cp, ns, gwName));
    result.status = condition(gw, 'Ready')?.status === 'True';
    // the operator's own writes, through the admission policies: agw-NAME Service and EndpointSlice, an Event
    const owned = async (path: string) => {
      const r = await cp.api('GET', path);
      return r.status === 200 && r.body.metadata.ownerReferences?.some((o: any) => o.kind === 'AccessGateway' && o.name === gwName && o.controller);
    };
    result.exposed = await waitFor('agw-NAME published', async () => await owned(`/api/v1/namespaces/${ns}/services/agw-${gwName}`)
      && owned(`/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices/agw-${gwName}`), 10_000).catch(() => false);
    result.event = await waitFor('an Event', async () => (await cp.api('GET', `/api/v1/namespaces/${ns}/events?fieldSelector=involvedObject.name%3D${gwName}`)).body?.items?.length > 0, 10_000).catch(() => false);
    const port = gw?.status?.listener?.port ?? (await getGateway(cp, ns, gwName))?.status?.listener?.port;
    if (!port) return result;
    const app = await cp.token(ns, 'app', ['gw']);
    const get = async (path: string) => (await fetch(`http://127.0.0.1:${port}${path}`, { headers: { authorization: `Bearer ${app}` } }));
    const cm = await get(`/api/v1/namespaces/${ns}/configmaps`).catch(() => undefined);
    result.kubeApi = cm?.status ?? 0;
    result.kubeApiMessage = cm ? String(((await cm.clone().json().catch(() => ({}))) as { message?: string }).message ?? '') : '';
    result.review = cm !== undefined && cm.status !== 401 && cm.status !== 503;
    result.impersonated = cm?.status === 200;
    result.service = (await get('/backend/whoami').catch(() => undefined))?.status === 200;
    return result;
  } finally {
    await op.stop();
    await cp.kubectl(['delete', 'agw', gwName, '-n', ns, '--wait=false']).catch(() => {});
  }
}

const chartRole = () => structuredClone(rendered.find((o) => o.kind === 'ClusterRole' && o.metadata.name === release));

test('the operator, authenticated only as the chart ServiceAccount, passes the core scenarios', async () => {
  const r = await scenarios('full', chartRole());
  assert.deepEqual({ ...r, kubeApiMessage: undefined },
    { status: true, review: true, impersonated: true, service: true, exposed: true, event: true, metrics: 200, kubeApi: 200, kubeApiMessage: undefined });
});

test('without one ClusterRole rule (tokenreviews) the same run fails', async () => {
  const role = chartRole();
  const before = role.rules.length;
  role.rules = role.rules.filter((r: any) => !(r.resources ?? []).includes('tokenreviews'));
  assert.equal(role.rules.length, before - 1);
  const r = await scenarios('no-tokenreviews', role);
  // the operator itself works (the gateway is Ready); authentication fails closed: 503
  assert.equal(r.status, true);
  assert.equal(r.kubeApi, 503);
  assert.match(r.kubeApiMessage, /token review unavailable/);
  assert.equal(r.review, false);
  assert.equal(r.impersonated, false);
});

test('without the impersonation rule the apiserver route fails', async () => {
  const role = chartRole();
  role.rules = role.rules.filter((r: any) => !((r.verbs ?? []).includes('impersonate') && (r.resources ?? []).includes('serviceaccounts')));
  const r = await scenarios('no-impersonate', role);
  // the gateway is Ready and authenticates; the apiserver refuses the impersonation (403)
  assert.equal(r.status, true);
  assert.equal(r.review, true);
  assert.equal(r.kubeApi, 403);
  assert.match(r.kubeApiMessage, /cannot impersonate/);
  assert.equal(r.impersonated, false);
  assert.equal(r.service, true);
});

test('without the subjectaccessreviews rule /metrics fails closed (503); the gateways are unaffected', async () => {
  const role = chartRole();
  const before = role.rules.length;
  role.rules = role.rules.filter((r: any) => !(r.resources ?? []).includes('subjectaccessreviews'));
  assert.equal(role.rules.length, before - 1);
  const r = await scenarios('no-sar', role);
  assert.equal(r.metrics, 503);
  assert.equal(r.review, true);
  assert.equal(r.impersonated, true);
});

// --- the admission policies, as the chart's ServiceAccount -------------------------------------

const owner = (name: string) => [{ apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', name, uid: `00000000-0000-4000-8000-${Buffer.from(name.padEnd(6, '-').slice(0, 6)).toString('hex')}`, controller: true }];
const svc = (name: string, spec: object = {}, meta: object = {}) => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: ns, ...meta }, spec: { ports: [{ name: 'http', port: 80, targetPort: 20000 }], ...spec } });
const slice = (name: string, serviceName: string, meta: object = {}) => ({
  apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', addressType: 'IPv4',
  metadata: { name, namespace: ns, labels: { 'kubernetes.io/service-name': serviceName }, ...meta },
  ports: [{ name: 'http', port: 20000, protocol: 'TCP' }], endpoints: [{ addresses: ['10.1.2.3'], conditions: { ready: true } }],
});
const event = (name: string, involvedObject: object) => ({
  apiVersion: 'v1', kind: 'Event', metadata: { name, namespace: ns }, involvedObject: { namespace: ns, ...involvedObject },
  type: 'Normal', reason: 'Programmed', message: 'test', count: 1, source: { component: 'access-gateway' },
});
const aboutGateway = (name: string) => ({ apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', name });

test('as the chart ServiceAccount, the admission policies refuse writes that are not a gateway\'s own and admit the operator\'s', async () => {
  await cp.kubectl(['apply', '--server-side', '--force-conflicts', '--field-manager', 'chart-test', '-f', '-'], stringify(chartRole()));
  const { token } = await chartKubeconfig('policy');
  const agent = new Agent({ connect: { ca: cp.ca.cert } });
  // the operator's own kinds of request: server-side apply, POST, merge-patch
  const call = async (method: string, path: string, body: unknown, contentType = 'application/json') => {
    const r = await request(cp.url + path, { dispatcher: agent, method: method as any, headers: { authorization: `Bearer ${token}`, 'content-type': contentType }, body: JSON.stringify(body) });
    const parsed: any = await r.body.json().catch(() => ({}));
    return { status: r.statusCode, message: String(parsed.message ?? '') };
  };
  const base = (kind: string) => kind === 'EndpointSlice' ? `/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices` : `/api/v1/namespaces/${ns}/${kind === 'Event' ? 'events' : 'services'}`;
  const apply = (obj: any, dryRun = false) => call('PATCH', `${base(obj.kind)}/${obj.metadata.name}?fieldManager=access-gateway&force=true${dryRun ? '&dryRun=All' : ''}`, obj, 'application/apply-patch+yaml');
  const post = (obj: any) => call('POST', base('Event'), obj);
  const mergePatch = (name: string, patch: object) => call('PATCH', `${base('Event')}/${name}`, patch, 'application/merge-patch+json');
  try {
    // the policies take effect shortly after they are created (test 1 applied them); the
    // assertions below decide, this only waits for them (dry-run probes)
    await waitFor('the policies in force', async () =>
      (await apply(svc('agw-probe'), true)).message.includes(`ValidatingAdmissionPolicy '${release}-writes'`)
      && (await call('POST', `${base('Event')}?dryRun=All`, event('probe.1', { apiVersion: 'v1', kind: 'Pod', name: 'probe' }))).message.includes(`ValidatingAdmissionPolicy '${release}-events'`), 20_000)
      .catch(() => undefined);

    const refused: [string, Promise<{ status: number; message: string }>, string, RegExp][] = [
      ['agw-x owned by AccessGateway y', apply(svc('agw-x', {}, { ownerReferences: owner('y') })), 'writes', /agw-x is owned by AccessGateway y/],
      ['agw-x owned by nothing', apply(svc('agw-x')), 'writes', /agw-x is not controlled by an AccessGateway/],
      ['another application\'s Service (web owned by AccessGateway web)', apply(svc('web', {}, { ownerReferences: owner('web') })), 'writes', /web is owned by AccessGateway web/],
      ['an EndpointSlice whose service-name label is another Service', apply(slice('agw-x', 'web', { ownerReferences: owner('x') })), 'writes', /only for its own Service/],
      ['a Service with a selector', apply(svc('agw-x', { selector: { app: 'web' } }, { ownerReferences: owner('x') })), 'writes', /only selector-less Services of type ClusterIP \(expose.types\)/],
      ['a NodePort Service', apply(svc('agw-x', { type: 'NodePort' }, { ownerReferences: owner('x') })), 'writes', /only selector-less Services of type ClusterIP \(expose.types\)/],
      ['an Event about a Pod', post(event('x.1', { apiVersion: 'v1', kind: 'Pod', name: 'x' })), 'events', /this one is about Pod team-c\/x/],
      ['an Event about AccessGateway x named after y', post(event('y.1', aboutGateway('x'))), 'events', /named NAME\.SUFFIX after it/],
    ];
    for (const [what, p, policy, message] of refused) {
      const r = await p;
      assert.equal(r.status, 403, `${what}: ${r.message}`);
      assert.ok(r.message.includes(`ValidatingAdmissionPolicy '${release}-${policy}'`), `${what}: ${r.message}`);
      assert.match(r.message, message, what);
    }
    // updates: never adopt an object the gateway does not already control, never retarget an Event
    await applyYaml(cp, stringify(svc('agw-z')));
    await applyYaml(cp, stringify(event('z.1', { apiVersion: 'v1', kind: 'Pod', name: 'z' })));
    const adopt = await apply(svc('agw-z', {}, { ownerReferences: owner('z') }));
    assert.equal(adopt.status, 403, adopt.message);
    assert.match(adopt.message, /never adopts/);
    const retarget = await mergePatch('z.1', { involvedObject: { apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway' }, count: 2 });
    assert.equal(retarget.status, 403, retarget.message);
    assert.match(retarget.message, /updates only its own Events about the same AccessGateway/);
    const bumpOther = await mergePatch('z.1', { count: 2 });
    assert.equal(bumpOther.status, 403, bumpOther.message);
    // nothing of that was written
    for (const path of [`/api/v1/namespaces/${ns}/services/agw-x`, `/api/v1/namespaces/${ns}/services/web`, `/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices/agw-x`, `/api/v1/namespaces/${ns}/events/x.1`, `/api/v1/namespaces/${ns}/events/y.1`]) {
      assert.equal((await cp.api('GET', path)).status, 404, path);
    }
    assert.equal((await cp.api('GET', `/api/v1/namespaces/${ns}/services/agw-z`)).body.metadata.ownerReferences, undefined);
    assert.equal((await cp.api('GET', `/api/v1/namespaces/${ns}/events/z.1`)).body.involvedObject.kind, 'Pod');

    // what the operator writes is admitted: create and update by apply, an Event and its count bump
    const admitted: [string, Promise<{ status: number; message: string }>, number][] = [
      ['agw-x owned by AccessGateway x (create)', apply(svc('agw-x', {}, { ownerReferences: owner('x') })), 201],
      ['its EndpointSlice (create)', apply(slice('agw-x', 'agw-x', { ownerReferences: owner('x') })), 201],
    ];
    for (const [what, p, status] of admitted) assert.equal((await p).status, status, `${what}: ${(await p).message}`);
    const update = await apply(svc('agw-x', { ports: [{ name: 'https', port: 443, targetPort: 20001 }] }, { ownerReferences: owner('x') }));
    assert.equal(update.status, 200, `agw-x (update): ${update.message}`);
    const created = await post(event('x.2', aboutGateway('x')));
    assert.equal(created.status, 201, created.message);
    const bumped = await mergePatch('x.2', { count: 2, lastTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z') });
    assert.equal(bumped.status, 200, bumped.message);

    // AccessGateway status is the operator's alone: even a cluster admin's write is refused
    await applyYaml(cp, `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: st, namespace: ${ns}}
spec:
  authentication: {audiences: [gw]}
  routes: [{name: kube-api, pathPrefix: /, apiserver: {}}]
`);
    // (a record of a port given later than anyone's would win that port on a restart: a time far ahead)
    const claim = () => cp.api('PATCH', `/apis/access-gateway.io/v1alpha1/namespaces/${ns}/accessgateways/st/status`, { status: { listener: { port: 20001, since: '2099-01-01T00:00:00.000Z' } } }, 'application/merge-patch+json');
    const refusedClaim = await waitFor('the status policy in force', async () => { const r = await claim(); return r.status === 403 ? r : undefined; }, 20_000);
    assert.match(String(refusedClaim.body.message), new RegExp(`ValidatingAdmissionPolicy '${release}-status'.*only the access-gateway operator writes AccessGateway status`));
    const asOperator = await call('PATCH', `/apis/access-gateway.io/v1alpha1/namespaces/${ns}/accessgateways/st/status`, { status: { listener: { port: 20001 } } }, 'application/merge-patch+json');
    assert.equal(asOperator.status, 200, asOperator.message);
  } finally {
    await agent.close();
  }
});

/** A request to the apiserver as service account NS:WHO (a projected token): its status and message. */
function requestsAs(ns: string, agent: Agent) {
  return async (who: string, method: string, path: string, body: unknown, contentType = 'application/json') => {
    const token = await cp.token(ns, who, []);
    const r = await request(cp.url + path, { dispatcher: agent, method: method as any, headers: { authorization: `Bearer ${token}`, 'content-type': contentType }, body: JSON.stringify(body) });
    const parsed: any = await r.body.json().catch(() => ({}));
    return { status: r.statusCode, message: String(parsed.message ?? '') };
  };
}

test('identity ServiceAccount: whoever writes the gateway must be allowed to impersonate each service account it names (edit may); a write that leaves the spec as it was is not checked', async () => {
  const sns = 'team-sa';
  await applyYaml(cp, namespaceYaml(sns, ['writer', 'editor', 'deployer', 'bot']));
  await cp.kubectl(['create', 'role', 'gateways', '-n', sns, '--verb=get,list,create,update,patch', '--resource=accessgateways.access-gateway.io']);
  await cp.kubectl(['create', 'rolebinding', 'gateways', '-n', sns, '--role=gateways', `--serviceaccount=${sns}:writer`, `--serviceaccount=${sns}:editor`]);
  // edit's own rules (no controller-manager here aggregates them into edit)
  await cp.kubectl(['create', 'rolebinding', 'edit', '-n', sns, '--clusterrole=system:aggregate-to-edit', `--serviceaccount=${sns}:editor`]);
  // the writer may act as bot only
  await cp.kubectl(['create', 'role', 'as-bot', '-n', sns, '--verb=impersonate', '--resource=serviceaccounts', '--resource-name=bot']);
  await cp.kubectl(['create', 'rolebinding', 'as-bot', '-n', sns, '--role=as-bot', `--serviceaccount=${sns}:writer`]);
  const agent = new Agent({ connect: { ca: cp.ca.cert } });
  const as = requestsAs(sns, agent);
  const gateways = `/apis/access-gateway.io/v1alpha1/namespaces/${sns}/accessgateways`;
  const gateway = (name: string, accounts: string[]) => ({
    apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name, namespace: sns },
    spec: {
      authentication: { audiences: ['gw'] }, access: [{ groups: [`system:serviceaccounts:${sns}`] }],
      routes: [{ name: 'own', pathPrefix: '/own', apiserver: {} },
        ...accounts.map((sa, i) => ({ name: `as-${i}`, pathPrefix: `/as-${i}`, apiserver: { identity: 'ServiceAccount', serviceAccountName: sa } }))],
    },
  });
  try {
    const refused = await waitFor('the service-accounts policy in force', async () => {
      const r = await as('writer', 'POST', `${gateways}?dryRun=All`, gateway('probe', ['deployer']));
      return r.status === 403 ? r : undefined;
    }, 20_000);
    assert.match(refused.message, new RegExp(`ValidatingAdmissionPolicy '${release}-service-accounts'`));
    assert.match(refused.message, new RegExp(`system:serviceaccount:${sns}:writer may not impersonate serviceaccounts deployer in namespace ${sns}`));
    // the names it may not act as are named; those it may are admitted
    const mixed = await as('writer', 'POST', gateways, gateway('mixed', ['bot', 'deployer', 'bot']));
    assert.equal(mixed.status, 403, mixed.message);
    assert.match(mixed.message, /may not impersonate serviceaccounts deployer in namespace/);
    assert.doesNotMatch(mixed.message, /serviceaccounts bot /);
    assert.equal((await as('writer', 'POST', gateways, gateway('bots', ['bot', 'bot']))).status, 201);
    assert.equal((await as('writer', 'POST', gateways, gateway('plain', []))).status, 201);
    // edit grants impersonation of the namespace's service accounts: one check for a full gateway
    const many = Array.from({ length: 63 }, (_, i) => (i % 2 ? 'deployer' : `sa-${i}`));
    const edited = await as('editor', 'POST', gateways, gateway('deploys', many));
    assert.equal(edited.status, 201, edited.message);
    // one check per different name, within the policy's CEL budget: many names the writer may not
    // act as are refused all the same (the budget runs out: 422, fail closed)
    const lots = await as('writer', 'POST', gateways, gateway('lots', many));
    assert.ok(lots.status === 403 || lots.status === 422, `${lots.status} ${lots.message}`);
    assert.equal((await as('editor', 'POST', gateways, gateway('small', ['deployer']))).status, 201);
    // the writer's label on it changes nothing it does: admitted; a change of its access is not
    const label = await as('writer', 'PATCH', `${gateways}/small`, { metadata: { labels: { team: 'x' } } }, 'application/merge-patch+json');
    assert.equal(label.status, 200, label.message);
    const widen = await as('writer', 'PATCH', `${gateways}/small`, { spec: { access: [{ groups: ['system:authenticated'] }] } }, 'application/merge-patch+json');
    assert.equal(widen.status, 403, widen.message);
    assert.match(widen.message, /writer may not impersonate serviceaccounts deployer in namespace/);
    const stored = (await cp.api('GET', `${gateways}/small`)).body;
    assert.deepEqual(stored.spec.access, [{ groups: [`system:serviceaccounts:${sns}`] }]);
    assert.equal(stored.metadata.labels.team, 'x');
    for (const name of ['mixed', 'lots']) assert.equal((await cp.api('GET', `${gateways}/${name}`)).status, 404, name);
  } finally {
    await agent.close();
  }
});

test('a client CA makes team:NS:* names: only who may act as the namespace\'s accounts (edit may) sets a gateway\'s clientCA or writes a labelled CA bundle', async () => {
  const cns = 'team-ca';
  await applyYaml(cp, namespaceYaml(cns, ['writer', 'editor']));
  await cp.kubectl(['create', 'role', 'writes', '-n', cns, '--verb=get,list,create,update,patch', '--resource=accessgateways.access-gateway.io', '--resource=configmaps']);
  await cp.kubectl(['create', 'rolebinding', 'writes', '-n', cns, '--role=writes', `--serviceaccount=${cns}:writer`, `--serviceaccount=${cns}:editor`]);
  await cp.kubectl(['create', 'rolebinding', 'edit', '-n', cns, '--clusterrole=system:aggregate-to-edit', `--serviceaccount=${cns}:editor`]);
  const agent = new Agent({ connect: { ca: cp.ca.cert } });
  const as = requestsAs(cns, agent);
  const gateways = `/apis/access-gateway.io/v1alpha1/namespaces/${cns}/accessgateways`;
  const configmaps = `/api/v1/namespaces/${cns}/configmaps`;
  const gateway = (name: string, clientCA: boolean) => ({
    apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name, namespace: cns },
    spec: {
      listener: { tls: { secretName: 'tls', ...(clientCA ? { clientCA: { kind: 'ConfigMap', name: 'cas', key: 'ca.crt' } } : {}) } },
      authentication: { audiences: ['gw'] }, access: [{ groups: [`team:${cns}:oncall`] }],
      routes: [{ name: 'own', pathPrefix: '/', apiserver: {} }],
    },
  });
  const bundle = (name: string, labelled: boolean) => ({ apiVersion: 'v1', kind: 'ConfigMap',
    metadata: { name, namespace: cns, ...(labelled ? { labels: { 'access-gateway.io/ca-bundle': 'true' } } : {}) }, data: { 'ca.crt': 'PEM' } });
  try {
    const refused = await waitFor('the client CA rule in force', async () => {
      const r = await as('writer', 'POST', `${gateways}?dryRun=All`, gateway('probe', true));
      return r.status === 403 ? r : undefined;
    }, 20_000);
    assert.match(refused.message, new RegExp(`ValidatingAdmissionPolicy '${release}-service-accounts'`));
    assert.match(refused.message, new RegExp(`listener.tls.clientCA makes every team:${cns}:\\* name a certificate it signed presents; system:serviceaccount:${cns}:writer may not impersonate serviceaccounts in namespace ${cns}`));
    assert.equal((await as('writer', 'POST', gateways, gateway('plain', false))).status, 201);
    const added = await as('writer', 'PATCH', `${gateways}/plain`, gateway('plain', true), 'application/merge-patch+json');
    assert.equal(added.status, 403, added.message);
    const made = await as('editor', 'POST', gateways, gateway('people', true));
    assert.equal(made.status, 201, made.message);
    // a write that leaves the client CA as it was is the writer's to make
    const widened = await as('writer', 'PATCH', `${gateways}/people`, { spec: { access: [{ groups: [`team:${cns}:oncall`, `team:${cns}:devs`] }] } }, 'application/merge-patch+json');
    assert.equal(widened.status, 200, widened.message);
    const moved = await as('writer', 'PATCH', `${gateways}/people`, { spec: { listener: { tls: { clientCA: { name: 'mine' } } } } }, 'application/merge-patch+json');
    assert.equal(moved.status, 403, moved.message);

    // the labelled CA bundles themselves
    const cm = await waitFor('the ca-bundles policy in force', async () => {
      const r = await as('writer', 'POST', `${configmaps}?dryRun=All`, bundle('probe', true));
      return r.status === 403 ? r : undefined;
    }, 20_000);
    assert.match(cm.message, new RegExp(`ValidatingAdmissionPolicy '${release}-ca-bundles'`));
    assert.match(cm.message, new RegExp(`may be the client CA of a gateway, which makes every team:${cns}:\\* name; system:serviceaccount:${cns}:writer may not impersonate`));
    assert.equal((await as('editor', 'POST', configmaps, bundle('cas', true))).status, 201);
    assert.equal((await as('writer', 'POST', configmaps, bundle('notes', false))).status, 201, 'an unlabelled ConfigMap is not checked');
    const swap = await as('writer', 'PATCH', `${configmaps}/cas`, { data: { 'ca.crt': 'MINE' } }, 'application/merge-patch+json');
    assert.equal(swap.status, 403, swap.message);
    const label = await as('writer', 'PATCH', `${configmaps}/notes`, { metadata: { labels: { 'access-gateway.io/ca-bundle': 'true' } } }, 'application/merge-patch+json');
    assert.equal(label.status, 403, label.message);
    const note = await as('writer', 'PATCH', `${configmaps}/cas`, { metadata: { annotations: { note: 'x' } } }, 'application/merge-patch+json');
    assert.equal(note.status, 200, note.message);
    assert.equal((await as('editor', 'PATCH', `${configmaps}/cas`, { data: { 'ca.crt': 'NEW' } }, 'application/merge-patch+json')).status, 200);
    assert.equal((await cp.api('GET', `${configmaps}/cas`)).body.data['ca.crt'], 'NEW');
  } finally {
    await agent.close();
  }
});
