// The chart's alerts, tested with promtool: the PrometheusRule rendered with ci/monitoring-values.yaml
// (release agw-test, namespace agw-system) becomes a rule file that `promtool check rules` accepts,
// and every test/prometheus/*.test.yaml (promtool unit tests: input series, expected alerts) passes.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { repoRoot } from '../support/control-plane.js';
import { helm } from '../support/chart-operator.js';
import { promtool } from '../support/prometheus.js';

const chart = join(repoRoot, 'charts', 'access-gateway');
const testsDir = join(repoRoot, 'test', 'prometheus');
let dir: string;
let alerts: string[];

function run(args: string[]): { status: number | null; out: string } {
  const r = spawnSync(promtool(), args, { cwd: dir, encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}${r.error ?? ''}` };
}

before(() => {
  const text = execFileSync(helm(), ['template', 'agw-test', chart, '-f', join(chart, 'ci', 'monitoring-values.yaml'), '--namespace', 'agw-system'], { encoding: 'utf8' });
  const rules = parseAllDocuments(text).map((d) => d.toJS()).filter((o) => o?.kind === 'PrometheusRule');
  assert.equal(rules.length, 1, 'one PrometheusRule rendered');
  const groups = rules[0].spec.groups;
  alerts = groups.flatMap((g: any) => g.rules.map((r: any) => r.alert));
  dir = mkdtempSync(join(tmpdir(), 'agw-rules-'));
  writeFileSync(join(dir, 'rules.yaml'), JSON.stringify({ groups }, null, 2));
});

after(() => rmSync(dir, { recursive: true, force: true }));

test('promtool check rules accepts the rendered PrometheusRule', () => {
  const r = run(['check', 'rules', '--lint=all', '--lint-fatal', 'rules.yaml']);
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /SUCCESS: 6 rules found/, r.out);
  assert.doesNotMatch(r.out, /WARNING|FAILED/, r.out);
  assert.deepEqual(alerts, ['AccessGatewayHighErrorRatio', 'AccessGatewayAuthenticationFailures', 'AccessGatewayReconcileErrors', 'AccessGatewayInformerStale', 'AccessGatewayCertificateExpiresSoon', 'AccessGatewayNoLeader']);
});

test('promtool test rules: every alert fires when it should and only then', async (t) => {
  const files = readdirSync(testsDir).filter((f) => f.endsWith('.test.yaml')).sort();
  // every alert has tests that expect it to fire
  const tested = new Set(files.flatMap((f) => parse(readFileSync(join(testsDir, f), 'utf8')).tests
    .flatMap((g: any) => g.alert_rule_test.filter((c: any) => c.exp_alerts.length > 0).map((c: any) => c.alertname))));
  assert.deepEqual([...tested].sort(), [...alerts].sort());
  for (const f of files) {
    await t.test(f, () => {
      copyFileSync(join(testsDir, f), join(dir, f));
      const r = run(['test', 'rules', f]);
      assert.equal(r.status, 0, r.out);
      assert.match(r.out, /SUCCESS/, r.out);
      assert.doesNotMatch(r.out, /WARNING|FAILED/, r.out);
    });
  }
});
