// The chart's monitoring objects against the Prometheus Operator CRDs (their OpenAPI schemas) on a
// real apiserver: the ServiceMonitor, PrometheusRule and ConfigMaps rendered from every ci/ values
// file that has monitoring objects, and from the bearer-token-secret and runbook-URL variants, are
// accepted by a server-side dry run; a ServiceMonitor the schema forbids is refused.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import { startControlPlane, repoRoot, type ControlPlane } from '../support/control-plane.js';
import { helm } from '../support/chart-operator.js';
import { operatorCRDs } from '../support/prometheus.js';

const chart = join(repoRoot, 'charts', 'access-gateway');
const ciDir = join(chart, 'ci');
const ns = 'agw-system';
const kinds = ['ServiceMonitor', 'PrometheusRule', 'ConfigMap'];
const monitoringOn = ['--set', 'metrics.serviceMonitor.enabled=true', '--set', 'metrics.prometheusRule.enabled=true'];
let cp: ControlPlane;

function render(args: string[]): any[] {
  const text = execFileSync(helm(), ['template', 'agw-test', chart, '--namespace', ns, ...args], { encoding: 'utf8' });
  return parseAllDocuments(text).map((d) => d.toJS()).filter((o) => o && kinds.includes(o.kind));
}

/** Server-side dry-run apply (strict field validation); the error carries kubectl's stderr. */
async function dryRun(objs: any[], what: string): Promise<string> {
  for (const n of new Set(objs.map((o) => o.metadata.namespace ?? ns))) {
    await cp.kubectl(['apply', '-f', '-'], stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: n } }));
  }
  const yaml = objs.map((o) => stringify({ ...o, metadata: { ...o.metadata, namespace: o.metadata.namespace ?? ns } })).join('---\n');
  try {
    return await cp.kubectl(['apply', '--server-side', '--dry-run=server', '--field-manager', 'chart-test', '-f', '-'], yaml);
  } catch (e: any) {
    throw new Error(`${what}: kubectl refused:\n${e.stderr ?? e}`);
  }
}

async function assertAccepted(objs: any[], what: string): Promise<void> {
  const out = await dryRun(objs, what);
  for (const o of objs) assert.match(out, new RegExp(`${o.kind.toLowerCase()}\\S*/${o.metadata.name} serverside-applied \\(server dry run\\)`), `${what}: ${o.kind} ${o.metadata.name}\n${out}`);
}

before(async () => {
  cp = await startControlPlane();
  await cp.kubectl(['apply', '--server-side', '-f', operatorCRDs()]);
  await cp.kubectl(['wait', '--for=condition=Established', '-f', operatorCRDs(), '--timeout=60s']);
  await cp.kubectl(['create', 'namespace', ns]);
}, { timeout: 240_000 });

after(async () => {
  await cp?.stop();
});

test('every ci/ values file with monitoring objects renders ServiceMonitor, PrometheusRule and ConfigMaps the CRDs accept', async () => {
  const files = readdirSync(ciDir).filter((f) => f.endsWith('.yaml')).sort();
  let monitored = 0;
  for (const f of files) {
    const objs = render(['-f', join(ciDir, f)]);
    if (!objs.some((o) => o.kind === 'ServiceMonitor' || o.kind === 'PrometheusRule')) continue;
    monitored++;
    await assertAccepted(objs, f);
  }
  assert.ok(monitored >= 1, `no ci/ values file renders a ServiceMonitor or PrometheusRule (${files.join(', ')})`);
});

test('ServiceMonitor with the bearer token from a Secret', async () => {
  const objs = render([...monitoringOn, '--set', 'metrics.serviceMonitor.bearerToken.source=secret',
    '--set', 'metrics.serviceMonitor.bearerToken.secret.name=prometheus-token']);
  const sm = objs.find((o) => o.kind === 'ServiceMonitor');
  assert.deepEqual(sm.spec.endpoints[0].authorization, { type: 'Bearer', credentials: { name: 'prometheus-token', key: 'token' } });
  assert.equal(sm.spec.endpoints[0].bearerTokenFile, undefined);
  await assertAccepted(objs, 'bearerToken.source=secret');
});

test('PrometheusRule with runbook URLs', async () => {
  const objs = render([...monitoringOn, '--set', 'metrics.prometheusRule.runbookBaseURL=https://example.com/docs/metrics.md']);
  const rules = objs.find((o) => o.kind === 'PrometheusRule').spec.groups.flatMap((g: any) => g.rules);
  assert.equal(rules.length, 6);
  for (const r of rules) assert.equal(r.annotations.runbook_url, `https://example.com/docs/metrics.md#${r.alert.toLowerCase()}`);
  await assertAccepted(objs, 'runbookBaseURL');
});

test('negative control: a ServiceMonitor the CRD schema forbids is refused', async () => {
  const sm = render(monitoringOn).find((o) => o.kind === 'ServiceMonitor');
  sm.spec.endpoints[0].scheme = 'gopher';
  await assert.rejects(dryRun([sm], 'scheme: gopher'), (e: Error) => {
    assert.match(e.message, /spec\.endpoints\[0\]\.scheme: Unsupported value: "gopher": supported values: "http", "https"/, e.message);
    return true;
  });
});
