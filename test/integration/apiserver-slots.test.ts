// --max-apiserver-requests-per-namespace (the chart's operator.maxApiserverRequestsPerNamespace)
// with the chart's least-privilege operator, two teams and curl: past the limit a team's apiserver
// requests wait in order behind its own (another team's do not), a client that leaves gives its
// place back (held or waited for), the wait counts toward the route's timeout, and a request is
// admitted again when its turn comes. The apiserver is paused (SIGSTOP) so requests stay unanswered.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startControlPlane, type ControlPlane } from '../support/control-plane.js';
import { chartArgs, startChartOperator } from '../support/chart-operator.js';
import { applyYaml, bearer, curl, gatewayPort, installCRD, namespaceYaml, type CurlResult } from '../support/cluster.js';
import { scrapeMetrics } from '../support/metrics.js';
import { waitFor } from '../support/procs.js';

let cp: ControlPlane;
let op: Awaited<ReturnType<typeof startChartOperator>>;
const base: Record<string, string> = {};
const token: Record<string, string> = {};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const gateway = (ns: string, tempUntil = '2000-01-01T00:00:00Z') => `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: api, namespace: ${ns}}
spec:
  authentication: {audiences: [gw], cacheTTLSeconds: 300}
  access:
    - {serviceAccounts: [{namespace: ${ns}, name: app}]}
    - {serviceAccounts: [{namespace: ${ns}, name: temp}], notAfter: "${tempUntil}"}
  routes:
    - {name: quick, pathPrefix: /quick/, rewritePrefix: /, timeoutSeconds: 1, apiserver: {identity: Impersonate}}
    - {name: kube-api, pathPrefix: /, timeoutSeconds: 8, apiserver: {identity: Impersonate}}
`;

/** A request from `ns`'s app, started now (curl gives up after `maxTime` s). */
const call = (ns: string, path: string, maxTime = 20, who = token[ns]!): Promise<CurlResult | Error> =>
  curl(`${base[ns]}${path}`, [...bearer(who), '--max-time', String(maxTime)]).catch((e: Error) => e);

async function waited(ns: string): Promise<number> {
  const line = (await scrapeMetrics(cp, op.adminPort)).split('\n').find((l) => l.startsWith('access_gateway_apiserver_requests_waited_total{') && l.includes(`namespace="${ns}"`));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

/** The gauge: `ns`'s requests holding a slot, and waiting for one (no series: none). */
async function slots(ns: string): Promise<{ held: number; waiting: number }> {
  const lines = (await scrapeMetrics(cp, op.adminPort)).split('\n');
  const value = (state: string) => Number(lines.find((l) => l.startsWith(`access_gateway_apiserver_requests{namespace="${ns}",state="${state}"} `))?.split(' ').at(-1) ?? 0);
  return { held: value('held'), waiting: value('waiting') };
}

/** Runs `f` with the apiserver stopped, resumed after `f` (or at its failure). */
async function paused<T>(f: () => Promise<T>): Promise<T> {
  await cp.pauseApiserver();
  try {
    return await f();
  } finally {
    cp.resumeApiserver();
  }
}

before(async () => {
  cp = await startControlPlane();
  await installCRD(cp);
  for (const ns of ['team-a', 'team-b']) {
    await applyYaml(cp, namespaceYaml(ns, ['app', 'temp']));
    await cp.kubectl(['create', 'role', 'cm-reader', '-n', ns, '--verb=get,list', '--resource=configmaps']);
    await cp.kubectl(['create', 'rolebinding', 'app-cm', '-n', ns, '--role=cm-reader', `--serviceaccount=${ns}:app`, `--serviceaccount=${ns}:temp`]);
  }
  op = await startChartOperator(cp, { set: ['operator.maxApiserverRequestsPerNamespace=1'] });
  assert.ok(chartArgs(op.rendered).includes('--max-apiserver-requests-per-namespace=1'), 'the chart passes the value on');
  for (const ns of ['team-a', 'team-b']) {
    await applyYaml(cp, gateway(ns));
    base[ns] = `http://127.0.0.1:${await gatewayPort(cp, ns, 'api')}`;
    token[ns] = await cp.token(ns, 'app', ['gw']);
    // the token known: no review while the apiserver is stopped
    const r = await call(ns, `/api/v1/namespaces/${ns}/configmaps`);
    assert.equal((r as CurlResult).status, 200, String((r as CurlResult).body ?? r));
  }
}, { timeout: 240_000 });

after(async () => {
  await op?.stop();
  await cp?.stop();
});

test('past the limit a team\'s requests wait behind its own; another team\'s do not wait', async () => {
  const before = { a: await waited('team-a'), b: await waited('team-b') };
  const answers = await paused(async () => {
    const first = call('team-a', '/api/v1/namespaces/team-a/configmaps?limit=1');
    await sleep(300);
    const second = call('team-a', '/api/v1/namespaces/team-a/configmaps?limit=2');
    const other = call('team-b', '/api/v1/namespaces/team-b/configmaps?limit=3');
    await sleep(700);
    assert.deepEqual(await slots('team-a'), { held: 1, waiting: 1 });
    assert.deepEqual(await slots('team-b'), { held: 1, waiting: 0 });
    return [first, second, other];
  });
  for (const r of await Promise.all(answers)) assert.equal((r as CurlResult).status, 200, String((r as CurlResult).body ?? r));
  assert.equal(await waited('team-a'), before.a + 1, 'team-a\'s second request waited');
  assert.equal(await waited('team-b'), before.b, 'team-b\'s did not');
  assert.deepEqual(await slots('team-a'), { held: 0, waiting: 0 });
});

test('a client that leaves gives its place back, held or waited for', async () => {
  await paused(async () => {
    const holding = call('team-a', '/api/v1/namespaces/team-a/configmaps?limit=4', 1);
    await sleep(300);
    const waiting = call('team-a', '/api/v1/namespaces/team-a/configmaps?limit=5', 1);
    for (const r of await Promise.all([holding, waiting])) assert.match(String(r), /exit 28/, 'curl gave up');
    await sleep(300);
  });
  // a place still held would keep this waiting until its 8 s timeout
  const r = await call('team-a', '/api/v1/namespaces/team-a/configmaps?limit=6', 4);
  assert.equal((r as CurlResult).status, 200, String(r));
});

test('the wait counts toward the route\'s timeout: 504 naming the wait', async () => {
  const [held, quick] = await paused(async () => {
    const first = call('team-a', '/api/v1/namespaces/team-a/configmaps?limit=7');
    await sleep(300);
    const r = await call('team-a', '/quick/api/v1/namespaces/team-a/configmaps?limit=8');
    return [first, r] as const;
  });
  assert.equal((quick as CurlResult).status, 504, String(quick));
  assert.match((quick as CurlResult).body, /waited for one of the namespace's 1 requests/);
  assert.equal(((await held) as CurlResult).status, 200);
});

test('a request that waited is admitted again when its turn comes: a window that closed meanwhile refuses it (403)', async () => {
  const temp = await cp.token('team-a', 'temp', ['gw']);
  let until = 0;
  // a window that ends 4 s from now, seen by the gateway with more than 1.5 s of it left
  await waitFor('temp admitted with time left', async () => {
    if (until - Date.now() < 1_500) {
      until = Date.now() + 4_000;
      await applyYaml(cp, gateway('team-a', new Date(until).toISOString()));
    }
    const r = await call('team-a', '/api/v1/namespaces/team-a/configmaps', 5, temp);
    return (r as CurlResult).status === 200 && until - Date.now() > 1_500;
  }, 30_000, 200);
  const before = await waited('team-a');
  const [held, late] = await paused(async () => {
    const first = call('team-a', '/api/v1/namespaces/team-a/configmaps?limit=9');
    await sleep(300);
    const waiting = call('team-a', '/api/v1/namespaces/team-a/configmaps?limit=10', 20, temp);
    await sleep(until - Date.now() + 500);
    return [first, waiting];
  });
  assert.equal(((await held) as CurlResult).status, 200);
  const r = (await late) as CurlResult;
  assert.equal(r.status, 403, String(r.body ?? r));
  assert.match(r.body, /notAfter/);
  assert.equal(await waited('team-a'), before + 1, 'refused after its wait, not at its arrival');
});
