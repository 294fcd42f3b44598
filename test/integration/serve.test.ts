// access-gateway serve: the examples served from files against the test control plane, for
// curl and kubectl; editing a file changes routing; a broken edit keeps the last good one.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { request } from 'undici';
import { startControlPlane, repoRoot, type ControlPlane } from '../support/control-plane.js';
import { cliPath, logLines, testPortRange } from '../support/operator.js';
import { applyService, applyYaml, bearer, createListenerTLS, curl, serviceYaml, tokenKubeconfig } from '../support/cluster.js';
import { freePort, startProc, waitFor, type Proc } from '../support/procs.js';
import type { CertPair } from '../support/certs.js';
import { rawRequest } from '../support/raw-http.js';

const ns = 'team-payments';
let cp: ControlPlane;
let serve: Proc;
let adminPort: number;
let dir: string;
let ca: CertPair;
let billing: string;

const status = async () => (await (await request(`http://127.0.0.1:${adminPort}/status`)).body.json()) as any;
const portOf = async (name: string) => (await status()).gateways[`${ns}/${name}`]?.listener?.port as number;

before(async () => {
  cp = await startControlPlane();
  await cp.kubectl(['apply', '-f', join(repoRoot, 'deploy', 'examples', 'namespace.yaml')]);
  ca = await createListenerTLS(cp, ns, 'payments-gw-tls');
  dir = mkdtempSync(join(cp.dir, 'gateways-'));
  for (const f of ['payments-gateway.yaml', 'readonly-gateway.yaml']) copyFileSync(join(repoRoot, 'deploy', 'examples', f), join(dir, f));
  adminPort = await freePort();
  const [lo, hi] = await testPortRange();
  serve = startProc(process.execPath, [cliPath, 'serve', '--gateways', dir, '--kubeconfig', cp.kubeconfig,
    '--admin-address', `127.0.0.1:${adminPort}`, '--port-range', `${lo}-${hi}`, '--log-level', 'debug'], join(cp.dir, 'serve.log'));
  await waitFor('serve ready', async () => (await request(`http://127.0.0.1:${adminPort}/readyz`)).statusCode === 200, 30_000);
  billing = await cp.token(ns, 'billing', ['access-gateway']);
}, { timeout: 180_000 });

after(async () => {
  await serve?.stop();
  await cp?.stop();
});

test('the examples served from files work for curl and kubectl', async () => {
  const port = await portOf('payments');
  assert.ok(port > 0);
  await cp.kubectl(['create', 'configmap', 'seen-through-serve', '-n', ns]);
  const r = await curl(`https://127.0.0.1:${port}/api/v1/namespaces/${ns}/configmaps`, ['--cacert', ca.certFile, ...bearer(billing)]);
  assert.equal(r.status, 200, r.body);
  const kubeconfig = tokenKubeconfig(join(cp.dir, 'serve.kubeconfig'), `https://127.0.0.1:${port}`, billing, { ca: ca.cert, namespace: ns });
  const out = await promisify(execFile)('kubectl', ['--kubeconfig', kubeconfig, 'get', 'configmaps', '-o', 'name']);
  assert.match(out.stdout, /^configmap\/seen-through-serve$/m);
  const st = await status();
  assert.equal(st.gateways[`${ns}/payments`].conditions.find((c: any) => c.type === 'Ready').status, 'True');
});

test('editing a file changes routing; a broken edit keeps the last good configuration', async () => {
  const port = await portOf('readonly');
  const get = (path: string) => curl(`http://127.0.0.1:${port}${path}`, bearer(billing));
  assert.equal((await get(`/api/v1/namespaces/${ns}/configmaps`)).status, 200);
  const file = join(dir, 'readonly-gateway.yaml');
  const original = readFileSync(file, 'utf8');
  writeFileSync(file, original.replace(/acceptPaths: \[.*\]/, 'acceptPaths: ["^/version$"]'));
  await waitFor('routing changed', async () => (await get(`/api/v1/namespaces/${ns}/configmaps`)).status === 403, 10_000);
  assert.equal((await get('/version')).status, 200);

  writeFileSync(file, original.replace(/acceptPaths: \[.*\]/, 'acceptPaths: ["^/version$"]').replace('pathPrefix: /', 'pathPrefix: no-slash'));
  await waitFor('problem reported', async () => Object.keys((await status()).fileProblems).length > 0, 10_000);
  assert.match(JSON.stringify((await status()).fileProblems), /pathPrefix/);
  assert.equal((await get('/version')).status, 200); // last good kept
  writeFileSync(file, 'this: is: not: yaml: [');
  await waitFor('yaml problem reported', async () => /invalid YAML/.test(JSON.stringify((await status()).fileProblems)), 10_000);
  assert.equal((await get('/version')).status, 200);
  assert.equal(await portOf('readonly'), port);
  // (logged off the event loop: it may come after the status says so)
  await waitFor('the last good configuration kept, logged', async () => /keeping the last good configuration/.test(readFileSync(serve.logFile, 'utf8')), 10_000);
});

test('a gateway in two files: the first file\'s is served, the second is reported; a misspelt kind is reported', async () => {
  const port = await portOf('readonly');
  const dup = join(dir, 'zz-copy.yaml');
  // (readonly-gateway.yaml is broken by the test before: its last good version, which accepts only
  // /version, is served; the copy accepts what the example does)
  const copy = readFileSync(join(repoRoot, 'deploy', 'examples', 'readonly-gateway.yaml'), 'utf8');
  writeFileSync(dup, `${copy}\n---\n${copy.replace('kind: AccessGateway', 'kind: AccessGatway').replace('name: readonly', 'name: typo')}`);
  try {
    await waitFor('duplicate reported', async () => (await status()).fileProblems[dup]?.length === 2, 10_000);
    assert.deepEqual((await status()).fileProblems[dup], [
      `${dup}: document 2: kind "AccessGatway" is not AccessGateway: not used`,
      `${dup}: AccessGateway ${ns}/readonly: metadata.name: ${ns}/readonly is in ${join(dir, 'readonly-gateway.yaml')} already: this one is not used`,
    ]);
    assert.equal(await portOf('readonly'), port);
    assert.equal((await curl(`http://127.0.0.1:${port}/api/v1/namespaces/${ns}/configmaps`, bearer(billing))).status, 403, 'the first file\'s routes');
    assert.equal((await curl(`http://127.0.0.1:${port}/version`, bearer(billing))).status, 200);
  } finally {
    rmSync(dup);
  }
  await waitFor('problems gone with the file', async () => (await status()).fileProblems[dup] === undefined, 10_000);
});

test('serve keeps /metrics open by default (--metrics-auth none: a desktop)', async () => {
  const r = await request(`http://127.0.0.1:${adminPort}/metrics`);
  assert.equal(r.statusCode, 200);
  assert.match(await r.body.text(), /^access_gateway_admin_auth_decisions_total\{result="allowed"\} 0$/m);
});

test('an annotation edited in a file is applied like the operator does (access log errors only); serve writes nothing to the cluster', async () => {
  const port = await portOf('payments');
  const file = join(dir, 'payments-gateway.yaml');
  const original = readFileSync(file, 'utf8');
  const lines = () => logLines(serve); // (whole lines only: a write may end in the middle of one)
  writeFileSync(file, original.replace(/metadata:\n(\s+)name: payments\n/, 'metadata:\n$1name: payments\n$1annotations: {access-gateway.io/access-log: errors}\n'));
  assert.notEqual(readFileSync(file, 'utf8'), original);
  // re-planned with the new access-log setting (the spec, and so the generation, did not change)
  await waitFor('plan with access log errors', async () => lines().some((l) => l.msg === 'applying plan' && l.gateway === `${ns}/payments`
    && /"accessLog":\s*\{\s*"errors":\s*true,\s*"sample":\s*0\s*\}/.test(l.plan)), 10_000);
  const mark = lines().length;
  assert.equal((await curl(`https://127.0.0.1:${port}/api/v1/namespaces/${ns}/configmaps`, ['--cacert', ca.certFile, ...bearer(billing)])).status, 200);
  assert.equal((await curl(`https://127.0.0.1:${port}/api/v1/namespaces/${ns}/configmaps`, ['--cacert', ca.certFile, ...bearer('x.y.z')])).status, 401);
  // the 401 is logged; the 200 before it is not (pino writes in order)
  // (this gateway's lines: another's may still be on their way, written in batches)
  const after = await waitFor('the 401 logged', async () => { const l = lines().slice(mark).filter((x) => x.gateway === `${ns}/payments`); return l.some((x) => x.msg === 'request' && x.status === 401) ? l : undefined; }, 10_000);
  assert.deepEqual(after.filter((x) => x.msg === 'request' && x.status === 200), []);
  writeFileSync(file, original);
  // nothing in the cluster comes from serve: no Events, no agw-NAME Services
  const events = (await cp.api('GET', '/api/v1/events')).body.items as any[];
  assert.deepEqual(events.filter((e) => e.involvedObject?.kind === 'AccessGateway'), []);
  const services = (await cp.api('GET', '/api/v1/services')).body.items as any[];
  assert.deepEqual(services.filter((s) => s.metadata.name.startsWith('agw-')).map((s) => s.metadata.name), []);
});

test('serve checks EndpointSlice addresses against pods as the operator does (--endpoint-addresses pods, its default)', async () => {
  await applyService(cp, ns, 'web', ['198.18.7.7']); // a pod that has the address, named by its endpoint
  await applyYaml(cp, serviceYaml(ns, 'stray', [], '[{addresses: [198.18.7.8]}]')); // an address no endpoint names a pod for
  writeFileSync(join(dir, 'svc-gateway.yaml'), `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: svc, namespace: ${ns}}
spec:
  authentication: {audiences: [access-gateway]}
  access: [{serviceAccounts: [{namespace: ${ns}, name: billing}]}]
  routes:
    - {name: web, pathPrefix: /web, service: {name: web, port: 80}}
    - {name: stray, pathPrefix: /stray, service: {name: stray, port: 80}}
`);
  const st = await waitFor('svc reported', async () => (await status()).gateways[`${ns}/svc`]?.routes ? (await status()).gateways[`${ns}/svc`] : undefined, 15_000);
  assert.deepEqual(st.routes.map((r: any) => [r.name, r.endpoints]), [['web', 1], ['stray', 0]]);
  const resolved = st.conditions.find((c: any) => c.type === 'ResolvedRefs');
  assert.equal(resolved.reason, 'NoReadyEndpoints');
  assert.match(resolved.message, /Service team-payments\/stray has no ready endpoints \(1 ready address left out: an address must be an IP of the running pod/);

  // a second serve with --endpoint-addresses any: the stray address is used
  const anyDir = mkdtempSync(join(cp.dir, 'gateways-any-'));
  copyFileSync(join(dir, 'svc-gateway.yaml'), join(anyDir, 'svc-gateway.yaml'));
  const anyAdmin = await freePort();
  const [lo, hi] = await testPortRange();
  const serveAny = startProc(process.execPath, [cliPath, 'serve', '--gateways', anyDir, '--kubeconfig', cp.kubeconfig, '--endpoint-addresses', 'any',
    '--admin-address', `127.0.0.1:${anyAdmin}`, '--port-range', `${lo}-${hi}`], join(cp.dir, 'serve-any.log'));
  try {
    const anySt = await waitFor('svc reported by the second serve', async () => {
      const r = await request(`http://127.0.0.1:${anyAdmin}/status`).catch(() => undefined);
      const g = r && r.statusCode === 200 ? ((await r.body.json()) as any).gateways[`${ns}/svc`] : undefined;
      return g?.routes ? g : undefined;
    }, 30_000);
    assert.deepEqual(anySt.routes.map((r: any) => [r.name, r.endpoints]), [['web', 1], ['stray', 1]]);
  } finally {
    await serveAny.stop();
  }
});


test('serve against an apiserver reached over plain HTTP (kubectl proxy on a desktop): requests and upgrades go through', async () => {
  const proxyPort = await freePort();
  const proxy = startProc('kubectl', ['--kubeconfig', cp.kubeconfig, 'proxy', '--port', String(proxyPort), '--address', '127.0.0.1'], join(cp.dir, 'kubectl-proxy.log'));
  const plainDir = mkdtempSync(join(cp.dir, 'plain-'));
  writeFileSync(join(plainDir, 'kubeconfig'), `apiVersion: v1
kind: Config
clusters: [{name: proxy, cluster: {server: "http://127.0.0.1:${proxyPort}"}}]
users: [{name: none, user: {}}]
contexts: [{name: proxy, context: {cluster: proxy, user: none}}]
current-context: proxy
`);
  mkdirSync(join(plainDir, 'gateways'));
  copyFileSync(join(repoRoot, 'deploy', 'examples', 'readonly-gateway.yaml'), join(plainDir, 'gateways', 'readonly.yaml'));
  const admin = await freePort();
  const [lo, hi] = await testPortRange();
  let plain: Proc | undefined;
  try {
    await waitFor('kubectl proxy', async () => (await request(`http://127.0.0.1:${proxyPort}/version`)).statusCode === 200, 20_000);
    plain = startProc(process.execPath, [cliPath, 'serve', '--gateways', join(plainDir, 'gateways'), '--kubeconfig', join(plainDir, 'kubeconfig'),
      '--admin-address', `127.0.0.1:${admin}`, '--port-range', `${lo}-${hi}`], join(plainDir, 'serve.log'));
    await waitFor('serve ready', async () => (await request(`http://127.0.0.1:${admin}/readyz`)).statusCode === 200, 30_000);
    const st = await (await request(`http://127.0.0.1:${admin}/status`)).body.json() as any;
    const port = st.gateways[`${ns}/readonly`].listener.port as number;
    assert.equal((await curl(`http://127.0.0.1:${port}/api/v1/namespaces/${ns}/configmaps`, bearer(billing))).status, 200);
    // a watch over WebSocket: an upgrade, relayed on 101 (kubectl proxy takes WebSockets only
    // with a same-host Origin)
    const ws = await rawRequest(port, [`GET /api/v1/namespaces/${ns}/configmaps?watch=1 HTTP/1.1`, 'Host: gateway', `Authorization: Bearer ${billing}`,
      'Origin: http://127.0.0.1', 'Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', '', ''].join('\r\n'), 3000);
    assert.equal(ws.status, 101, `${ws.head}\n${ws.body.slice(0, 300)}`);
  } finally {
    await plain?.stop();
    await proxy.stop();
  }
});
