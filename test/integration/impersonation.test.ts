// `kubectl --as` through a gateway, with the real kubectl and the chart's least-privilege operator:
// a caller's own Impersonate-* headers are honoured only when the apiserver says the caller may
// impersonate exactly that (SubjectAccessReviews); the apiserver then sees the target, with the
// original caller in the audit extras. Escapes tried by two teams: system:masters, another team's
// service account, a user the caller may not be, a forged caller extra.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startControlPlane, type ControlPlane } from '../support/control-plane.js';
import { startChartOperator } from '../support/chart-operator.js';
import { waitForLogLines } from '../support/operator.js';
import { applyYaml, bearer, createListenerTLS, curl, gatewayPort, installCRD, namespaceYaml, runKubectl, tokenKubeconfig, type KubectlResult } from '../support/cluster.js';
import { scrapeMetrics } from '../support/metrics.js';

let cp: ControlPlane;
let op: Awaited<ReturnType<typeof startChartOperator>>;
let url: string;
let caFile: string;
const kubeconfigs: Record<string, string> = {};

/** The real kubectl through the gateway as `who` (team-a:lead, team-a:plain, team-b:intruder). */
function kubectl(who: string, args: string[]): Promise<KubectlResult> {
  return runKubectl(['--kubeconfig', kubeconfigs[who]!, ...args]);
}

before(async () => {
  cp = await startControlPlane();
  await installCRD(cp);
  await applyYaml(cp, namespaceYaml('team-a', ['lead', 'plain']));
  await applyYaml(cp, namespaceYaml('team-b', ['deployer', 'intruder']));
  // team-a:lead may impersonate the user alice and the group auditors, nothing else;
  // alice may read configmaps of team-a; the lead itself may read nothing
  await applyYaml(cp, `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: impersonate-alice}
rules:
  - {apiGroups: [""], resources: [users], resourceNames: [alice, "zoë", "Ã©lice"], verbs: [impersonate]}
  - {apiGroups: [""], resources: [groups], resourceNames: [auditors], verbs: [impersonate]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: lead-impersonates-alice}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: impersonate-alice}
subjects: [{kind: ServiceAccount, name: lead, namespace: team-a}]
`);
  await cp.kubectl(['create', 'role', 'cm-reader', '-n', 'team-a', '--verb=get,list', '--resource=configmaps']);
  await cp.kubectl(['create', 'rolebinding', 'alice-cm', '-n', 'team-a', '--role=cm-reader', '--user=alice']);
  await cp.kubectl(['create', 'rolebinding', 'zoe-cm', '-n', 'team-a', '--role=cm-reader', '--user=zoë']);
  await cp.kubectl(['create', 'rolebinding', 'elice-cm', '-n', 'team-a', '--role=cm-reader', '--user=élice']);
  await cp.kubectl(['create', 'configmap', 'alices-view', '-n', 'team-a', '--from-literal=k=v']);
  op = await startChartOperator(cp);
  // kubectl sends a token only over TLS
  for (const [ns, sas] of [['team-a', ['lead', 'plain']], ['team-b', ['intruder']]] as const) {
    const ca = await createListenerTLS(cp, ns, 'api-tls');
    if (ns === 'team-a') caFile = ca.certFile;
    await applyYaml(cp, `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: api, namespace: ${ns}}
spec:
  listener: {tls: {secretName: api-tls}}
  authentication: {audiences: [gw]}
  access: [{serviceAccounts: [${sas.map((s) => `{namespace: ${ns}, name: ${s}}`).join(', ')}]}]
  routes:
    - {name: kube-api, pathPrefix: /, apiserver: {identity: Impersonate}}
`);
    const port = await gatewayPort(cp, ns, 'api');
    if (ns === 'team-a') url = `https://127.0.0.1:${port}`;
    for (const sa of sas) {
      kubeconfigs[sa] = tokenKubeconfig(join(cp.dir, `${sa}.kubeconfig`), `https://127.0.0.1:${port}`, await cp.token(ns, sa, ['gw']), { namespace: ns, ca: ca.cert });
    }
  }
}, { timeout: 240_000 });

after(async () => {
  await op?.stop();
  await cp?.stop();
});

test('kubectl --as a user the caller may impersonate: the apiserver sees that user, with the caller in the audit extras', async () => {
  const own = await kubectl('lead', ['get', 'configmaps']);
  assert.notEqual(own.code, 0, 'the lead itself may not list configmaps');
  assert.match(own.err, /system:serviceaccount:team-a:lead/);
  const as = await kubectl('lead', ['--as', 'alice', 'get', 'configmaps', '-o', 'name']);
  assert.equal(as.code, 0, as.err);
  assert.match(as.out, /configmap\/alices-view/);
  const who = await kubectl('lead', ['--as', 'alice', '--as-group', 'auditors', 'auth', 'whoami', '-o', 'json']);
  assert.equal(who.code, 0, who.err);
  const u = JSON.parse(who.out).status.userInfo;
  assert.equal(u.username, 'alice');
  assert.deepEqual(u.groups.sort(), ['auditors', 'system:authenticated']);
  assert.deepEqual(u.extra['access-gateway.io/caller'], ['system:serviceaccount:team-a:lead']);
  assert.deepEqual(u.extra['access-gateway.io/gateway'], ['team-a/api']);
  // the access log names both (the operator's stdout reaches the file through a pipe: wait for it)
  const [line] = await waitForLogLines(op, 1, (l) => l.msg === 'request' && l.as === 'alice' && l.status === 201);
  assert.equal(line?.caller, 'system:serviceaccount:team-a:lead');
});

test('names that are not ASCII: checked and applied as the same name (their UTF-8 bytes), never as what those bytes read as latin1', async () => {
  // the lead may impersonate zoë: kubectl sends the name's UTF-8 bytes, the apiserver sees zoë
  const who = await kubectl('lead', ['--as', 'zoë', 'auth', 'whoami', '-o', 'json']);
  assert.equal(who.code, 0, who.err);
  assert.equal(JSON.parse(who.out).status.userInfo.username, 'zoë');
  const as = await kubectl('lead', ['--as', 'zoë', 'get', 'configmaps', '-o', 'name']);
  assert.equal(as.code, 0, as.err);
  // the lead may impersonate "Ã©lice" (the latin1 reading of élice's bytes), not élice, who may
  // read team-a's configmaps: asking for élice is refused by the gateway, not applied as élice
  const token = await cp.token('team-a', 'lead', ['gw']);
  const elice = await curl(`${url}/api/v1/namespaces/team-a/configmaps`, ['--cacert', caFile, ...bearer(token), '-H', 'Impersonate-User: élice']);
  assert.equal(elice.status, 403, elice.body);
  assert.match(elice.body, /may not impersonate user \\"élice\\"/);
});

test('what the caller may not impersonate is refused by the gateway with the reason, before the apiserver sees it', async () => {
  // `get --raw`: kubectl prints the Status message of the refusal (a refused discovery request,
  // which a plain `kubectl get` makes first, is shown as "Forbidden: unknown")
  const cases: [string, string[], RegExp][] = [
    ['lead', ['--as', 'alice', '--as-group', 'system:masters', 'get', '--raw', '/api/v1/secrets'], /may not impersonate group "system:masters"/],
    ['lead', ['--as', 'system:admin', 'get', '--raw', '/api/v1/secrets'], /may not impersonate user "system:admin"/],
    ['lead', ['--as', 'system:serviceaccount:team-b:deployer', 'get', '--raw', '/api/v1/namespaces/team-b/pods'], /may not impersonate service account team-b\/deployer/],
    ['lead', ['--as', 'alice', '--as-uid', '1234', 'get', '--raw', '/api/v1/namespaces/team-a/configmaps'], /may not impersonate uid "1234"/],
    ['plain', ['--as', 'alice', 'get', '--raw', '/api/v1/namespaces/team-a/configmaps'], /system:serviceaccount:team-a:plain may not impersonate user "alice"/],
    // the other team: its caller has no impersonation rights at all
    ['intruder', ['--as', 'system:serviceaccount:team-a:lead', 'get', '--raw', '/api/v1/namespaces/team-a/configmaps'], /may not impersonate service account team-a\/lead/],
  ];
  for (const [who, args, why] of cases) {
    const r = await kubectl(who, args);
    assert.notEqual(r.code, 0, `${who} ${args.join(' ')}: ${r.out}`);
    assert.match(r.err, /Forbidden/, r.err);
    assert.match(r.err, why, r.err);
  }
  const text = await scrapeMetrics(cp, op.adminPort);
  const denied = Number(/^access_gateway_authorization_denials_total\{namespace="team-a",gateway="api",reason="impersonate"\} (\d+)$/m.exec(text)?.[1]);
  // one denial per refused request (kubectl sends some twice): as many as team-a's 403 access lines with `as`
  const refused = await waitForLogLines(op, denied, (l) => l.msg === 'request' && l.gateway === 'team-a/api' && l.status === 403 && l.as !== undefined);
  assert.ok(refused.length >= 5, `${refused.length} refused lines`);
  assert.equal(denied, refused.length, 'one denial per refused request');
  assert.match(text, /^access_gateway_impersonation_reviews_total\{result="denied"\} [1-9]/m);
  assert.match(text, /^access_gateway_impersonation_reviews_total\{result="refused"\} 0$/m, 'the limiter refused nothing (series at zero)');
  const plain = await kubectl('lead', ['--as', 'alice', '--as-group', 'system:masters', 'get', 'secrets', '-A']);
  assert.notEqual(plain.code, 0);
  assert.match(plain.err, /Forbidden/);
});

test('malformed or forged impersonation headers: 400, never forwarded', async () => {
  const token = await cp.token('team-a', 'lead', ['gw']);
  const groupOnly = await curl(`${url}/api/v1/namespaces/team-a/configmaps`, ['--cacert', caFile, ...bearer(token), '-H', 'Impersonate-Group: system:masters']);
  assert.equal(groupOnly.status, 400, groupOnly.body);
  assert.match(groupOnly.body, /need Impersonate-User/);
  const forged = await curl(`${url}/apis/authentication.k8s.io/v1/selfsubjectreviews`, ['--cacert', caFile, ...bearer(token), '-X', 'POST', '-H', 'Content-Type: application/json',
    '-d', '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}',
    '-H', 'Impersonate-User: alice', '-H', 'Impersonate-Extra-access-gateway.io%2Fcaller: system:serviceaccount:team-b:intruder']);
  assert.equal(forged.status, 400, forged.body);
  assert.match(forged.body, /the gateway sets this extra itself/);
});

test('a caller\'s --as decisions outlive its token\'s cached answers: reviewed again every 1.6 s (cacheTTLSeconds 2), the caller keeps them, so 12 s of requests ask about impersonating alice at most twice', async () => {
  await applyYaml(cp, `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: brief, namespace: team-a}
spec:
  authentication: {audiences: [brief], cacheTTLSeconds: 2}
  access: [{serviceAccounts: [{namespace: team-a, name: lead}]}]
  routes:
    - {name: kube-api, pathPrefix: /, apiserver: {identity: Impersonate}}
`);
  const base = `http://127.0.0.1:${await gatewayPort(cp, 'team-a', 'brief')}`;
  const token = await cp.token('team-a', 'lead', ['brief']);
  const allowed = async () => Number((await scrapeMetrics(cp, op.adminPort)).split('\n')
    .find((l) => l.startsWith('access_gateway_impersonation_reviews_total{result="allowed"} '))?.split(' ').at(-1) ?? 0);
  const before = await allowed();
  const statuses = new Set<number>();
  const t0 = Date.now();
  while (Date.now() - t0 < 12_000) {
    statuses.add((await curl(`${base}/api/v1/namespaces/team-a/configmaps`, [...bearer(token), '-H', 'Impersonate-User: alice'])).status);
    await new Promise((res) => setTimeout(res, 150));
  }
  assert.deepEqual([...statuses], [200]);
  const asked = (await allowed()) - before;
  assert.ok(asked >= 1 && asked <= 2, `${asked} SubjectAccessReviews for one --as in 12 s`);
});
