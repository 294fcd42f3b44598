// A JWKS gateway whose operator cannot sync its revocation caches (its RBAC lacks list/watch on
// pods): a valid token is answered 503 with Retry-After, never 401, and the gateway is not Ready.
// Once the RBAC is fixed the caches sync, the gateway turns Ready and the same token gets 200.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'undici';
import { stringify } from 'yaml';
import { startControlPlane, type ControlPlane } from '../support/control-plane.js';
import { startOperator, type OperatorProc } from '../support/operator.js';
import { chartArgs, chartNamespace, installChart, renderChart } from '../support/chart-operator.js';
import { applyYaml, condition, getGateway, installCRD, namespaceYaml } from '../support/cluster.js';
import { waitFor } from '../support/procs.js';

const ns = 'team-r';
let cp: ControlPlane;
let op: OperatorProc;
let clusterRole: any;

before(async () => {
  cp = await startControlPlane();
  await installCRD(cp);
  await applyYaml(cp, namespaceYaml(ns, ['a']));
  // the chart's own RBAC, but its ClusterRole without list/watch on pods
  const rendered = renderChart();
  clusterRole = rendered.find((o) => o.kind === 'ClusterRole' && (o.rules ?? []).some((r: any) => (r.resources ?? []).includes('tokenreviews')));
  const withoutPods = structuredClone(clusterRole);
  // pods are in two rules: the JWKS revocation watches' and --endpoint-addresses pods' own
  const rules = withoutPods.rules.filter((r: any) => (r.resources ?? []).includes('pods') && (r.verbs ?? []).includes('watch'));
  assert.equal(rules.length, 2, 'the chart lets the operator watch pods (JWKS revocation, endpoint addresses)');
  for (const rule of rules) rule.resources = rule.resources.filter((x: string) => x !== 'pods');
  withoutPods.rules = withoutPods.rules.filter((r: any) => r.nonResourceURLs || r.resources.length);
  const kubeconfig = await installChart(cp, rendered.map((o) => (o === clusterRole ? withoutPods : o)), 'no-pods');
  op = await startOperator({ ...cp, kubeconfig }, { args: chartArgs(rendered), env: { ...process.env, POD_NAMESPACE: chartNamespace, POD_NAME: 'no-pods' } });
}, { timeout: 180_000 });

after(async () => {
  await op?.stop();
  await cp?.stop();
});

test('caches that cannot sync: 503 with Retry-After (never 401), not Ready; after the RBAC fix: Ready and 200', async () => {
  await applyYaml(cp, `
apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: jw, namespace: ${ns}}
spec:
  authentication: {audiences: [gw], mode: JWKS}
  access: [{groups: [system:serviceaccounts:${ns}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {acceptPaths: ["^/version$"]}}]
`);
  const pending = await waitFor('gateway reported Pending', async () => {
    const gw = await getGateway(cp, ns, 'jw');
    return condition(gw, 'Programmed')?.reason === 'Pending' && gw.status.observedGeneration === gw.metadata.generation ? gw : undefined;
  }, 15_000);
  assert.equal(condition(pending, 'Programmed').status, 'False');
  assert.match(condition(pending, 'Programmed').message, /signing keys and the revocation caches/);
  assert.equal(condition(pending, 'Ready').status, 'False');
  assert.equal(condition(pending, 'Ready').reason, 'Pending');
  const port = pending.status.listener.port as number;
  const get = async (token: string) => {
    const r = await request(`http://127.0.0.1:${port}/version`, { headers: { authorization: `Bearer ${token}` } });
    return { status: r.statusCode, retryAfter: r.headers['retry-after'], text: await r.body.text() };
  };

  const token = await cp.token(ns, 'a', ['gw']);
  for (let i = 0; i < 20; i++) {
    const r = await get(token);
    assert.equal(r.status, 503, r.text);
    assert.equal(r.retryAfter, '1');
    assert.match(JSON.parse(r.text).message, /revocation caches not synced yet \(pods\)/);
  }
  assert.equal((await get('garbage')).status, 401); // what is certainly invalid is still 401
  assert.equal(condition(await getGateway(cp, ns, 'jw'), 'Ready').status, 'False');

  // the chart's ClusterRole as it is: the pods watch is retried with back-off (at most 30 s)
  await cp.kubectl(['apply', '--server-side', '--force-conflicts', '--field-manager', 'chart-test', '-f', '-'], stringify(clusterRole));
  const ready = await waitFor('gateway Ready once the caches sync', async () => {
    const gw = await getGateway(cp, ns, 'jw');
    return condition(gw, 'Ready')?.status === 'True' ? gw : undefined;
  }, 90_000, 250);
  assert.equal(condition(ready, 'Programmed').reason, 'Programmed');
  const r = await get(token);
  assert.equal(r.status, 200, r.text);
});
