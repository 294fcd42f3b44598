// Metrics and access logs: exact counts after a mixed run, bounded series under many callers and
// paths, a parseable exposition, and JSON access-log lines without tokens.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Agent, request } from 'undici';
import { startControlPlane, type ControlPlane } from '../support/control-plane.js';
import { logLines, startOperator, type OperatorProc } from '../support/operator.js';
import { applyYaml, installCRD, namespaceYaml, waitObserved } from '../support/cluster.js';
import { waitFor } from '../support/procs.js';
import { scrapeMetrics } from '../support/metrics.js';

// these gateways route to a missing Service on purpose: Programmed, not Ready
const gatewayPort = async (c: ControlPlane, n: string, name: string) => (await waitObserved(c, n, name)).status.listener.port as number;

const parsePrometheus = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => any[];
const ns = 'team-m';
let cp: ControlPlane;
let op: OperatorProc;
let ok: string;
let out: string;
const agent = new Agent({ connections: 16 });

const gateway = (name: string, extra = '') => `
apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: ${name}, namespace: ${ns}}
spec:
  authentication: {audiences: [gw]}
  access: [{serviceAccounts: [{namespace: ${ns}, name: ok}]}]
  ${extra}
  routes:
    - {name: svc, pathPrefix: /svc/, service: {name: missing, port: 80}}
    - {name: kube-api, pathPrefix: /, apiserver: {acceptPaths: ["^/version$", "^/api/.*"]}}
`;

async function call(port: number, path: string, token?: string): Promise<number> {
  const r = await request(`http://127.0.0.1:${port}${path}`, { dispatcher: agent, headers: token ? { authorization: `Bearer ${token}` } : {} });
  await r.body.dump();
  return r.statusCode;
}
async function scrape(): Promise<string> {
  return scrapeMetrics(cp, op.adminPort);
}
function value(families: any[], name: string, labels: Record<string, string>): number {
  const f = families.find((x) => x.name === name);
  const m = f?.metrics.find((x: any) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v));
  // a missing series is a failure, not a zero
  if (!m) throw new Error(`no series ${name}${JSON.stringify(labels)}`);
  return Number(m.value);
}

before(async () => {
  cp = await startControlPlane();
  await installCRD(cp);
  await applyYaml(cp, namespaceYaml(ns, ['ok', 'out']));
  // a bound on series per namespace this file's team-m stays well under; team-big's 64 routes pass it
  op = await startOperator(cp, { args: ['--max-metric-series-per-namespace', '2000'] });
  await applyYaml(cp, gateway('m'));
  await applyYaml(cp, gateway('limited', 'rateLimit: {requestsPerSecond: 1, burst: 2}'));
  ok = await cp.token(ns, 'ok', ['gw']);
  out = await cp.token(ns, 'out', ['gw']);
}, { timeout: 180_000 });

after(async () => {
  await agent.close();
  await op?.stop();
  await cp?.stop();
});

test('after a mixed run, /metrics shows exactly those counts in the right series', async () => {
  const m = await gatewayPort(cp, ns, 'm');
  const limited = await gatewayPort(cp, ns, 'limited');
  const expect = (got: number[], want: number) => assert.deepEqual(got, got.map(() => want));
  const allowed = [];
  for (let i = 0; i < 10; i++) allowed.push(await call(m, '/version', ok)); // sequential: cache hits are exact
  expect(allowed, 200);
  for (let i = 0; i < 3; i++) assert.equal(await call(m, '/svc/x', ok), 503);
  for (let i = 0; i < 4; i++) assert.equal(await call(m, '/version', out), 403);
  for (let i = 0; i < 2; i++) assert.equal(await call(m, '/version'), 401);
  const lim = [];
  for (let i = 0; i < 5; i++) lim.push(await call(limited, '/version', ok));
  assert.deepEqual(lim, [200, 200, 429, 429, 429]);

  const text = await scrape();
  const fams = parsePrometheus(text);
  const g = (gateway: string, extra: Record<string, string>) => ({ namespace: ns, gateway, ...extra });
  const req = 'access_gateway_requests_total';
  assert.equal(value(fams, req, g('m', { route: 'kube-api', method: 'GET', code: '2xx' })), 10);
  assert.equal(value(fams, req, g('m', { route: 'svc', method: 'GET', code: '5xx' })), 3);
  assert.equal(value(fams, req, g('m', { route: '', method: 'GET', code: '4xx' })), 6);
  assert.equal(value(fams, req, g('limited', { route: 'kube-api', method: 'GET', code: '2xx' })), 2);
  assert.equal(value(fams, req, g('limited', { route: '', method: 'GET', code: '4xx' })), 3);
  assert.equal(value(fams, 'access_gateway_rate_limited_total', g('limited', {})), 3);
  assert.equal(value(fams, 'access_gateway_authentications_total', g('m', { result: 'allowed' })), 17);
  assert.equal(value(fams, 'access_gateway_authentications_total', g('m', { result: 'unauthenticated' })), 2);
  assert.equal(value(fams, 'access_gateway_authorization_denials_total', g('m', { reason: 'access' })), 4);
  assert.equal(value(fams, 'access_gateway_token_cache_requests_total', g('m', { result: 'miss' })), 2);
  assert.equal(value(fams, 'access_gateway_token_cache_requests_total', g('m', { result: 'hit' })), 15);
  assert.equal(value(fams, 'access_gateway_token_reviews_total', { result: 'authenticated' }), 3);
  assert.equal(value(fams, 'access_gateway_requests_in_flight', g('m', {})), 0);
  const count = /^access_gateway_request_duration_seconds_count\{namespace="team-m",gateway="m",route="kube-api",code="2xx"\} (\d+)$/m.exec(text);
  assert.equal(Number(count?.[1]), 10);
  assert.ok(value(fams, 'access_gateway_reconcile_total', { result: 'success' }) >= 2);
  assert.equal(value(fams, 'access_gateway_listeners', { state: 'open' }), 2);
  assert.ok(value(fams, 'access_gateway_request_bytes_total', g('m', {})) > 0);
});

test('series stay bounded with 1,000 distinct callers and 1,000 distinct paths; no path or token in labels', async () => {
  const m = await gatewayPort(cp, ns, 'm');
  // every kind of answer once, so all series exist
  await call(m, '/healthz', ok); // filter 403 on kube-api
  await call(m, '/api/v1/nope-0', ok); // apiserver 404
  await call(m, '/version', 'garbage-0');
  // (requests_deferred_total is made when 8 callers at once first outrun --requests-per-turn-per-namespace: one series at most)
  const series = (text: string) => text.split('\n').filter((l) => l.startsWith('access_gateway_') && !/^access_gateway_(process|nodejs|requests_deferred)_/.test(l)).length;
  const before = series(await scrape());
  let i = 0;
  const worker = async () => {
    while (i < 1000) {
      const n = ++i;
      await call(m, '/version', `garbage-${n}`);
      await call(m, `/api/v1/nope-${n}`, ok);
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  const text = await scrape();
  assert.equal(series(text), before);
  assert.ok(text.split('\n').filter((l) => l.startsWith('access_gateway_requests_deferred_total{')).length <= 1);
  assert.doesNotMatch(text, /nope-|garbage-|system:serviceaccount/);
  parsePrometheus(text);
});

test('access-log lines are JSON with caller, gateway, route, method, status, duration, upstream and request id, never a token', async () => {
  const m = await gatewayPort(cp, ns, 'm');
  // (whole lines only: the log is written in pieces, and one may end in the middle of a line)
  const requestLines = () => logLines(op, (l) => l.msg === 'request');
  // this test's lines: those of requests that ended after now (the earlier tests' lines may still
  // be on their way: access lines are written in batches, up to 20 ms late)
  const t0 = Date.now();
  for (let i = 0; i < 5; i++) assert.equal(await call(m, '/version', ok), 200);
  for (let i = 0; i < 5; i++) assert.equal(await call(m, '/version', `${ok}x`), 401);
  // the operator's stdout reaches the file through a pipe: wait for the ten lines
  const reqs = await waitFor('ten access-log lines', async () => { const r = requestLines().filter((l) => l.time >= t0); return r.length >= 10 ? r : undefined; }, 10_000);
  assert.equal(reqs.length, 10);
  const okLine = reqs.find((l) => l.status === 200 && l.gateway === `${ns}/m`);
  for (const k of ['reqId', 'caller', 'gateway', 'route', 'method', 'status', 'durationMs', 'upstream']) assert.ok(k in okLine, k);
  assert.equal(okLine.caller, `system:serviceaccount:${ns}:ok`);
  assert.equal(okLine.route, 'kube-api');
  assert.equal(okLine.method, 'GET');
  assert.equal(okLine.upstream, 'apiserver');
  assert.equal(reqs.filter((l) => l.status === 401 && l.caller === '-').length, 5);
  const raw = readFileSync(op.logFile, 'utf8');
  for (const t of [ok, out]) assert.ok(!raw.includes(t) && !raw.includes(t.split('.')[2]!), 'token in the log');
});

test('a removed route and a deleted gateway take their series with them; other gateways keep theirs', async () => {
  const has = (text: string, gw: string, route?: string) =>
    new RegExp(`^access_gateway_\\w+\\{namespace="${ns}",gateway="${gw}"${route === undefined ? '' : `,route="${route}"`}[,}]`, 'm').test(text);
  await applyYaml(cp, gateway('gone'));
  const port = await gatewayPort(cp, ns, 'gone');
  assert.equal(await call(port, '/version', ok), 200);
  let text = await scrape();
  assert.ok(has(text, 'gone', 'svc') && has(text, 'gone', 'kube-api'), 'series of the new gateway');
  await applyYaml(cp, gateway('gone').replace(/^ {4}- \{name: svc,.*\n/m, ''));
  await waitFor('route svc series dropped', async () => !has(await scrape(), 'gone', 'svc'), 20_000);
  text = await scrape();
  assert.ok(has(text, 'gone', 'kube-api'), 'the kept route keeps its series');
  assert.match(text, /^access_gateway_requests_total\{namespace="team-m",gateway="gone",route="kube-api",method="GET",code="2xx"\} 1$/m);
  await cp.api('DELETE', `/apis/access-gateway.io/v1alpha1/namespaces/${ns}/accessgateways/gone`);
  await waitFor('gateway series dropped', async () => !has(await scrape(), 'gone'), 20_000);
  text = await scrape();
  assert.ok(has(text, 'm', 'kube-api') && has(text, 'limited'), 'other gateways keep their series');
  parsePrometheus(text);
});

test('--max-metric-series-per-namespace: a team\'s routes past the bound count in its gateway\'s overflow series; its requests are all in the gateway\'s sum; another team\'s series are whole', async () => {
  const big = 'team-big';
  await applyYaml(cp, namespaceYaml(big, ['ok']));
  // 64 routes: ~46 series each at rest, ~3,000 in all
  const routes = Array.from({ length: 64 }, (_, i) => `    - {name: r${i}, pathPrefix: /r${i}/, apiserver: {acceptPaths: ["^/version$"]}}`).join('\n');
  await applyYaml(cp, `
apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: wide, namespace: ${big}}
spec:
  authentication: {audiences: [gw]}
  access: [{serviceAccounts: [{namespace: ${big}, name: ok}]}]
  routes:
${routes}
`);
  const port = await gatewayPort(cp, big, 'wide');
  const token = await cp.token(big, 'ok', ['gw']);
  assert.equal(await call(port, '/r0/nothing', token), 403); // r0: planned first, under the bound
  assert.equal(await call(port, '/r63/nothing', token), 403); // r63: past it
  const text = await scrape();
  const families = parsePrometheus(text);
  const held = value(families, 'access_gateway_namespace_metric_series', { namespace: big });
  assert.ok(held <= 2000 + 100 && held > 1900, `team-big holds ${held} series: the bound and its gateway's overflow series`);
  assert.match(text, /^access_gateway_responses_total\{namespace="team-big",gateway="wide",route="r0",code="4xx"\} 1$/m);
  assert.doesNotMatch(text, /route="r63"/);
  assert.equal(value(families, 'access_gateway_responses_total', { namespace: big, gateway: 'wide', route: '(overflow)', code: '(overflow)' }), 1);
  const lines = text.split('\n').filter((l) => l.includes(`namespace="${big}"`) && !l.startsWith('access_gateway_namespace_metric_series')).length;
  assert.ok(lines <= 2000 + 100, `team-big exports ${lines} lines: its bound and its overflow series`);
  // another team's series are made as before
  assert.ok(value(families, 'access_gateway_namespace_metric_series', { namespace: ns }) < 2000);
  assert.equal(await call(await gatewayPort(cp, ns, 'm'), '/nothing', ok), 403);
  assert.match(await scrape(), /^access_gateway_requests_total\{namespace="team-m",gateway="m",route="kube-api",method="GET",code="4xx"\} \d+$/m);
});
