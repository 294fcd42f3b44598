// The operator's admin port against a real apiserver (--metrics-auth kubernetes, the default):
// /metrics needs a token the apiserver authenticates (TokenReview) of a user allowed `get` on
// /metrics (SubjectAccessReview); /healthz and /readyz stay open; no apiserver: 503.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { startControlPlane, type ControlPlane } from '../support/control-plane.js';
import { startOperator, type OperatorProc } from '../support/operator.js';
import { bearer, curl, installCRD, namespaceYaml, applyYaml } from '../support/cluster.js';
import { metricsReaderToken } from '../support/metrics.js';
import { connect, type Socket } from 'node:net';
import { waitFor } from '../support/procs.js';
import { adminConnections } from '../../src/cli/runtime.js';

const parsePrometheus = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => any[];
const ns = 'team-adm';
let cp: ControlPlane;
let op: OperatorProc;
let reader: string;

const url = (path: string) => `http://127.0.0.1:${op.adminPort}${path}`;
function value(text: string, name: string, labels: Record<string, string>): number {
  const f = parsePrometheus(text).find((x) => x.name === name);
  const m = f?.metrics.find((x: any) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v));
  assert.ok(m, `${name} ${JSON.stringify(labels)} present`);
  return Number(m.value);
}

before(async () => {
  cp = await startControlPlane();
  await installCRD(cp);
  await applyYaml(cp, namespaceYaml(ns, ['nobody']));
  op = await startOperator(cp, { args: ['--metrics-auth', 'kubernetes'] });
  reader = await metricsReaderToken(cp);
}, { timeout: 180_000 });

after(async () => {
  await op?.stop();
  await cp?.stop();
});

test('/healthz and /readyz answer without a token', async () => {
  assert.equal((await curl(url('/healthz'))).status, 200);
  assert.equal((await curl(url('/readyz'))).status, 200);
});

test('a flood of idle connections to the admin port (any pod may open them) does not keep the probes out', async () => {
  // as many as the operator holds, from an address of their own (127.0.0.2): the probe from
  // 127.0.0.1 makes one too many, and the flood's oldest make room (another connection the
  // operator still holds, such as a readiness poll's kept one, may close a second)
  const idle = await Promise.all(Array.from({ length: adminConnections }, () => new Promise<Socket>((resolve) => {
    const s = connect({ port: op.adminPort, host: '127.0.0.1', localAddress: '127.0.0.2' }, () => resolve(s));
    s.on('error', () => {});
    s.resume();
  })));
  try {
    assert.equal((await curl(url('/readyz'))).status, 200);
    await waitFor('the oldest idle connection closed', async () => idle[0]!.destroyed, 5_000, 50);
    await new Promise((r) => setTimeout(r, 200)); // any other close arrives meanwhile
    const closed = idle.filter((s) => s.destroyed).length;
    assert.ok(closed >= 1 && closed <= 2, `one or two closed to make room for the probe: ${closed}`);
    assert.deepEqual(idle.map((s) => s.destroyed), idle.map((_, i) => i < closed), 'the oldest are closed first');
  } finally {
    for (const s of idle) s.destroy();
  }
});

test('/metrics: 401 without a valid token, 403 for a user not bound to the metrics reader role, 200 for one bound', async () => {
  const garbage = 'not-a-token';
  const wrongAudience = await cp.token(ns, 'nobody', ['access-gateway']); // a gateway token: not for the apiserver
  const nobody = await cp.token(ns, 'nobody', []);
  const refusals: [string, string[], number][] = [
    ['no Authorization', [], 401],
    ['Basic credentials', ['-H', 'Authorization: Basic dXNlcjpwYXNz'], 401],
    ['empty Bearer', ['-H', 'Authorization: Bearer '], 401],
    ['two Authorization headers (one valid)', [...bearer(reader), ...bearer(garbage)], 401],
    ['garbage token', bearer(garbage), 401],
    ['token for a gateway audience', bearer(wrongAudience), 401],
    ['authenticated, no get on /metrics', bearer(nobody), 403],
  ];
  for (const [what, args, status] of refusals) {
    const r = await curl(url('/metrics'), args);
    assert.equal(r.status, status, what);
    if (status === 401) assert.match(r.headers, /^www-authenticate: Bearer\r?$/im, what);
    assert.doesNotMatch(r.body, /access_gateway_/, `${what}: no metrics`);
  }
  const ok = await curl(url('/metrics'), bearer(reader));
  assert.equal(ok.status, 200);
  assert.match(ok.headers, /^content-type: text\/plain; version=0\.0\.4/im);
  // Prometheus text, with these very decisions counted (the allowed scrape included)
  assert.equal(value(ok.body, 'access_gateway_admin_auth_decisions_total', { result: 'unauthenticated' }), 6);
  assert.equal(value(ok.body, 'access_gateway_admin_auth_decisions_total', { result: 'forbidden' }), 1);
  assert.equal(value(ok.body, 'access_gateway_admin_auth_decisions_total', { result: 'allowed' }), 1);
  assert.equal(value(ok.body, 'access_gateway_admin_auth_decisions_total', { result: 'unavailable' }), 0);
  // the apiserver was asked: garbage, wrong audience, nobody, reader (TokenReview); nobody, reader (SubjectAccessReview)
  assert.equal(value(ok.body, 'access_gateway_admin_auth_reviews_total', { review: 'TokenReview', result: 'denied' }), 2);
  assert.equal(value(ok.body, 'access_gateway_admin_auth_reviews_total', { review: 'TokenReview', result: 'allowed' }), 2);
  assert.equal(value(ok.body, 'access_gateway_admin_auth_reviews_total', { review: 'SubjectAccessReview', result: 'denied' }), 1);
  assert.equal(value(ok.body, 'access_gateway_admin_auth_reviews_total', { review: 'SubjectAccessReview', result: 'allowed' }), 1);
  // the gateways' own TokenReview counter is not touched by scrapes
  assert.doesNotMatch(ok.body, /^access_gateway_token_reviews_total\{[^}]*\} [1-9]/m);
  // a second scrape is decided from the cache: no new review
  const again = await curl(url('/metrics'), bearer(reader));
  assert.equal(again.status, 200);
  assert.equal(value(again.body, 'access_gateway_admin_auth_reviews_total', { review: 'TokenReview', result: 'allowed' }), 2);
  assert.equal(value(again.body, 'access_gateway_admin_auth_cache_requests_total', { result: 'hit' }), 1);
});

test('the apiserver unreachable: /metrics is 503 for a token not yet decided (fail closed), probes still answer', async () => {
  const fresh = await metricsReaderToken(cp, 'prometheus-2');
  await cp.stopApiserver();
  try {
    const r = await curl(url('/metrics'), bearer(fresh));
    assert.equal(r.status, 503);
    assert.match(r.headers, /^retry-after: 1\r?$/im);
    assert.doesNotMatch(r.body, /access_gateway_/);
    assert.equal((await curl(url('/healthz'))).status, 200);
  } finally {
    await cp.startApiserver();
  }
  // the 503 was not remembered: the same token is allowed once the apiserver is back
  const ok = await curl(url('/metrics'), bearer(fresh));
  assert.equal(ok.status, 200);
  assert.equal(value(ok.body, 'access_gateway_admin_auth_decisions_total', { result: 'unavailable' }), 1);
  assert.equal(value(ok.body, 'access_gateway_admin_auth_reviews_total', { review: 'TokenReview', result: 'error' }), 1);
});
