// Hostile requests against a listener, as a table: path encodings, header injection, request
// smuggling, oversize, slow clients (sending or reading) and token forgeries. Each row asserts the answer, that a
// refused request never reached the upstream (a test host counting what arrives), and that an
// identity the upstream sees is the caller's own. The operator runs as the chart's
// least-privilege ServiceAccount; it and another team's gateway stay healthy throughout.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { SignJWT, importPKCS8 } from 'jose';
import { startControlPlane, type ControlPlane } from '../support/control-plane.js';
import { startChartOperator } from '../support/chart-operator.js';
import type { OperatorProc } from '../support/operator.js';
import { applyYaml, gatewayPort, installCRD, namespaceYaml, applyService } from '../support/cluster.js';
import { createTestNet, startServer, type TestNet } from '../support/netns.js';
import { rawRequest, type RawResponse } from '../support/raw-http.js';
import { waitFor } from '../support/procs.js';
import { scrapeMetrics } from '../support/metrics.js';

let cp: ControlPlane;
let op: OperatorProc;
let net: TestNet;
let port: number; // team-a's gateway
let port2: number; // team-a's second gateway
let bPort: number; // team-b's gateway
let app: string;
let appB: string;
let upstream: string;
const caller = 'system:serviceaccount:team-a:app';

before(async () => {
  cp = await startControlPlane();
  await installCRD(cp);
  await applyYaml(cp, namespaceYaml('team-a', ['app']));
  await applyYaml(cp, namespaceYaml('team-b', ['app']));
  net = await createTestNet({ hosts: 1 });
  const server = await startServer(net.hosts[0]!, { name: 'echo' });
  upstream = server.url;
  await applyService(cp, 'team-a', 'echo', [net.hosts[0]!.ip]);
  op = await startChartOperator(cp, { args: ['--header-timeout-seconds', '2', '--idle-timeout-seconds', '3', '--max-connections-per-listener', '32',
    '--max-connections-per-namespace', '48', '--max-cached-callers-per-namespace', '2'] });
  // team-a has two gateways alike, so that bounds per namespace can be filled across listeners
  const gateway = (name: string) => `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: ${name}, namespace: team-a}
spec:
  authentication: {audiences: [gw]}
  access: [{serviceAccounts: [{namespace: team-a, name: app}]}]
  routes:
    - {name: echo, pathPrefix: /echo/, rewritePrefix: /, service: {name: echo, port: http}}
    - {name: kube-api, pathPrefix: /, apiserver: {}}
`;
  await applyYaml(cp, `${gateway('gw')}---
${gateway('gw2')}---
apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: gw, namespace: team-b}
spec:
  authentication: {audiences: [gw]}
  access: [{serviceAccounts: [{namespace: team-b, name: app}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {}}]
`);
  port = await gatewayPort(cp, 'team-a', 'gw');
  port2 = await gatewayPort(cp, 'team-a', 'gw2');
  bPort = await gatewayPort(cp, 'team-b', 'gw');
  app = await cp.token('team-a', 'app', ['gw']);
  appB = await cp.token('team-b', 'app', ['gw']);
}, { timeout: 240_000 });

after(async () => {
  await op?.stop();
  await net?.destroy();
  await cp?.stop();
});

/** Requests the upstream has received so far. */
async function arrived(): Promise<number> {
  return ((await (await fetch(`${upstream}/__requests`)).json()) as { requests: number }).requests;
}

const req = (lines: string[], body = '') => [...lines, '', body].join('\r\n');
const review = '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}';
const get = (target: string, headers: string[] = [`Authorization: Bearer ${'{app}'}`]) =>
  req([`GET ${target} HTTP/1.1`, 'Host: gateway', 'Connection: close', ...headers]);

/** Each row: a raw request (with {app} standing for team-a's valid token) and the status expected. */
interface Row { name: string; send: string | (() => Promise<string>); status: number | number[]; reaches?: boolean; check?: (r: RawResponse) => void }

async function forged(kind: 'none' | 'hs256' | 'other-key' | 'expired' | 'audience' | 'issuer'): Promise<string> {
  const sa = (await cp.api('GET', '/api/v1/namespaces/team-a/serviceaccounts/app')).body;
  const now = Math.floor(Date.now() / 1000);
  const payload = {
    iss: kind === 'issuer' ? 'https://evil.example' : cp.issuer, sub: caller, aud: [kind === 'audience' ? 'other' : 'gw'],
    iat: now - 60, nbf: now - 60, exp: kind === 'expired' ? now - 600 : now + 600,
    'kubernetes.io': { namespace: 'team-a', serviceaccount: { name: 'app', uid: sa.metadata.uid } },
  };
  const b = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  if (kind === 'none') return `${b({ alg: 'none', typ: 'JWT' })}.${b(payload)}.`;
  if (kind === 'hs256') {
    // the classic confusion: HMAC keyed with the issuer's public key
    const pub = readFileSync(join(cp.dir, 'certs', 'sa.pub'));
    return new SignJWT(payload).setProtectedHeader({ alg: 'HS256' }).sign(pub);
  }
  const key = kind === 'other-key'
    ? generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
    : await importPKCS8(cp.saSigningKey, 'RS256');
  return new SignJWT(payload).setProtectedHeader({ alg: 'RS256' }).sign(key);
}

const rows: Row[] = [
  // path encodings: refused before anything else
  ...['/echo/%2e%2e/x', '/echo/..%2fx', '/echo/%2fx', '/echo/%252e%252e/x', '/echo/%2573ecret', '/echo//x', '/echo/./x', '/echo/x/..',
    '/echo/a%5cb', '/echo/a\\b', '/echo/a%00b', '/echo/a%0d%0aX-Injected:%201', '/echo/%c0%ae%c0%ae/x', '/echo/%zz', '/echo/%ff',
    'http://evil.example/echo/x', '*'].map((target): Row => ({ name: `path ${target}`, send: get(target), status: 400 })),
  { name: 'path longer than 4096', send: get('/echo/' + 'a'.repeat(5000)), status: 414 },
  // header injection: stripped, the upstream sees the caller and nothing forged
  {
    name: 'identity headers', status: 200, reaches: true,
    send: get('/echo/h', ['Authorization: Bearer {app}', 'Impersonate-User: system:admin', 'Impersonate-Group: system:masters',
      'Impersonate-Uid: 0', 'Impersonate-Extra-Scopes: all', 'X-Remote-User: admin', 'X-Remote-Group: system:masters',
      'X_Remote_User: admin', 'Impersonate_User: admin', 'X-Remote-Extra-Foo: bar', 'X-Forwarded-For: 6.6.6.6', 'X-Forwarded-Host: evil',
      'Connection: close, X-Secret', 'X-Secret: s', 'Proxy-Authorization: Basic YTpi', 'Keep-Alive: timeout=999']),
    check: (r) => {
      const seen = JSON.parse(r.body).headers as Record<string, string>;
      assert.equal(seen['x-remote-user'], caller);
      assert.equal(seen['x-remote-group'], 'system:serviceaccounts, system:serviceaccounts:team-a, system:authenticated');
      for (const h of Object.keys(seen)) assert.doesNotMatch(h, /^(impersonate|x.remote.extra|x_remote|authorization|proxy-authorization|x-secret|keep-alive)/, h);
      assert.equal(seen['x-forwarded-for'], '127.0.0.1');
      assert.doesNotMatch(JSON.stringify(seen), /system:admin|system:masters|6\.6\.6\.6|evil/);
    },
  },
  {
    // on an Impersonate route a caller's own Impersonate-* is kubectl --as: checked, and this
    // caller may impersonate neither, so it is refused before the apiserver sees anything
    name: 'identity headers to the apiserver', status: 403,
    send: req(['POST /apis/authentication.k8s.io/v1/selfsubjectreviews HTTP/1.1', 'Host: gateway', 'Connection: close',
      'Authorization: Bearer {app}', 'Impersonate-User: system:admin', 'Impersonate-Group: system:masters', 'X-Remote-User: admin',
      'Content-Type: application/json', `Content-Length: ${review.length}`], review),
    check: (r) => {
      const status = JSON.parse(r.body.slice(r.body.indexOf('{')));
      assert.equal(status.kind, 'Status');
      assert.match(status.message, new RegExp(`^${caller} may not impersonate (user "system:admin"|group "system:masters")`));
    },
  },
  {
    name: 'identity headers to the apiserver without a user', status: 400,
    send: req(['POST /apis/authentication.k8s.io/v1/selfsubjectreviews HTTP/1.1', 'Host: gateway', 'Connection: close',
      'Authorization: Bearer {app}', 'Impersonate-Group: system:masters',
      'Content-Type: application/json', `Content-Length: ${review.length}`], review),
  },
  // smuggling: the strict parser refuses, nothing is forwarded
  { name: 'Content-Length and Transfer-Encoding', status: 400, send: req(['POST /echo/s HTTP/1.1', 'Host: g', 'Authorization: Bearer {app}', 'Content-Length: 5', 'Transfer-Encoding: chunked', ''], '0\r\n\r\nGET /echo/smuggled HTTP/1.1\r\nHost: g\r\n\r\n') },
  { name: 'two Content-Lengths', status: 400, send: req(['POST /echo/s HTTP/1.1', 'Host: g', 'Authorization: Bearer {app}', 'Content-Length: 5', 'Content-Length: 6', ''], 'hello!') },
  { name: 'Transfer-Encoding chunked, identity', status: 400, send: req(['POST /echo/s HTTP/1.1', 'Host: g', 'Authorization: Bearer {app}', 'Transfer-Encoding: chunked, identity', ''], '0\r\n\r\n') },
  { name: 'obs-fold', status: 400, send: req(['GET /echo/s HTTP/1.1', 'Host: g', 'Authorization: Bearer {app}', 'X-A: a', ' Impersonate-User: admin', '']) },
  { name: 'space before colon', status: 400, send: req(['GET /echo/s HTTP/1.1', 'Host: g', 'Authorization : Bearer {app}', '']) },
  { name: 'bare LF line ends', status: 400, send: 'GET /echo/s HTTP/1.1\nHost: g\nAuthorization: Bearer {app}\n\n' },
  { name: 'CR in the path', status: 400, send: req(['GET /echo/a\rb HTTP/1.1', 'Host: g', 'Authorization: Bearer {app}', '']) },
  // a tunnel: answered (it was dropped unanswered), never opened, with a token or without
  ...['{app}', ''].map((token): Row => ({
    name: `CONNECT${token ? ' with a token' : ''}`, status: 405,
    send: req(['CONNECT 127.0.0.1:22 HTTP/1.1', 'Host: 127.0.0.1:22', ...(token ? [`Authorization: Bearer ${token}`] : []), '']),
    check: (r) => {
      assert.ok(r.closed, 'the connection is closed');
      assert.match(r.head, /\r\nallow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE(\r\n|$)/i);
      const status = JSON.parse(r.body);
      assert.deepEqual([status.kind, status.code, status.reason, status.details?.causes?.[0]?.reason], ['Status', 405, 'MethodNotAllowed', 'AGW_ERR_METHOD_NOT_ALLOWED']);
    },
  })),
  // oversize
  { name: 'headers over 16 KiB', status: 431, send: get('/echo/big', ['Authorization: Bearer {app}', `X-Big: ${'a'.repeat(20_000)}`]) },
  // credentials
  { name: 'two Authorization headers', status: 401, send: get('/echo/t', ['Authorization: Bearer {app}', 'Authorization: Bearer {app}']) },
  { name: 'no Authorization', status: 401, send: get('/echo/t', []) },
  { name: 'Basic', status: 401, send: get('/echo/t', ['Authorization: Basic YWRtaW46YWRtaW4=']) },
  { name: 'token in the query', status: 401, send: get('/echo/t?access_token={app}', []) },
  { name: 'empty bearer', status: 401, send: get('/echo/t', ['Authorization: Bearer ']) },
  { name: 'two tokens in one header', status: 401, send: get('/echo/t', ['Authorization: Bearer {app} {app}']) },
  { name: 'lower-case scheme (RFC 7235: case-insensitive)', status: 200, reaches: true, send: get('/echo/t', ['Authorization: bearer {app}']) },
  ...(['none', 'hs256', 'other-key', 'expired', 'audience', 'issuer'] as const).map((kind): Row => ({
    name: `forged token: ${kind}`, status: 401, send: async () => get('/echo/t', [`Authorization: Bearer ${await forged(kind)}`]),
  })),
];

test('callers cached per namespace are bounded across its gateways; another namespace\'s cache is not affected', async () => {
  const reviews = async () => Number(/^access_gateway_token_reviews_total\{result="authenticated"\} (\d+)$/m.exec(await scrapeMetrics(cp, op.adminPort))?.[1] ?? 0);
  const call = async (p: number, token: string) => assert.equal((await rawRequest(p, get('/api', [`Authorization: Bearer ${token}`]))).status, 200);
  const twice = async (p: number, token: string) => {
    const before = await reviews();
    await call(p, token);
    await call(p, token);
    return (await reviews()) - before;
  };
  const [t1, t2, t3, b1] = await Promise.all([cp.token('team-a', 'app', ['gw']), cp.token('team-a', 'app', ['gw']),
    cp.token('team-a', 'app', ['gw']), cp.token('team-b', 'app', ['gw'])]);
  // team-a's budget is 2 (cacheTTLSeconds 10: this runs well within it). This test runs first:
  // no gateway has cached anyone yet.
  assert.equal(await twice(port, t1), 1, 'the first token is cached');
  assert.equal(await twice(port, t2), 1, 'the second token is cached');
  assert.equal(await twice(port2, t3), 2, 'gw2 has no entry of its own to evict: the third token is checked each time');
  assert.equal(await twice(bPort, b1), 1, 'team-b\'s gateway caches as before');
});

test('hostile requests get their documented answer and never carry a forged identity upstream', async () => {
  for (const row of rows) {
    const before = await arrived();
    const text = (typeof row.send === 'string' ? row.send : await row.send()).replaceAll('{app}', app);
    const r = await rawRequest(port, text, 15_000);
    const want = Array.isArray(row.status) ? row.status : [row.status];
    assert.ok(want.includes(r.status), `${row.name}: got ${r.status}: ${r.head}\n${r.body.slice(0, 300)}`);
    row.check?.(r);
    assert.equal(await arrived(), before + (row.reaches ? 1 : 0), `${row.name}: the upstream saw ${row.reaches ? 'not exactly one request' : 'a request'}`);
    // the process stays healthy: another team's gateway answers (the apiserver decides: 403, no RBAC)
    const other = await rawRequest(bPort, get('/api', [`Authorization: Bearer ${appB}`]));
    assert.equal(other.status, 200, `${row.name}: team-b's gateway: ${other.head}`);
  }
  assert.equal(op.child.exitCode, null);
  // the refused tunnels are counted as requests, before any route
  assert.match(await scrapeMetrics(cp, op.adminPort), /^access_gateway_requests_total\{namespace="team-a",gateway="[^"]+",route="",method="CONNECT",code="4xx"\} 2$/m);
});

test('an unauthenticated body is not read for ever: 401, then the connection is closed', async () => {
  const r = await new Promise<RawResponse & { sent: number }>((resolve) => {
    const s = connect(port, '127.0.0.1');
    let sent = 0;
    const chunks: Buffer[] = [];
    const chunk = Buffer.alloc(64 * 1024, 'a');
    // an endless body: stop only when the gateway closes the connection
    const pump = () => { while (!s.destroyed && s.write(chunk)) sent += chunk.length; };
    s.on('connect', () => { s.write('POST /echo/upload HTTP/1.1\r\nHost: g\r\nContent-Length: 1000000000000\r\n\r\n'); pump(); });
    s.on('drain', pump);
    s.on('data', (c) => chunks.push(c));
    s.on('error', () => {});
    s.on('close', () => {
      const all = Buffer.concat(chunks).toString('latin1');
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(all)?.[1] ?? 0), head: all.split('\r\n\r\n')[0]!, body: '', closed: true, sent });
    });
  });
  assert.equal(r.status, 401, r.head);
  assert.match(r.head, /connection: close/i);
  assert.ok(r.sent < 1_000_000_000_000);
});

test('a slow client is cut after the header timeout, and other clients are served meanwhile', async () => {
  const slow: Socket = connect(port, '127.0.0.1');
  const done = new Promise<string>((resolve) => {
    let out = '';
    slow.on('data', (c) => (out += c.toString()));
    slow.on('close', () => resolve(out));
    slow.on('error', () => {});
  });
  slow.write('GET /echo/slow HTTP/1.1\r\nHost: g\r\n');
  const drip = setInterval(() => { if (!slow.destroyed) slow.write('X-Drip: 1\r\n'); }, 300);
  const served = await rawRequest(port, get('/echo/meanwhile').replaceAll('{app}', app));
  assert.equal(served.status, 200);
  // closed by the gateway (--header-timeout-seconds 2); the test gives up at ten times that
  const answer = await Promise.race([done, new Promise<string>((r) => setTimeout(() => r('not cut within 20 s'), 20_000))]);
  clearInterval(drip);
  slow.destroy();
  assert.match(answer, /^HTTP\/1\.1 408/);
});

test('a client that reads none of a large answer is cut after the idle timeout', async () => {
  const n = 256 << 20;
  const s: Socket = connect(port, '127.0.0.1');
  s.on('error', () => {});
  s.write(get(`/echo/bytes?n=${n}`).replace('{app}', app));
  // not read: the gateway's writes fill the socket buffers and it waits for the client; after
  // --idle-timeout-seconds 3 without progress it closes the connection (and so its upstream's)
  await new Promise((r) => setTimeout(r, 6_000));
  let got = 0;
  const closed = new Promise<boolean>((resolve) => {
    s.on('data', (c: Buffer) => { got += c.length; });
    s.on('close', () => resolve(true));
    setTimeout(() => resolve(false), 20_000);
  });
  assert.ok(await closed, 'the connection was closed');
  assert.ok(got > 0 && got < n, `the answer was cut: ${got} of ${n} bytes`);
  s.destroy();
});

test('a client that reads a large answer slowly, with pauses shorter than the idle timeout, gets all of it', async () => {
  const n = 32 << 20;
  const s: Socket = connect(port, '127.0.0.1');
  s.on('error', () => {});
  s.write(get(`/echo/bytes?n=${n}`).replace('{app}', app));
  // 8 MiB at a time, then 2 s without reading (the idle timeout is 3 s): 8 s in all
  let got = 0;
  let burst = 0;
  const closed = new Promise<boolean>((resolve) => {
    s.on('data', (c: Buffer) => {
      got += c.length;
      burst += c.length;
      if (burst < 8 << 20) return;
      burst = 0;
      s.pause();
      setTimeout(() => s.resume(), 2_000);
    });
    s.on('close', () => resolve(true));
    setTimeout(() => resolve(false), 60_000);
  });
  assert.ok(await closed, 'the answer ended within 60 s');
  assert.ok(got > n, `all of the answer and its head: ${got} bytes for ${n}`);
});

/** Opens a connection to `p`, kept in `held`, and sends `first` on it once connected. */
async function hold(p: number, held: Socket[], first: string): Promise<void> {
  const s = connect(p, '127.0.0.1');
  s.on('error', () => {});
  held.push(s);
  await new Promise((r) => s.once('connect', r));
  s.write(first);
}

/** A series of team-a's gateway `gw` in a /metrics text (0 when absent). */
const teamA = (text: string, name: string, gw: string, labels = '') =>
  Number(new RegExp(`^access_gateway_${name}\\{namespace="team-a",gateway="${gw}"${labels}\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
const refusedCount = async (gw: string, limit: string) => teamA(await scrapeMetrics(cp, op.adminPort), 'connections_refused_total', gw, `,limit="${limit}"`);

/** Holds connections with `fill`, then checks that one more to `overPort` is refused with
 * `status` (0: closed at accept), counted for team-a's `gw` under `limit`, while team-b is served,
 * and that closing them makes room. */
async function refusedOver(fill: (held: Socket[]) => Promise<void>, overPort: number, path: string, gw: string, limit: string, status: number): Promise<void> {
  const held: Socket[] = [];
  const before = await refusedCount(gw, limit);
  const one = () => rawRequest(overPort, get(path).replaceAll('{app}', app), 5_000);
  try {
    await fill(held);
    const over = await one().catch(() => ({ status: 0, head: '', body: '' }));
    assert.equal(over.status, status, 'the connection over the cap was served');
    if (status) {
      assert.match(over.head, /\r\nretry-after: 1\r\n/i, 'a client is told when to try again');
      assert.match(over.body, /AGW_ERR_TOO_MANY_CONNECTIONS/);
    }
    assert.equal((await rawRequest(bPort, get('/api', [`Authorization: Bearer ${appB}`]))).status, 200);
  } finally {
    for (const s of held) s.destroy();
  }
  assert.equal(await refusedCount(gw, limit), before + 1);
  await waitFor('closed connections make room again', async () => (await one()).status === 200 || undefined);
}

const unfinished = 'GET /echo/hold HTTP/1.1\r\nHost: g\r\n'; // open, headers unfinished

test('connections beyond the per-listener cap are refused; other listeners are not affected', async () => {
  await refusedOver(async (held) => {
    for (let i = 0; i < 32; i++) await hold(port, held, unfinished);
  }, port, '/echo/over', 'gw', 'listener', 0);
});

test('a namespace\'s admitted connections are capped across all of its listeners; strangers spend none of it; another namespace is not affected', async () => {
  const open = async () => {
    const text = await scrapeMetrics(cp, op.adminPort);
    return teamA(text, 'open_connections', 'gw') + teamA(text, 'open_connections', 'gw2');
  };
  await waitFor('the earlier tests\' connections closed', async () => (await open()) === 0 || undefined);
  // connections of callers the gateways refuse, or that never finish a request, spend nothing
  const strangers: Socket[] = [];
  // (8 that never finish, 4 on each listener: with 24 admitted each, under the listener cap of 32)
  for (let i = 0; i < 16; i++) await hold(i % 2 ? port : port2, strangers, i % 4 < 2 ? unfinished : get('/api', ['Authorization: Bearer forged']));
  await refusedOver(async (held) => {
    // 24 admitted on each listener (a request held open 20 s by the upstream), under its own cap
    // of 32: 48, the namespace's cap
    const slow = get('/echo/slow?ms=20000').replace('Connection: close', 'Connection: keep-alive').replaceAll('{app}', app);
    for (let i = 0; i < 24; i++) await hold(port, held, slow);
    for (let i = 0; i < 24; i++) await hold(port2, held, slow);
    await waitFor('48 admitted connections of team-a', async () => (await open()) === 48 || undefined, 10_000);
  }, port2, '/api', 'gw2', 'namespace', 503);
  for (const s of strangers) s.destroy();
});

test('connections that never ask are bounded per namespace as well: past 48 the oldest of the address holding the most is closed; its callers and team-b are still served', async () => {
  const refused = async () => (await refusedCount('gw', 'unadmitted')) + (await refusedCount('gw2', 'unadmitted'));
  await new Promise((r) => setTimeout(r, 500)); // the earlier tests' connections closed
  const before = await refused();
  const closed = new Set<Socket>();
  const quiet: Socket[] = [];
  const open = async (p: number, held: Socket[]) => {
    const s = connect(p, '127.0.0.1');
    s.on('error', () => {}).on('close', () => closed.add(s));
    held.push(s);
    await new Promise((r) => s.once('connect', r));
  };
  const teamB: Socket[] = [];
  // a caller of team-a from another address, connected before the flood and not asking yet
  const caller = connect({ port, host: '127.0.0.1', localAddress: '127.0.0.2' });
  caller.on('error', () => {}).on('close', () => closed.add(caller));
  try {
    await new Promise((r) => caller.once('connect', r));
    await open(bPort, teamB);
    // 60 connections to team-a's two listeners that send nothing, from one address (30 each, 31
    // with the caller's, under the listener cap of 32): 13, then (all of them accepted: two
    // listening sockets may accept out of order) 47
    for (let i = 0; i < 60; i++) {
      if (i === 13) await new Promise((r) => setTimeout(r, 200));
      await open(i % 2 ? port : port2, quiet);
    }
    await waitFor('13 of the quiet connections closed', async () => closed.size >= 13 || undefined, 1_000);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(quiet.map((s) => closed.has(s)), quiet.map((_, i) => i < 13), 'the flood\'s 13 oldest are closed, its 47 newest open');
    assert.equal(closed.has(caller), false, 'the caller from another address is not closed to make room for the flood');
    assert.equal(await refused(), before + 13);
    // the caller asks now, on its connection; another caller that asks at once is admitted too
    const answer = new Promise<string>((resolve) => {
      let head = '';
      caller.on('data', (c: Buffer) => { head += c.toString('latin1'); if (head.includes('\r\n\r\n')) resolve(head); });
    });
    caller.write(get('/api').replaceAll('{app}', app));
    assert.match(await answer, /^HTTP\/1\.1 200 /);
    assert.equal((await rawRequest(port, get('/api').replaceAll('{app}', app))).status, 200);
    assert.equal(closed.has(teamB[0]!), false, 'team-b\'s quiet connection is its own');
    assert.equal((await rawRequest(bPort, get('/api', [`Authorization: Bearer ${appB}`]))).status, 200);
  } finally {
    for (const s of [...quiet, ...teamB, caller]) s.destroy();
  }
});

test('request bodies buffered for retries are bounded per namespace: past 16 MiB they are streamed', async () => {
  const before = await arrived();
  const held: Socket[] = [];
  // a Service-route upload that declares 1 MiB and sends 1 KiB of it
  const upload = () => hold(port, held, req(['POST /echo/upload HTTP/1.1', 'Host: g', `Authorization: Bearer ${app}`, `Content-Length: ${1 << 20}`], 'x'.repeat(1024)));
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  try {
    for (let i = 0; i < 17; i++) await upload();
    // 16 are buffered, waiting for the rest of their bodies; the 17th is past the budget and streamed at once
    await waitFor('the 17th upload reaches the upstream', async () => (await arrived()) === before + 1 || undefined, 10_000);
    await sleep(500);
    assert.equal(await arrived(), before + 1, 'only the streamed upload reached the upstream');
  } finally {
    for (const s of held.splice(0)) s.destroy();
  }
  // the closed requests gave their bytes back: a new upload is buffered again
  await sleep(1_000);
  try {
    await upload();
    await sleep(1_000);
    assert.equal(await arrived(), before + 1, 'a new upload was streamed: the budget was not given back');
  } finally {
    for (const s of held) s.destroy();
  }
});
