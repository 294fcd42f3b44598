// Authentication, access rules, impersonation, header hygiene, filters and real kubectl,
// through the example gateways, against a real control plane with real minted tokens.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { join } from 'node:path';
import { SignJWT, importPKCS8 } from 'jose';
import WebSocket from 'ws';
import { startControlPlane, repoRoot, type ControlPlane } from '../support/control-plane.js';
import { startOperator, type OperatorProc } from '../support/operator.js';
import { applyYaml, bearer as bearerOnly, createListenerTLS, curl, gatewayPort, tokenKubeconfig, installCRD, namespaceYaml } from '../support/cluster.js';
import type { CertPair } from '../support/certs.js';
import { waitFor } from '../support/procs.js';

let cp: ControlPlane;
let op: OperatorProc;
let port: number;
let readonlyPort: number;
let billing: string;
let reporter: string;
let ca: CertPair;
const ns = 'team-payments';
// payments serves TLS (kubectl sends tokens only over TLS); readonly serves plain HTTP.
const base = () => `https://127.0.0.1:${port}`;
const bearer = (token: string) => ['--cacert', ca.certFile, ...bearerOnly(token)];

before(async () => {
  cp = await startControlPlane();
  await installCRD(cp);
  await cp.kubectl(['apply', '-f', join(repoRoot, 'deploy', 'examples', 'namespace.yaml')]);
  ca = await createListenerTLS(cp, ns, 'payments-gw-tls');
  await cp.kubectl(['apply', '-f', join(repoRoot, 'deploy', 'examples')]);
  await applyYaml(cp, namespaceYaml(ns, ['outsider', 'temp']));
  op = await startOperator(cp);
  port = await gatewayPort(cp, ns, 'payments');
  readonlyPort = await gatewayPort(cp, ns, 'readonly');
  billing = await cp.token(ns, 'billing', ['access-gateway']);
  reporter = await cp.token(ns, 'reporter', ['access-gateway']);
}, { timeout: 180_000 });

after(async () => {
  await op?.stop();
  await cp?.stop();
});

const cmPath = `/api/v1/namespaces/${ns}/configmaps`;

function assertStatus(r: { status: number; body: string; headers: string }, code: number, reason: string) {
  assert.equal(r.status, code, r.body);
  const body = JSON.parse(r.body);
  assert.equal(body.kind, 'Status');
  assert.equal(body.code, code);
  assert.equal(body.reason, reason);
}

async function forge(claims: { exp: number; aud?: string[]; alg?: string }): Promise<string> {
  const sa = (await cp.api('GET', `/api/v1/namespaces/${ns}/serviceaccounts/billing`)).body;
  const now = Math.floor(Date.now() / 1000);
  const payload = {
    iss: cp.issuer, sub: `system:serviceaccount:${ns}:billing`, aud: claims.aud ?? ['access-gateway'],
    iat: now - 700, nbf: now - 700, exp: claims.exp,
    'kubernetes.io': { namespace: ns, serviceaccount: { name: 'billing', uid: sa.metadata.uid } },
  };
  if (claims.alg === 'none') {
    const b = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    return `${b({ alg: 'none', typ: 'JWT' })}.${b(payload)}.`;
  }
  const key = await importPKCS8(cp.saSigningKey, 'RS256');
  return new SignJWT(payload).setProtectedHeader({ alg: 'RS256' }).sign(key);
}

test('a minted token for the gateway audience is allowed, and the caller is impersonated', async () => {
  const r = await curl(base() + cmPath, bearer(billing));
  assert.equal(r.status, 200, r.body);
  assert.equal(JSON.parse(r.body).kind, 'ConfigMapList');
  const who = await curl(base() + '/apis/authentication.k8s.io/v1/selfsubjectreviews', [...bearer(billing), '-X', 'POST',
    '-H', 'content-type: application/json', '-d', '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}']);
  const info = JSON.parse(who.body).status.userInfo;
  assert.equal(info.username, `system:serviceaccount:${ns}:billing`);
  assert.ok(info.groups.includes(`system:serviceaccounts:${ns}`));
  assert.deepEqual(info.extra['access-gateway.io/gateway'], [`${ns}/payments`]);
  assert.deepEqual(info.extra['access-gateway.io/route'], ['kube-api']);
  assert.ok(info.uid);
});

test('no token, garbage, wrong audience, expired, alg none and a deleted service account are 401', async () => {
  const now = Math.floor(Date.now() / 1000);
  // The forging works: the same construction with a future exp is accepted...
  assert.equal((await curl(base() + cmPath, bearer(await forge({ exp: now + 600 })))).status, 200);
  const temp1 = await cp.token(ns, 'temp', ['access-gateway']);
  const temp2 = await cp.token(ns, 'temp', ['access-gateway']);
  assert.equal((await curl(base() + cmPath, bearer(temp1))).status, 403); // authenticated, not in spec.access
  await cp.kubectl(['delete', 'serviceaccount', 'temp', '-n', ns]);
  const cases: Record<string, string[]> = {
    'no token': [],
    'not bearer': ['-H', 'Authorization: Basic YTpi'],
    garbage: bearer('garbage'),
    'wrong audience': bearer(await cp.token(ns, 'billing', ['someone-else'])),
    'apiserver audience': bearer(await cp.token(ns, 'billing', [cp.issuer])),
    expired: bearer(await forge({ exp: now - 60 })),
    'alg none': bearer(await forge({ exp: now + 600, alg: 'none' })),
    'deleted service account': bearer(temp2),
  };
  for (const [name, args] of Object.entries(cases)) {
    const r = await curl(base() + cmPath, ['--cacert', ca.certFile, '-H', 'Accept: application/json', ...args]);
    assert.equal(r.status, 401, `${name}: ${r.body}`);
    assertStatus(r, 401, 'Unauthorized');
    assert.match(r.headers, /www-authenticate: Bearer/i, name);
  }
});

test('a service account outside spec.access is 403', async () => {
  const r = await curl(base() + cmPath, bearer(await cp.token(ns, 'outsider', ['access-gateway'])));
  assertStatus(r, 403, 'Forbidden');
  assert.match(JSON.parse(r.body).message, /outsider is not allowed to use this gateway: no rule of spec.access names it/);
  assert.doesNotMatch(r.body, new RegExp(`${ns}/`), 'a caller no rule names is not told whose gateway it is');
});

test('Impersonate: the caller own RBAC decides, through the same gateway', async () => {
  assert.equal((await curl(base() + cmPath, bearer(billing))).status, 200);
  const r = await curl(base() + cmPath, bearer(reporter));
  assertStatus(r, 403, 'Forbidden');
  assert.match(JSON.parse(r.body).message, /system:serviceaccount:team-payments:reporter.*cannot list resource "configmaps"/);
});

test('client-supplied Impersonate-*, X-Remote-* headers never reach the apiserver (Passthrough: nothing would overwrite them)', async () => {
  // a Passthrough route forwards the caller's own token: a leaked Impersonate-User would make the
  // apiserver check whether the caller may impersonate (403) or act as someone else
  await applyYaml(cp, `
apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: passthrough, namespace: ${ns}}
spec:
  authentication: {audiences: [access-gateway]}
  access: [{serviceAccounts: [{namespace: ${ns}, name: reporter}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {identity: Passthrough}}]
`);
  const p = await gatewayPort(cp, ns, 'passthrough');
  const token = await cp.token(ns, 'reporter', ['access-gateway', cp.issuer]);
  const spoof = ['-H', 'Impersonate-User: system:admin', '-H', 'Impersonate-Group: system:masters', '-H', 'Impersonate-Uid: 0',
    '-H', 'Impersonate-Extra-scopes: all', '-H', 'X-Remote-User: admin', '-H', 'X-Remote-Group: system:masters',
    '-H', 'Connection: keep-alive, X-Foo', '-H', 'X-Foo: bar'];
  const review = ['-X', 'POST', '-H', 'content-type: application/json', '-d', '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}'];
  // sanity: the same headers sent straight to the apiserver are acted on (and refused)
  const direct = await curl(cp.url + '/apis/authentication.k8s.io/v1/selfsubjectreviews', ['--cacert', cp.ca.certFile, ...bearerOnly(token), ...spoof, ...review]);
  assert.equal(direct.status, 403, direct.body);
  assert.match(JSON.parse(direct.body).message, /cannot impersonate/);
  // through the gateway they are gone: the apiserver sees the caller, as the caller
  const r = await curl(`http://127.0.0.1:${p}/apis/authentication.k8s.io/v1/selfsubjectreviews`, [...bearerOnly(token), ...spoof, ...review]);
  assert.equal(r.status, 201, r.body);
  const info = JSON.parse(r.body).status.userInfo;
  assert.equal(info.username, `system:serviceaccount:${ns}:reporter`);
  assert.ok(!info.groups.includes('system:masters'));
  assert.equal(info.extra?.scopes, undefined);
  // written loosely (two spaces), the token the gateway read is the one the apiserver reads: it
  // splits on single spaces, and the raw header would have been no token there (anonymous)
  const loose = await curl(`http://127.0.0.1:${p}/apis/authentication.k8s.io/v1/selfsubjectreviews`, ['-H', `Authorization: Bearer  ${token}`, ...review]);
  assert.equal(loose.status, 201, loose.body);
  assert.equal(JSON.parse(loose.body).status.userInfo.username, `system:serviceaccount:${ns}:reporter`);
});

test('kubectl works through the gateway: get, apply, and get -w streaming an event made during the watch', async () => {
  const kubeconfig = tokenKubeconfig(join(cp.dir, 'billing.kubeconfig'), base(), billing, { ca: ca.cert, namespace: ns });
  const kubectl = (args: string[], input?: string) => new Promise<string>((resolve, reject) => {
    const p = spawn('kubectl', ['--kubeconfig', kubeconfig, ...args]);
    let out = ''; let err = '';
    p.stdout.on('data', (c) => (out += c)); p.stderr.on('data', (c) => (err += c));
    p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`kubectl ${args.join(' ')}: ${err}`))));
    p.stdin.end(input ?? '');
  });
  await kubectl(['apply', '-f', '-'], 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: via-gateway}\ndata: {a: "1"}\n');
  assert.match(await kubectl(['get', 'configmaps']), /via-gateway/);
  const watch = spawn('kubectl', ['--kubeconfig', kubeconfig, 'get', 'configmaps', '-w', '--output-watch-events']);
  let out = '';
  watch.stdout.on('data', (c) => (out += c));
  await waitFor('watch started', async () => out.includes('via-gateway'), 15_000);
  await cp.kubectl(['create', 'configmap', 'made-during-watch', '-n', ns]);
  await waitFor('event streamed', async () => /ADDED\s+made-during-watch/.test(out), 15_000);
  watch.kill();
  // reporter cannot write, through the same gateway
  const denied = await kubectl(['--token', reporter, 'get', 'configmaps']).then(() => '', (e) => String(e));
  assert.match(denied, /forbidden/i);
});

test('acceptPaths, rejectPaths and rejectMethods behave as kubectl proxy flags; non-canonical paths are refused', async () => {
  // readonly gateway: rejectMethods
  const ro = `http://127.0.0.1:${readonlyPort}`;
  assert.equal((await curl(ro + cmPath, bearerOnly(billing))).status, 200);
  const post = await curl(ro + cmPath, [...bearerOnly(billing), '-X', 'POST', '-H', 'content-type: application/json', '-d', '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"nope"}}']);
  assertStatus(post, 403, 'Forbidden');
  assert.match(JSON.parse(post.body).message, /rejectMethods/);
  // payments gateway: default rejectPaths (exec, attach) and acceptPaths
  const exec = await curl(base() + `/api/v1/namespaces/${ns}/pods/p/exec?command=sh`, bearer(billing));
  assertStatus(exec, 403, 'Forbidden');
  assert.match(JSON.parse(exec.body).message, /rejectPaths/);
  const healthz = await curl(base() + '/healthz', bearer(billing));
  assertStatus(healthz, 403, 'Forbidden');
  assert.match(JSON.parse(healthz.body).message, /acceptPaths/);
  for (const p of [`/api/v1/namespaces/${ns}/configmaps/%2e%2e/secrets`, `/api/v1/namespaces/${ns}/configmaps/../secrets`,
    `/api/v1//namespaces/${ns}/secrets`, `/api/v1/namespaces/${ns}/configmaps/%252e%252e/x`, `/api/v1/namespaces%2f${ns}/secrets`]) {
    const r = await curl(base() + p, ['--path-as-is', ...bearer(billing)]);
    assertStatus(r, 400, 'BadRequest');
  }
  // an unknown path is 404 only where no route matches; here / matches everything, so the filter answers
  const disc = await curl(base() + '/.well-known/access-gateway', bearer(billing));
  assert.equal(disc.status, 200);
  assert.deepEqual(JSON.parse(disc.body).routes.map((r: any) => r.name), ['kube-api']);
});

test('upgrades pass through (WebSocket watch), and an upgrade the apiserver answers without 101 is closed', async () => {
  const ws = new WebSocket(`wss://127.0.0.1:${port}${cmPath}?watch=1`, ['base64.binary.k8s.io'], { headers: { authorization: `Bearer ${billing}` }, ca: ca.cert, origin: base() });
  const frames: string[] = [];
  ws.on('message', (m) => {
    const text = String(m);
    frames.push(text.startsWith('{') ? text : Buffer.from(text, 'base64').toString());
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => reject(new Error(`upgrade answered ${res.statusCode}: ${body}`)));
    });
  });
  await cp.kubectl(['create', 'configmap', 'seen-over-websocket', '-n', ns]);
  await waitFor('websocket event', async () => frames.some((f) => f.includes('seen-over-websocket')), 10_000);
  ws.close();

  // /version does not upgrade: the apiserver answers 200; the gateway relays it and closes.
  const sock = connect(readonlyPort, '127.0.0.1');
  let data = '';
  sock.on('data', (c) => (data += c));
  const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()));
  sock.write(`GET /version HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${billing}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
    'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
  await closed;
  assert.match(data, /^HTTP\/1\.1 200 /);
  assert.doesNotMatch(data, /101 Switching/);
});

test('the operator log holds access-log lines but never a token', async () => {
  const { readFileSync } = await import('node:fs');
  assert.equal((await curl(base() + cmPath, bearer(billing))).status, 200);
  assert.equal((await curl(base() + cmPath, bearer(reporter))).status, 403);
  // the operator's stdout reaches the file through a pipe: wait for the line
  const log = await waitFor('the access-log line', async () => {
    const text = readFileSync(op.logFile, 'utf8');
    return /"caller":"system:serviceaccount:team-payments:billing"/.test(text) && /"caller":"system:serviceaccount:team-payments:reporter"/.test(text) ? text : undefined;
  }, 10_000);
  for (const t of [billing, reporter]) {
    assert.ok(!log.includes(t), 'a token leaked into the log');
    assert.ok(!log.includes(t.split('.')[2]!), 'a token signature leaked into the log');
  }
});
