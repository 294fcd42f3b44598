// A route's series exist at zero once it is planned; requests that matched no route (route "")
// are counted, but get no upstream series: there is no upstream to describe.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GatewayMetrics, RouteMetrics } from '../../src/dataplane/route-metrics.js';
import { Registry } from 'prom-client';
import { createMetrics, testMetrics } from '../../src/observability/metrics.js';

async function scrape(m: ReturnType<typeof testMetrics>): Promise<string> {
  const e = await m.exposition();
  return e.head + Buffer.concat([...e.chunks]).toString('utf8');
}

test('a route has upstream series at zero; route "" has none, even after its children are used', async () => {
  const m = testMetrics();
  const route = new RouteMetrics(m, 'team-a', 'gw', 'kube-api');
  const none = new RouteMetrics(m, 'team-a', 'gw', '');
  none.done('GET', 404, 0.001);
  none.errors.connect.inc();
  none.upstream.observe(0.1);
  route.done('GET', 200, 0.002);
  const text = await scrape(m);
  for (const f of ['upstream_duration_seconds_count', 'upstream_errors_total', 'endpoint_ejections_total', 'upgraded_connections']) {
    assert.match(text, new RegExp(`^access_gateway_${f}\\{namespace="team-a",gateway="gw",route="kube-api"`, 'm'), f);
    assert.doesNotMatch(text, new RegExp(`^access_gateway_${f}\\{[^}]*route=""`, 'm'), f);
  }
  assert.match(text, /^access_gateway_requests_total\{namespace="team-a",gateway="gw",route="",method="GET",code="4xx"\} 1$/m);
  assert.match(text, /^access_gateway_requests_total\{namespace="team-a",gateway="gw",route="kube-api",method="GET",code="2xx"\} 1$/m);
});

test('before any request: responses_total at zero for 2xx, 4xx, 5xx on every route; request_duration_seconds for 2xx on named routes', async () => {
  const m = testMetrics();
  new RouteMetrics(m, 'team-a', 'gw', 'kube-api');
  new RouteMetrics(m, 'team-a', 'gw', '');
  const text = await scrape(m);
  for (const route of ['kube-api', '']) {
    for (const code of ['2xx', '4xx', '5xx']) {
      assert.match(text, new RegExp(`^access_gateway_responses_total\\{namespace="team-a",gateway="gw",route="${route}",code="${code}"\\} 0$`, 'm'), `${route} ${code}`);
    }
  }
  const hist = (route: string, code: string) => new RegExp(`^access_gateway_request_duration_seconds_bucket\\{namespace="team-a",gateway="gw",route="${route}",code="${code}",le="\\+Inf"\\} 0$`, 'm');
  assert.match(text, hist('kube-api', '2xx'));
  assert.doesNotMatch(text, hist('kube-api', '5xx'), 'only 2xx latency is pre-created');
  assert.doesNotMatch(text, hist('', '2xx'), 'route "" has no pre-created latency');
  assert.doesNotMatch(text, /code="3xx"/);
  assert.doesNotMatch(text, /^access_gateway_requests_total\{/m, 'requests_total children are made on first use');
});

test('responses_total counts every answer once by status class, 3xx on first use', async () => {
  const m = testMetrics();
  const r = new RouteMetrics(m, 'team-a', 'gw', 'kube-api');
  r.done('GET', 200, 0.001);
  r.done('POST', 201, 0.001);
  r.done('GET', 503, 0.001);
  r.done('GET', 302, 0.001);
  const text = await scrape(m);
  const v = (code: string) => Number(new RegExp(`^access_gateway_responses_total\\{namespace="team-a",gateway="gw",route="kube-api",code="${code}"\\} (\\d+)$`, 'm').exec(text)?.[1]);
  assert.deepEqual(['2xx', '3xx', '4xx', '5xx'].map(v), [2, 1, 0, 1]);
});

test('a removed route\'s or gateway\'s series do not come back when what still holds them (a session ending) uses them', async () => {
  const m = testMetrics();
  const old = new RouteMetrics(m, 'team-a', 'gw', 'r-1');
  const gw = new GatewayMetrics(m, 'team-a', 'gw');
  new RouteMetrics(m, 'team-a', 'gw', 'r-2');
  m.forget('team-a', 'gw', ['r-1']); // renamed r-1 to r-2; a session on r-1 ends after
  old.sessionEnded('revoked', 12);
  old.done('GET', 101, 12);
  old.done('POST', 500, 0.1);
  let text = await scrape(m);
  assert.doesNotMatch(text, /route="r-1"/);
  assert.match(text, /route="r-2"/);
  // named again: its series are back, from the new holder
  const again = new RouteMetrics(m, 'team-a', 'gw', 'r-1');
  again.sessionEnded('closed', 1);
  assert.match(await scrape(m), /^access_gateway_sessions_ended_total\{namespace="team-a",gateway="gw",route="r-1",reason="closed"\} 1$/m);
  // the gateway gone: its draining connections make no series of it
  m.forget('team-a', 'gw');
  gw.connectionRefused('namespace');
  gw.requestDeferred();
  gw.sessionRefused();
  again.done('GET', 200, 0.1);
  text = await scrape(m);
  assert.doesNotMatch(text, /gateway="gw"/);
});

test('--max-metric-series-per-namespace: routes planned past the bound count in their gateway\'s overflow series, sums by gateway stay whole; the namespace\'s count is exported; other namespaces are unaffected', async () => {
  const m = createMetrics(new Registry(), { maxSeriesPerNamespace: 200 });
  new GatewayMetrics(m, 'team-a', 'gw'); // 13 series
  const routes = ['', 'a', 'b', 'c', 'd', 'e', 'f'].map((r) => new RouteMetrics(m, 'team-a', 'gw', r)); // 3, then 46 each: 200 at d
  const other = new RouteMetrics(m, 'team-b', 'gw', 'a');
  for (const r of routes) r.done('GET', 200, 0.01);
  routes[1]!.done('POST', 503, 0.01); // a new series past the bound
  other.done('DELETE', 200, 0.01);
  const text = await scrape(m);
  for (const r of ['a', 'b', 'c', 'd']) assert.match(text, new RegExp(`^access_gateway_responses_total\\{namespace="team-a",gateway="gw",route="${r}",code="2xx"\\} 1$`, 'm'), r);
  assert.doesNotMatch(text, /route="[ef]"/);
  // e and f were planned past the bound; route a's 5xx is planned (made before), its POST series not
  assert.match(text, /^access_gateway_responses_total\{namespace="team-a",gateway="gw",route="\(overflow\)",code="\(overflow\)"\} 2$/m);
  assert.match(text, /^access_gateway_requests_total\{namespace="team-a",gateway="gw",route="\(overflow\)",method="\(overflow\)",code="\(overflow\)"\} 8$/m);
  // the 2xx latency of e and f, and (made on first use) of route "" and a's 5xx
  assert.match(text, /^access_gateway_request_duration_seconds_count\{namespace="team-a",gateway="gw",route="\(overflow\)",code="\(overflow\)"\} 4$/m);
  assert.match(text, /^access_gateway_upstream_duration_seconds_count\{namespace="team-a",gateway="gw",route="\(overflow\)"\} 0$/m);
  const sum = [...text.matchAll(/^access_gateway_responses_total\{namespace="team-a",gateway="gw",[^}]*\} (\d+)$/gm)].reduce((n, x) => n + Number(x[1]), 0);
  assert.equal(sum, 8, 'every request of the gateway is in its sum');
  assert.match(text, /^access_gateway_requests_total\{namespace="team-b",gateway="gw",route="a",method="DELETE",code="2xx"\} 1$/m);
  // the bound, and the gateway's overflow series (counted, never refused): requests, responses, upgraded, errors,
  // ejections 1 each, the two latency histograms 19 each
  assert.match(text, /^access_gateway_namespace_metric_series\{namespace="team-a"\} 243$/m);
  assert.match(text, /^access_gateway_namespace_metric_series\{namespace="team-b"\} 47$/m);
});
