// A real Prometheus scrapes the operator with a metrics-reader token (and fails without one) while
// two teams' gateways answer 200, 401, 403, 429 and 5xx; then every PromQL example of
// docs/metrics.md and every query of the Grafana dashboard runs against it, and the ones about that
// traffic return its numbers. The exposition passes `promtool check metrics`.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { repoRoot, startControlPlane, type ControlPlane } from '../support/control-plane.js';
import { startOperator, type OperatorProc } from '../support/operator.js';
import { applyYaml, installCRD, namespaceYaml, waitObserved } from '../support/cluster.js';
import { metricsReaderToken, scrapeMetrics } from '../support/metrics.js';
import { promtool } from '../support/prometheus.js';
import { startPrometheus, type PrometheusProc } from '../support/prometheus-server.js';
import { waitFor } from '../support/procs.js';

const job = 'agw-test-access-gateway'; // the job the chart's alerts select (release agw-test)
let cp: ControlPlane;
let op: OperatorProc;
let prom: PrometheusProc;
const agent = new Agent({ connections: 8 });

const gateway = (ns: string, name: string, extra = '') => `
apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: ${name}, namespace: ${ns}}
spec:
  authentication: {audiences: [gw]}
  access: [{serviceAccounts: [{namespace: ${ns}, name: ok}]}]
  ${extra}
  routes:
    - {name: svc, pathPrefix: /svc/, service: {name: missing, port: 80}}
    - {name: kube-api, pathPrefix: /, apiserver: {acceptPaths: ["^/version$"]}}
`;

// these gateways route to a missing Service on purpose (5xx): Programmed, not Ready
const gatewayPort = async (c: ControlPlane, ns: string, name: string) => (await waitObserved(c, ns, name)).status.listener.port as number;

async function call(port: number, path: string, token?: string): Promise<number> {
  const r = await request(`http://127.0.0.1:${port}${path}`, { dispatcher: agent, headers: token ? { authorization: `Bearer ${token}` } : {} });
  await r.body.dump();
  return r.statusCode;
}

/** The one value of an instant query for these labels (a missing series fails). */
async function one(expr: string, labels: Record<string, string> = {}, time?: number): Promise<number> {
  const { result } = await prom.query(expr, time);
  const s = result.filter((r) => Object.entries(labels).every(([k, v]) => r.metric[k] === v));
  assert.equal(s.length, 1, `${expr} ${JSON.stringify(labels)}: ${JSON.stringify(result)}`);
  return s[0]!.value;
}

before(async () => {
  cp = await startControlPlane();
  await installCRD(cp);
  await applyYaml(cp, namespaceYaml('team-a', ['ok', 'out']));
  await applyYaml(cp, namespaceYaml('team-b', ['ok']));
  op = await startOperator(cp); // --metrics-auth kubernetes, the default
  await applyYaml(cp, gateway('team-a', 'a'));
  await applyYaml(cp, gateway('team-b', 'b', 'rateLimit: {requestsPerSecond: 1, burst: 2}'));
  const target = `127.0.0.1:${op.adminPort}`;
  prom = await startPrometheus(`  - job_name: ${job}
    honor_labels: true
    authorization: {type: Bearer, credentials_file: token}
    static_configs: [{targets: ['${target}']}]
  - job_name: no-token
    static_configs: [{targets: ['${target}']}]
`, { token: await metricsReaderToken(cp) });
}, { timeout: 180_000 });

after(async () => {
  await agent.close();
  await prom?.stop();
  await op?.stop();
  await cp?.stop();
});

test('scraped with the reader token, refused without; traffic counted from its first request', async () => {
  const [a, b] = [await gatewayPort(cp, 'team-a', 'a'), await gatewayPort(cp, 'team-b', 'b')];
  // a scrape before any request: the series the dashboards and alerts divide by exist at zero
  const zero = 'access_gateway_responses_total{code="2xx",route="kube-api"}';
  await waitFor('zero 2xx series of both gateways in Prometheus', async () => (await prom.query(zero)).result.length === 2, 30_000, 500);
  assert.deepEqual((await prom.query(zero)).result.map((r) => r.value), [0, 0]);
  const latency = 'access_gateway_request_duration_seconds_bucket{code="2xx",route="kube-api",le="+Inf"}';
  assert.deepEqual((await prom.query(latency)).result.map((r) => r.value), [0, 0], 'the latency histogram too');
  assert.equal(await one(`up{job="${job}"}`), 1);
  const refused = await waitFor('a scrape without the token', async () => (await prom.targets('no-token')).find((t) => t.health !== 'unknown'), 10_000, 200);
  assert.equal(refused.health, 'down');
  assert.match(refused.lastError, /401/);
  assert.equal(await one('up{job="no-token"}'), 0);

  const [okA, outA, okB] = [await cp.token('team-a', 'ok', ['gw']), await cp.token('team-a', 'out', ['gw']), await cp.token('team-b', 'ok', ['gw'])];
  const seq = async (n: number, f: () => Promise<number>) => { const r = []; for (let i = 0; i < n; i++) r.push(await f()); return r; };
  assert.deepEqual(await seq(20, () => call(a, '/version', okA)), Array(20).fill(200));
  assert.deepEqual(await seq(3, () => call(a, '/svc/x', okA)), Array(3).fill(503)); // no such Service
  assert.deepEqual(await seq(4, () => call(a, '/version', outA)), Array(4).fill(403));
  assert.deepEqual(await seq(2, () => call(a, '/version')), Array(2).fill(401));
  assert.deepEqual(await seq(5, () => call(b, '/version', okB)), [200, 200, 429, 429, 429]);

  const total = 'sum by (namespace) (access_gateway_responses_total)';
  await waitFor('a scrape with all the traffic', async () => {
    const r = (await prom.query(total)).result;
    return r.find((s) => s.metric.namespace === 'team-a')?.value === 29 && r.find((s) => s.metric.namespace === 'team-b')?.value === 5;
  }, 30_000, 500);
  const by = (ns: string, gw: string) => ({ namespace: ns, gateway: gw });
  const perCode = 'sum by (namespace, gateway, code) (access_gateway_responses_total)';
  assert.equal(await one(perCode, { ...by('team-a', 'a'), code: '2xx' }), 20);
  assert.equal(await one(perCode, { ...by('team-a', 'a'), code: '4xx' }), 6);
  assert.equal(await one(perCode, { ...by('team-a', 'a'), code: '5xx' }), 3);
  assert.equal(await one(perCode, { ...by('team-b', 'b'), code: '4xx' }), 3);

  // increase() counts the first requests because the series were scraped at zero first (a series
  // that appears with its first value in it would give 0 here); evaluated at the last scrape, so
  // Prometheus extrapolates neither way (the first sample is 0, the window ends on the last)
  const t = await one('max(timestamp(access_gateway_responses_total))');
  const inc = async (expr: string, labels: Record<string, string>) => Math.round(await one(expr, labels, t) * 1e6) / 1e6;
  assert.equal(await inc('sum by (namespace, gateway) (increase(access_gateway_responses_total{code="2xx"}[5m]))', by('team-a', 'a')), 20);
  assert.equal(await inc('sum by (namespace, gateway) (increase(access_gateway_authentications_total{result="unauthenticated"}[5m]))', by('team-a', 'a')), 2);
  assert.equal(await inc('sum by (namespace, gateway, reason) (increase(access_gateway_authorization_denials_total[5m]))', { ...by('team-a', 'a'), reason: 'access' }), 4);
  assert.equal(await inc('sum by (namespace, gateway) (increase(access_gateway_rate_limited_total[5m]))', by('team-b', 'b')), 3);
  // the dashboard's 5xx ratio: every series has the same samples, so the extrapolation cancels
  const ratio = await one('sum by (namespace, gateway) (rate(access_gateway_responses_total{code="5xx"}[5m])) / sum by (namespace, gateway) (rate(access_gateway_responses_total[5m]))', by('team-a', 'a'));
  assert.ok(Math.abs(ratio - 3 / 29) < 1e-9, `5xx ratio ${ratio}`);

  // p99 from the buckets: what histogram_quantile makes of the operator's own counts
  const p99 = await one('histogram_quantile(0.99, sum by (le) (rate(access_gateway_request_duration_seconds_bucket{namespace="team-a",gateway="a",route="kube-api",code="2xx"}[5m])))');
  const want = quantile(0.99, buckets(await scrapeMetrics(cp, op.adminPort), 'namespace="team-a",gateway="a",route="kube-api",code="2xx"'));
  assert.ok(Number.isFinite(p99) && p99 > 0, `p99 ${p99}`);
  assert.ok(Math.abs(p99 - want) < 1e-9, `p99 ${p99}, from the buckets ${want}`);
});

test('every PromQL example in docs/metrics.md and every dashboard query evaluates', async () => {
  const docs = docQueries(readFileSync(join(repoRoot, 'docs', 'metrics.md'), 'utf8'));
  assert.ok(docs.length >= 40, `${docs.length} queries found in docs/metrics.md`);
  const dash = JSON.parse(readFileSync(join(repoRoot, 'deploy', 'grafana-dashboard.json'), 'utf8'));
  const grafana = (e: string) => e.replaceAll('$__rate_interval', '1m').replaceAll('$namespace', '.*').replaceAll('$gateway', '.*');
  const panels = walk(dash.panels).flatMap((p: any) => (p.targets ?? []).map((t: any) => grafana(t.expr)));
  assert.ok(panels.length >= 20, `${panels.length} panel queries`);
  const failed: string[] = [];
  for (const q of [...docs, ...panels]) {
    try { await prom.query(q); } catch (err) { failed.push(`${q}\n  ${(err as Error).message}`); }
  }
  assert.deepEqual(failed, []);
  // an empty answer is not an error in PromQL: every metric a query names must be one the operator exports
  const exported = new Set((await scrapeMetrics(cp, op.adminPort)).split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split(/[{ ]/)[0]!));
  const unknown = [...new Set([...docs, ...panels].flatMap((q) => q.match(/access_gateway_\w+/g) ?? []))].filter((n) => !exported.has(n));
  assert.deepEqual(unknown, [], 'metrics named in docs/metrics.md or the dashboard that the operator does not export');
  for (const v of dash.templating.list.filter((x: any) => x.type === 'query')) {
    const m = /^label_values\((.+), (\w+)\)$/.exec(grafana(v.query.query ?? v.query));
    assert.ok(m, `variable ${v.name}: ${JSON.stringify(v.query)}`);
    const values = new Set((await prom.query(m[1]!)).result.map((r) => r.metric[m[2]!]));
    for (const want of m[2] === 'namespace' ? ['team-a', 'team-b'] : ['a', 'b']) assert.ok(values.has(want), `${v.name} lacks ${want}`);
  }
  // the docs' answers about the traffic above, at the last scrape (no extrapolation: rate = count / 300 s)
  const md = readFileSync(join(repoRoot, 'docs', 'metrics.md'), 'utf8');
  const t = await one('max(timestamp(access_gateway_responses_total))');
  const doc = async (question: string, labels: Record<string, string>) => Math.round(await one(docQuery(md, question), labels, t) * 300 * 1e6) / 1e6;
  assert.equal(await doc('request rate per gateway', { namespace: 'team-a', gateway: 'a' }), 29);
  assert.equal(await doc('request rate per gateway', { namespace: 'team-b', gateway: 'b' }), 5);
  assert.equal(await doc('5xx ratio per gateway', { namespace: 'team-a', gateway: 'a' }), Math.round(300 * 3 / 29 * 1e6) / 1e6);
  assert.equal(await doc('authentication failures (401)', { namespace: 'team-a', gateway: 'a' }), 2);
  assert.equal(await doc('authorization denials by reason', { namespace: 'team-a', gateway: 'a', reason: 'access' }), 4);
  assert.equal(await doc('rate-limited (429)', { namespace: 'team-b', gateway: 'b' }), 3);
  const p99 = await one(docQuery(md, 'p99 of successful requests only'), { namespace: 'team-a', gateway: 'a', route: 'kube-api' }, t);
  const want = quantile(0.99, buckets(await scrapeMetrics(cp, op.adminPort), 'namespace="team-a",gateway="a",route="kube-api",code="2xx"'));
  assert.ok(Math.abs(p99 - want) < 1e-9, `p99 ${p99}, from the buckets ${want}`);
  // a panel about the traffic above returns it
  const rate = panels.find((q) => q.startsWith('sum by (namespace, gateway) (rate(access_gateway_responses_total{'))!;
  assert.ok(((await prom.query(rate)).result.find((r) => r.metric.gateway === 'a')?.value ?? 0) > 0, rate);
});

test('promtool check metrics: the exposition after a mixed run has no lint problems', async () => {
  const text = await scrapeMetrics(cp, op.adminPort);
  assert.match(text, /^access_gateway_rate_limited_total\{namespace="team-b",gateway="b"\} [1-9]/m, 'the mixed run is in it');
  const r = await run(promtool(), ['check', 'metrics'], text);
  // every problem is one docs/metrics.md explains under "Lint exceptions", and every one it explains occurs
  const problems = r.output.split('\n').filter(Boolean).map((l) => l.split(' ')[0]!);
  const md = readFileSync(join(repoRoot, 'docs', 'metrics.md'), 'utf8');
  const section = md.slice(md.indexOf('### Lint exceptions'), md.indexOf('\n## ', md.indexOf('### Lint exceptions')));
  const explained = [...section.matchAll(/^- `(access_gateway_\w+)`/gm)].map((m) => m[1]!);
  assert.deepEqual(problems.sort(), explained.sort(), r.output);
});

/**
 * The PromQL of docs/metrics.md: the first code span of each `| question | query |` table's query
 * column, and every other code span that names a metric with a selector or a function.
 */
function docQueries(md: string): string[] {
  const out = [...md.matchAll(/`([^`\n]+)`/g)].map((m) => m[1]!).filter((q) => q.includes('access_gateway_') && /[({]/.test(q));
  let inTable = false;
  for (const line of md.split('\n')) {
    if (/^\| question \| query \|/.test(line)) { inTable = true; continue; }
    if (!line.startsWith('|')) { inTable = false; continue; }
    if (!inTable || /^\|\s*-/.test(line)) continue;
    const cell = line.split(' | ')[1] ?? '';
    const code = /`([^`]+)`/.exec(cell);
    assert.ok(code, `no query in: ${line}`);
    out.push(code[1]!);
  }
  return [...new Set(out)];
}

/** The query of the docs table row asking `question`. */
function docQuery(md: string, question: string): string {
  const row = md.split('\n').find((l) => l.startsWith(`| ${question} | \``));
  assert.ok(row, `docs/metrics.md has no row "${question}"`);
  return /`([^`]+)`/.exec(row.split(' | ')[1]!)![1]!;
}

function walk(panels: any[]): any[] {
  return panels.flatMap((p) => [p, ...walk(p.panels ?? [])]);
}

/** The cumulative buckets [le, count] of one histogram series in an exposition. */
function buckets(text: string, labels: string): [number, number][] {
  const re = new RegExp(`^access_gateway_request_duration_seconds_bucket\\{${labels.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')},le="([^"]+)"\\} (\\d+)$`, 'gm');
  return [...text.matchAll(re)].map((m) => [m[1] === '+Inf' ? Infinity : Number(m[1]), Number(m[2])]);
}

/** Prometheus's histogram_quantile over cumulative buckets (linear within a bucket). */
function quantile(q: number, b: [number, number][]): number {
  const total = b[b.length - 1]![1];
  const rank = q * total;
  const i = b.findIndex(([, c]) => c >= rank);
  if (b[i]![0] === Infinity) return b[b.length - 2]![0];
  const [lowLe, lowCount] = i === 0 ? [0, 0] : b[i - 1]!;
  return lowLe + (b[i]![0] - lowLe) * (rank - lowCount) / (b[i]![1] - lowCount);
}

async function run(cmd: string, args: string[], input: string): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, output: stdout + stderr }));
    child.stdin!.end(input);
  });
}
