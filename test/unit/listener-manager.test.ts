// Plans applied as a diff on real sockets (port 0 ports picked here): an unchanged plan — a resync,
// a new generation with the same content — keeps the route table and its per-caller caches.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { connect, createServer, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { X509Certificate } from 'node:crypto';
import { connect as tlsConnect } from 'node:tls';
import { createServer as createHttpServer, type IncomingMessage, type RequestListener, type ServerResponse } from 'node:http';
import { request } from 'undici';
import pino from 'pino';
import { Writable } from 'node:stream';
import { applyDefaults } from '../../src/api/defaults.js';
import type { AccessGateway } from '../../src/api/types.js';
import { PoolRegistry, type EndpointPool } from '../../src/dataplane/endpoints.js';
import { ListenerManager } from '../../src/dataplane/listener-manager.js';
import { RouteTable, type DataplaneDeps } from '../../src/dataplane/route-table.js';
import { lineWeight, silentLogger } from '../../src/observability/logger.js';
import { testMetrics } from '../../src/observability/metrics.js';
import { translate } from '../../src/translate/translate.js';
import type { ApiserverTarget, GatewayPlan, ServiceTarget } from '../../src/translate/plan.js';
import { defaultLimits, failureLine, Listener, type ListenerLimits } from '../../src/dataplane/listener.js';
import { connectionMs, HandshakeShare } from '../../src/dataplane/handshake-share.js';
import { addressGroup, TurnShare } from '../../src/dataplane/namespace-budget.js';
import { makeCA, makeCostlyChain, makeEnterpriseChain, makeLeaf, type CertPair } from '../support/certs.js';
import { captureHello } from '../support/client-hello.js';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { maxOlderTables, maxOlderTablesInAll } from '../../src/dataplane/held.js';
import { UpstreamUnreachableError } from '../../src/errors.js';

const freePort = () => new Promise<number>((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as { port: number }).port; s.close(() => resolve(p)); });
});

const plan = (port: number, generation: number, accept = '^/api/.*') => translate(applyDefaults({
  apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: 'gw', namespace: 'team-a', generation },
  spec: { authentication: { audiences: ['gw'] }, routes: [{ name: 'r', pathPrefix: '/', apiserver: { acceptPaths: [accept] } }] },
} as unknown as AccessGateway), { port: { port } }).plan!;

test('an unchanged plan (a new generation, a resync) keeps the route table; a changed one swaps it', async (t) => {
  const deps = { apiserver: {}, reviewer: { review: async () => ({ authenticated: false, error: '' }) }, log: silentLogger,
    pools: new PoolRegistry(), metrics: testMetrics() } as unknown as DataplaneDeps;
  const { m } = managerFor(t, { deps });
  const port = await freePort();
  const first = plan(port, 1);
  assert.deepEqual(await m.apply('team-a/gw', first), { programmed: true, port });
  const listener = m.get('team-a/gw')!;
  assert.equal(listener.plan, first);
  assert.deepEqual(await m.apply('team-a/gw', plan(port, 2)), { programmed: true, port });
  assert.equal(m.get('team-a/gw'), listener);
  assert.equal(listener.plan, first, 'the table (and its caches) was rebuilt for an unchanged plan');
  const changed = plan(port, 3, '^/apis/.*');
  await m.apply('team-a/gw', changed);
  assert.equal(m.get('team-a/gw'), listener, 'same port: the listener stays, only its table is swapped');
  assert.equal(listener.plan, changed);
});

const planOf = (namespace: string, name: string, port: number, users = ['alice']) => translate(applyDefaults({
  apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name, namespace, generation: 1 },
  spec: { authentication: { audiences: ['gw'] }, access: [{ users }], routes: [{ name: 'r', pathPrefix: '/', apiserver: {} }] },
} as unknown as AccessGateway), { port: { port } }).plan!;

const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
/** A token the fake reviewer below accepts as alice (JWT-shaped: the precheck reads aud and exp). */
const alice = `${b64({ alg: 'RS256' })}.${b64({ aud: ['gw'], exp: Math.floor(Date.now() / 1000) + 3600, sub: 'alice' })}.sig`;
const aliceDeps = () => ({
  apiserver: {}, log: silentLogger, pools: new PoolRegistry(), metrics: testMetrics(),
  reviewer: { review: async (token: string) => token === alice
    ? { authenticated: true, user: { username: 'alice', uid: '', groups: [], extra: {} }, audiences: ['gw'] }
    : { authenticated: false, error: 'no' } },
} as unknown as DataplaneDeps);

/** A ListenerManager (on loopback unless `host`); after the test, the sockets it opened (`held`)
 * are destroyed and its listeners closed. */
function managerFor(t: TestContext, o: { deps?: DataplaneDeps; host?: string; graceMs?: number; limits?: Partial<ListenerLimits> } = {}) {
  const deps = o.deps ?? aliceDeps();
  const m = new ListenerManager(deps, o.host ?? '127.0.0.1', o.graceMs ?? 0, { ...defaultLimits, ...o.limits });
  const held: Socket[] = [];
  t.after(async () => {
    for (const s of held) s.destroy();
    await m.closeAll(0);
  });
  return { deps, m, held };
}

/** Writes `head(i)` on each socket at once; what each read until `done` says it has its answer. */
function exchange(sockets: Socket[], head: (i: number) => string, done: (text: string) => boolean): Promise<string[]> {
  return Promise.all(sockets.map((s, i) => new Promise<string>((resolve) => {
    let text = '';
    const read = (c: Buffer) => {
      text += c.toString('latin1');
      if (!done(text)) return;
      s.off('data', read);
      resolve(text);
    };
    s.on('data', read);
    s.write(head(i));
  })));
}

/** The metrics exposition as text. */
async function exposed(deps: DataplaneDeps): Promise<string> {
  const e = await deps.metrics.exposition();
  return e.head + Buffer.concat([...e.chunks]).toString();
}

/** A gateway `gw` counter of `namespace` (0 when its series is not made yet). */
async function counted(deps: DataplaneDeps, name: string, namespace: string): Promise<number> {
  const m = new RegExp(`^access_gateway_${name}_total\\{namespace="${namespace}",gateway="gw"\\} (\\d+)$`, 'm').exec(await exposed(deps));
  return Number(m?.[1] ?? 0);
}

/** The plan with a TLS listener (a server certificate of its own; an RSA key with `rsa`). */
function withTLS(p: GatewayPlan, rsa = false): GatewayPlan {
  const dir = mkdtempSync(join(tmpdir(), 'agw-lm-'));
  const { cert, key } = makeLeaf(dir, makeCA(dir, 'ca'), 'listener', { cn: 'gw', dnsNames: ['gw'], rsa });
  return { ...p, tls: { secretName: 's', cert, key, notAfter: new X509Certificate(cert).validToDate.getTime(), clientCA: null } };
}

/** The plan with a TLS listener that asks for client certificates signed by `ca` (a bearer token does too). */
function withClientCA(p: GatewayPlan, ca: CertPair): GatewayPlan {
  const tls = withTLS(p).tls!;
  return { ...p, tls: { ...tls, clientCA: { ref: 'ConfigMap clients', pem: ca.cert, required: false, prefix: `team:${p.namespace}:`, notAfter: new X509Certificate(ca.cert).validToDate.getTime() } } };
}

/** The plan with its route going to a Service whose one endpoint is 127.0.0.1:`endpoint` (9: nothing
 * listens there). */
function withService(p: GatewayPlan, endpoint = 9): GatewayPlan {
  const target: ServiceTarget = { kind: 'service', namespace: 'team-a', name: 'echo', port: 80, scheme: 'http', endpoints: [{ ip: '127.0.0.1', port: endpoint }],
    ca: null, serverName: 'echo.team-a.svc', problem: null };
  return { ...p, routes: [{ ...p.routes[0]!, target }] };
}

/** An upstream on loopback that answers with `handler` (and upgrades with `onUpgrade`), closed (with
 * what it holds) after the test: its port. */
async function upstreamFor(t: TestContext, handler?: RequestListener, onUpgrade?: (sock: Socket) => void): Promise<number> {
  const u = createHttpServer(handler);
  if (onUpgrade) u.on('upgrade', (_req, sock: Socket) => onUpgrade(sock));
  await new Promise<void>((r) => u.listen(0, '127.0.0.1', () => r()));
  t.after(() => { u.closeAllConnections(); u.close(); });
  return (u.address() as { port: number }).port;
}

/** One discovery request on a new connection (kept in `held`): its status (0: none in 5 s) and
 * whether the server kept the connection open 300 ms after its answer (or closed it). Timed from
 * the answer, not the request: a loaded machine (a CI run beside) once took longer to answer. */
const ask = (port: number, held: Socket[], token = alice, secure = false) => new Promise<{ status: number; open: boolean }>((resolve) => {
  const s = open(port, secure);
  held.push(s);
  let head = '';
  let timer: NodeJS.Timeout | undefined;
  const done = () => {
    clearTimeout(timer);
    resolve({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(head)?.[1] ?? 0), open: !s.destroyed && s.readyState === 'open' });
  };
  s.on('error', () => {});
  s.on('close', done);
  s.on('data', (c: Buffer) => {
    head += c.toString('latin1');
    if (head.includes('\r\n\r\n')) {
      clearTimeout(timer);
      timer = setTimeout(done, 300);
    }
  });
  s.on(secure ? 'secureConnect' : 'connect', () => s.write(`GET /.well-known/access-gateway HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${token}\r\n\r\n`));
  timer = setTimeout(done, 5_000);
});

for (const cap of [3, 0]) {
  test(`connections per namespace: ${cap ? `at most ${cap} admitted over all of its listeners, other namespaces unaffected` : '0 is no limit'}`, async (t) => {
    const { deps, m, held } = managerFor(t, { limits: { maxConnections: 100, maxConnectionsPerNamespace: cap } });
    const [a1, a2, b] = [await freePort(), await freePort(), await freePort()];
    await m.apply('team-a/gw', planOf('team-a', 'gw', a1));
    await m.apply('team-a/gw2', planOf('team-a', 'gw2', a2));
    await m.apply('team-b/gw', planOf('team-b', 'gw', b));
    // callers that are not admitted spend nothing: their connection is closed after the refusal
    assert.deepEqual(await ask(a1, held, 'x.y.z'), { status: 401, open: false });
    assert.deepEqual(await ask(a1, held, 'x.y.z\r\nExpect: foo'), { status: 417, open: false }, 'Node\'s own answer to an Expect');
    const first = held.length; // the first admitted connection
    assert.deepEqual([await ask(a1, held), await ask(a1, held), await ask(a2, held)].map((r) => r.open), [true, true, true]);
    const over = { status: 503, open: false };
    assert.deepEqual(await ask(a2, held), cap ? over : { status: 200, open: true }, 'a 4th connection of team-a');
    assert.deepEqual(await ask(a1, held), cap ? over : { status: 200, open: true }, 'a 5th connection of team-a');
    assert.deepEqual(await ask(b, held), { status: 200, open: true }, 'team-b');
    const all = await exposed(deps);
    assert.match(all, new RegExp(`access_gateway_open_connections\\{namespace="team-a",gateway="gw"\\} ${cap ? 2 : 3}\\n`));
    if (cap) {
      assert.match(all, /access_gateway_connections_refused_total\{namespace="team-a",gateway="gw2",limit="namespace"\} 1\n/);
      // a closed connection gives its place back
      held[first]!.destroy();
      assert.equal(await waitUntil(async () => (await ask(a2, held)).open), true);
    }
  });
}

const open = (port: number, secure = false): Socket => secure
  ? tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false })
  : connect(port, '127.0.0.1');

/** A connection (kept in `held`) that sends nothing once connected (over TLS: after the handshake). */
const silent = (port: number, held: Socket[], secure = false) => new Promise<Socket>((resolve) => {
  const s = open(port, secure);
  held.push(s);
  s.on('error', () => {});
  s.once(secure ? 'secureConnect' : 'connect', () => resolve(s));
});

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
const isOpen = (s: Socket) => !s.destroyed && s.readyState === 'open';

test('CONNECT is answered 405 with Allow and a Status, counted, and the connection closed, over plain HTTP and TLS, after a request or alone', async (t) => {
  const { deps, m, held } = managerFor(t);
  const [plain, tls] = [await freePort(), await freePort()];
  await m.apply('team-a/gw', planOf('team-a', 'gw', plain));
  await m.apply('team-a/tls', withTLS(planOf('team-a', 'tls', tls)));
  const connectOn = (port: number, secure: boolean, before = '') => new Promise<{ text: string; closed: boolean }>((resolve) => {
    const s = open(port, secure);
    held.push(s);
    let text = '';
    s.on('data', (c) => { text += c.toString('latin1'); });
    s.on('error', () => {});
    s.on('close', () => resolve({ text, closed: true }));
    s.once(secure ? 'secureConnect' : 'connect', () => s.write(`${before}CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\nAuthorization: Bearer ${alice}\r\n\r\n`));
  });
  for (const [port, secure] of [[plain, false], [tls, true]] as const) {
    for (const before of ['', `GET /.well-known/access-gateway HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`]) {
      const r = await connectOn(port, secure, before);
      const at = r.text.lastIndexOf('HTTP/1.1 405');
      assert.ok(at >= 0 && r.closed, r.text);
      const [head, body] = r.text.slice(at).split('\r\n\r\n');
      assert.match(head!, /\r\nallow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE(\r\n|$)/);
      assert.match(head!, /\r\nconnection: close\r\n/);
      assert.equal(JSON.parse(body!).details.causes[0].reason, 'AGW_ERR_METHOD_NOT_ALLOWED');
    }
  }
  const all = await exposed(deps);
  for (const gw of ['gw', 'tls']) assert.match(all, new RegExp(`access_gateway_requests_total\\{namespace="team-a",gateway="${gw}",route="",method="CONNECT",code="4xx"\\} 2\n`));
});

test('connections not admitted yet: as many per namespace as admitted ones; past that its oldest is closed', async (t) => {
  const { deps, m, held } = managerFor(t, { limits: { maxConnections: 100, maxConnectionsPerNamespace: 3 } });
  const [a1, a2, b] = [await freePort(), await freePort(), await freePort()];
  await m.apply('team-a/gw', planOf('team-a', 'gw', a1));
  await m.apply('team-a/tls', withTLS(planOf('team-a', 'tls', a2)));
  await m.apply('team-b/gw', planOf('team-b', 'gw', b));
  const quiet = [await silent(a1, held), await silent(a2, held, true), await silent(a1, held)];
  const teamB = await silent(b, held);
  await pause(100);
  assert.deepEqual(quiet.map(isOpen), [true, true, true], 'three fit');
  // a fourth, over TLS: the oldest quiet one makes room
  const tls1 = await silent(a2, held, true);
  await pause(100);
  assert.deepEqual([...quiet, tls1].map(isOpen), [false, true, true, true]);
  // callers that ask at once are admitted, and then no longer count here
  assert.deepEqual([await ask(a2, held, alice, true), await ask(a1, held), await ask(a2, held, alice, true)],
    [{ status: 200, open: true }, { status: 200, open: true }, { status: 200, open: true }]);
  assert.deepEqual([...quiet, tls1].map(isOpen), [false, false, true, true], 'the first made room; once admitted, it left room for the next');
  const admitted = held.slice(-3);
  const more = [await silent(a1, held), await silent(a2, held, true), await silent(a1, held)];
  await pause(100);
  assert.deepEqual([...quiet, tls1].map(isOpen), [false, false, false, false], 'the oldest quiet ones made room');
  assert.deepEqual([...admitted, ...more].map(isOpen), [true, true, true, true, true, true], 'admitted ones are not closed to make room');
  assert.equal(isOpen(teamB), true, 'team-b\'s connection is its own');
  const all = await exposed(deps);
  assert.match(all, /access_gateway_connections_refused_total\{namespace="team-a",gateway="gw",limit="unadmitted"\} 2\n/);
  assert.match(all, /access_gateway_connections_refused_total\{namespace="team-a",gateway="tls",limit="unadmitted"\} 2\n/);
});

test('connections not admitted yet: a flood from one address closes its own, not a caller\'s from another', async (t) => {
  const { m, held } = managerFor(t, { limits: { maxConnections: 100, maxConnectionsPerNamespace: 4 } });
  const port = await freePort();
  await m.apply('team-a/gw', planOf('team-a', 'gw', port));
  const caller = connect({ port, host: '127.0.0.1', localAddress: '127.0.0.2' });
  caller.on('error', () => {});
  held.push(caller);
  await new Promise((r) => caller.once('connect', r));
  const flood: Socket[] = [];
  for (let i = 0; i < 10; i++) flood.push(await silent(port, held));
  await pause(100);
  assert.deepEqual(flood.map(isOpen), flood.map((_, i) => i >= 7), 'the flood\'s 7 oldest closed');
  assert.equal(isOpen(caller), true, 'the caller\'s connection, from another address');
  let head = '';
  caller.on('data', (c: Buffer) => { head += c.toString('latin1'); });
  caller.write(`GET /.well-known/access-gateway HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`);
  assert.equal(await waitUntil(async () => { await pause(50); return /^HTTP\/1\.1 200/.test(head); }), true);
});

test('connections not admitted yet: one that closes gives its place back; two from one client address and port are told apart', async (t) => {
  // on every address, as the operator listens: one client address and port can reach it twice
  const { m, held } = managerFor(t, { host: '0.0.0.0', limits: { maxConnections: 100, maxConnectionsPerNamespace: 2 } });
  const port = await freePort();
  await m.apply('team-a/gw', planOf('team-a', 'gw', port));
  const q1 = await silent(port, held);
  const q2 = await silent(port, held);
  q2.destroy();
  await pause(100);
  await silent(port, held);
  await pause(100);
  assert.equal(isOpen(q1), true, 'a closed connection gave its place back');
  for (const s of held.splice(0)) s.destroy();
  await pause(100);
  // a and b: the same client address and port, to two local addresses
  const lp = await freePort();
  const a = open2(port, '127.0.0.1', lp, held);
  const b = open2(port, '127.0.0.2', lp, held);
  await Promise.all([a, b].map((s) => new Promise((r) => s.once('connect', r))));
  await pause(100);
  let head = '';
  a.on('data', (c: Buffer) => { head += c.toString('latin1'); });
  a.write(`GET /.well-known/access-gateway HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`);
  await pause(200);
  assert.match(head, /^HTTP\/1\.1 200/);
  // two more that send nothing: the oldest not admitted (b) makes room, never the admitted a
  await silent(port, held);
  await silent(port, held);
  await pause(100);
  assert.deepEqual([isOpen(a), isOpen(b)], [true, false]);
});

/** A connection (kept in `held`) to `host`:`port` from 127.0.0.1:`localPort`. */
function open2(port: number, host: string, localPort: number, held: Socket[]): Socket {
  const s = connect({ port, host, localAddress: '127.0.0.1', localPort });
  s.on('error', () => {});
  held.push(s);
  return s;
}

test('a connection that never finishes its TLS handshake is closed after the header timeout', async (t) => {
  // no bound on connections not admitted: the timeout alone must close it
  const { m, held } = managerFor(t, { limits: { maxConnectionsPerNamespace: 0, headersTimeoutMs: 300 } });
  const port = await freePort();
  await m.apply('team-a/gw', withTLS(planOf('team-a', 'gw', port)));
  const s = await silent(port, held); // plain TCP: no ClientHello
  assert.equal(await waitUntil(async () => { await pause(100); return !isOpen(s); }), true);
});

/** Retries `fn` for up to 3 s until it resolves true. */
async function waitUntil(fn: () => Promise<boolean>, ms = 3_000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end;) if (await fn()) return true;
  return false;
}

test('a listener whose server cannot be made (a key OpenSSL refuses) gives back its route table\'s endpoint pools', async (t) => {
  const { deps, m } = managerFor(t);
  const p = planOf('team-a', 'gw', await freePort());
  const tls = { secretName: 's', cert: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n', key: 'not a key', notAfter: 0, clientCA: null };
  await assert.rejects(m.apply('team-a/gw', { ...withService(p), tls }));
  assert.equal(deps.pools.size, 0);
});

for (const change of ['moved to another port', 'switched to TLS on its port']) {
  test(`a gateway ${change}: the reconcile does not wait for the old listener to drain; shutdown does`, async (t) => {
    const { m, held } = managerFor(t, { graceMs: 1_500 }); // a drain of 1.5 s
    const [p1, p2] = [await freePort(), await freePort()];
    await m.apply('team-a/gw', planOf('team-a', 'gw', p1));
    // a request in progress on the old listener (its headers unfinished): held until the drain ends
    const s = await silent(p1, held);
    s.write('GET /.well-known/access-gateway HTTP/1.1\r\nHost: g\r\n');
    await pause(100);
    const secure = change.includes('TLS');
    const port = secure ? p1 : p2;
    const next = secure ? withTLS(planOf('team-a', 'gw', port)) : planOf('team-a', 'gw', port);
    assert.deepEqual(await m.apply('team-a/gw', next), { programmed: true, port });
    assert.equal(isOpen(s), true, 'the reconcile returned while the old listener drains');
    assert.equal((await ask(port, held, alice, secure)).status, 200);
    let done = false;
    const closed = m.closeAll(0).then(() => { done = true; });
    await pause(200);
    assert.equal(done, false, 'shutdown waits for the draining listener');
    await closed;
  });
}

/** aliceDeps whose token checks wait for `answer()`. */
function heldDeps() {
  const deps = aliceDeps();
  const review = deps.reviewer.review;
  const held = { answer: () => {}, asked: false };
  deps.reviewer.review = (...args) => new Promise((resolve) => {
    held.asked = true;
    held.answer = () => { held.asked = false; resolve(review(...args)); };
  });
  return { deps, held };
}

/** A GET of /x with `token`. */
const get = (token: string) => `GET /x HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${token}\r\n\r\n`;
const discoveryRequest = `GET /.well-known/access-gateway HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`;

test('a retired listener answers what it has with Connection: close, and serves nothing more on that connection', async (t) => {
  const { deps, held: review } = heldDeps();
  const { m, held } = managerFor(t, { deps, graceMs: 5_000 });
  const port = await freePort();
  await m.apply('team-a/gw', planOf('team-a', 'gw', port));
  const s = await silent(port, held);
  let text = '';
  s.on('data', (c: Buffer) => { text += c.toString('latin1'); });
  s.write(discoveryRequest);
  await pause(100);
  await m.apply('team-a/gw', withTLS(planOf('team-a', 'gw', port)));
  review.answer();
  await pause(200);
  assert.match(text, /^HTTP\/1\.1 200/);
  assert.match(text, /\r\nconnection: close\r\n/i);
  assert.equal(isOpen(s), false, 'the plain-HTTP connection is not kept after the switch to TLS');
});

test('a retired listener closes a connection whose answer began before it retired, once the answer ends', async (t) => {
  const { m, held } = managerFor(t, { graceMs: 5_000 });
  // an upstream that sends its head at once and the end of its body when told
  let finish = () => {};
  const up = await upstreamFor(t, (_req, res) => {
    res.writeHead(200, { 'content-length': 2 }).write('a');
    finish = () => res.end('b');
  });
  const [p1, p2] = [await freePort(), await freePort()];
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', p1), up));
  const s = await silent(p1, held);
  let text = '';
  s.on('data', (c: Buffer) => { text += c.toString('latin1'); });
  s.write(`GET /x HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`);
  await pause(200);
  assert.match(text, /^HTTP\/1\.1 200[^]*keep-alive/i, 'the head went out before the move');
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', p2), up));
  finish();
  await pause(200);
  assert.match(text, /\r\n\r\nab$/);
  assert.equal(isOpen(s), false, 'the kept connection is closed once its answer ended');
});

test('requests per turn: another team\'s request is not held behind one team\'s burst; every request is answered', async (t) => {
  const { deps, m, held } = managerFor(t, { limits: { requestsPerTurnPerNamespace: 1 } });
  const arrived: string[] = [];
  const up = await upstreamFor(t, (req, res) => {
    arrived.push(req.url!);
    res.end('ok');
  });
  const [a, b] = [await freePort(), await freePort()];
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', a), up));
  await m.apply('team-b/gw', withService(planOf('team-b', 'gw', b), up));
  const sockets = await Promise.all([a, a, a, a, a, b].map((p) => silent(p, held)));
  // five requests of team-a, then one of team-b, sent at once: read by the operator in one turn
  const burst = () => exchange(sockets, (i) => `GET /${i < 5 ? `a${i + 1}` : 'b'} HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`,
    (text) => text.endsWith('ok'));
  await burst(); // the upstream's connections are open now: a request arrives in the order it started
  arrived.length = 0;
  for (const text of await burst()) assert.match(text, /^HTTP\/1\.1 200/);
  assert.deepEqual([...arrived].sort(), ['/a1', '/a2', '/a3', '/a4', '/a5', '/b']);
  assert.ok(arrived.indexOf('/b') <= 1, `team-b started in the turn it arrived, with team-a's first: ${arrived.join(' ')}`);
  const all = await exposed(deps);
  const deferred = await counted(deps, 'requests_deferred', 'team-a');
  assert.ok(deferred >= 4 && deferred <= 8, `team-a's 4 later ones waited, in each burst: ${deferred}`);
  assert.doesNotMatch(all, /requests_deferred_total\{namespace="team-b"/);
});

/** team-a's and team-b's gateways (ports `a`, `b`) to an upstream that answers ok, one request a
 * turn each (`--requests-per-turn-per-namespace 1`). */
async function twoTeams(t: TestContext) {
  const { deps, m, held } = managerFor(t, { limits: { requestsPerTurnPerNamespace: 1 } });
  const up = await upstreamFor(t, (_req, res) => res.end('ok'));
  const [a, b] = [await freePort(), await freePort()];
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', a), up));
  await m.apply('team-b/gw', withService(planOf('team-b', 'gw', b), up));
  return { deps, m, held, a, b };
}

test('requests per turn: a team alone starts 4 times its share a turn; another team\'s connection, before any request, holds it to its share', async (t) => {
  const { deps, held, a, b } = await twoTeams(t);
  const sockets = await Promise.all([a, a, a, a, a].map((p) => silent(p, held)));
  const burst = () => burstOf(deps, sockets);
  await burst(); // the connections admitted, the upstream's open
  const alone = await burst();
  assert.ok(alone <= 1, `alone, 4 a turn: at most one of five waits (${alone})`);
  await silent(b, held); // team-b's connection, nothing sent on it
  await pause(50);
  const beside = await burst();
  assert.ok(beside >= 2, `held to one a turn once team-b's connection came: ${beside} waited`);
});

/** team-a's five requests sent at once on `sockets` (read in one turn, or more: fewer wait), all
 * answered 200: how many of them waited for a later turn. */
async function burstOf(deps: DataplaneDeps, sockets: Socket[]): Promise<number> {
  const before = await counted(deps, 'requests_deferred', 'team-a');
  for (const text of await exchange(sockets, (i) => `GET /a${i} HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`, (x) => x.endsWith('ok'))) {
    assert.match(text, /^HTTP\/1\.1 200/);
  }
  return (await counted(deps, 'requests_deferred', 'team-a')) - before;
}

/** A JWT-shaped token the fake reviewer refuses (it is reviewed: not cached anywhere yet). */
const stranger = `${b64({ alg: 'RS256' })}.${b64({ aud: ['gw'], exp: Math.floor(Date.now() / 1000) + 3600, sub: 'bob' })}.sig`;

/**
 * twoTeams with a "alone" window of 300 ms (instead of a second), team-a's five connections
 * admitted, and a reviewer that holds its answers while `review.hold`. `lapse()` waits out the
 * window and checks that team-a is alone again (at most one of its five waits), so what holds it
 * after that is only what a test does next.
 */
async function quietTeams(t: TestContext) {
  const share = TurnShare as unknown as { aloneMs: number };
  const was = share.aloneMs;
  share.aloneMs = 300; // read when the manager's TurnShare is made (below)
  t.after(() => { share.aloneMs = was; });
  const deps = aliceDeps();
  const answer = deps.reviewer.review;
  const review = { hold: false, asked: false, answer: () => {} };
  deps.reviewer.review = (...args) => review.hold ? new Promise((resolve) => {
    review.asked = true;
    review.answer = () => resolve(answer(...args));
  }) : answer(...args);
  t.after(() => review.answer()); // (before the manager closes: a failed check must not leave it waiting)
  const { m, held } = managerFor(t, { deps, limits: { requestsPerTurnPerNamespace: 1 } });
  const up = await upstreamFor(t, (_req, res) => res.end('ok'), (sock) => sock.write(switched));
  const [a, b] = [await freePort(), await freePort()];
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', a), up));
  await m.apply('team-b/gw', withService(withTLS(planOf('team-b', 'gw', b)), up));
  const sockets = await Promise.all([a, a, a, a, a].map((p) => silent(p, held)));
  await burstOf(deps, sockets); // admitted, the upstream's connections open
  const lapse = async () => {
    await pause(400);
    await burstOf(deps, sockets); // (a lapsed mark is dropped at the end of a turn that ran)
    assert.ok(await burstOf(deps, sockets) <= 1, 'team-a is alone again once the window passed');
  };
  /** Resolves once the reviewer holds a review. */
  const asked = async () => { for (let i = 0; i < 300 && !review.asked; i++) await pause(5); assert.ok(review.asked); };
  return { deps, held, review, asked, lapse, sockets, b };
}

test('requests per turn: another team\'s request holds a team alone to its share while its token is checked, before it starts', async (t) => {
  const { deps, held, review, asked, lapse, sockets, b } = await quietTeams(t);
  const s = await silent(b, held, true); // team-b's connection: its mark (and the handshake's) lapse
  await lapse();
  review.hold = true;
  s.write(get(stranger));
  await asked();
  assert.ok(await burstOf(deps, sockets) >= 2, 'held to one a turn while team-b\'s request is in its token check');
  review.answer();
});

test('requests per turn: another team\'s upgrade on a kept connection holds a team alone to its share while its token is checked', async (t) => {
  const { deps, held, review, asked, lapse, sockets, b } = await quietTeams(t);
  const s = await silent(b, held, true);
  assert.match((await exchange([s], () => get(alice), (x) => x.endsWith('ok')))[0]!, /^HTTP\/1\.1 200/); // admitted, kept
  await lapse();
  review.hold = true;
  s.write(`GET /ws HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${stranger}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
  await asked();
  assert.ok(await burstOf(deps, sockets) >= 2, 'held to one a turn while team-b\'s upgrade is in its token check');
  review.answer();
});

test('requests per turn: another team\'s TLS handshake that finishes after the window holds a team alone to its share', async (t) => {
  const { deps, held, lapse, sockets, b } = await quietTeams(t);
  const raw = connect(b, '127.0.0.1');
  held.push(raw);
  raw.on('error', () => {});
  await new Promise((r) => raw.once('connect', r)); // the connection's mark, then nothing for the window
  await lapse();
  const s = tlsConnect({ socket: raw, rejectUnauthorized: false });
  s.on('error', () => {});
  await new Promise((r) => s.once('secureConnect', r));
  await pause(50); // the gateway's side ends when it reads the client's last handshake message
  assert.ok(await burstOf(deps, sockets) >= 2, 'held to one a turn once team-b\'s handshake finished');
});

/** Runs what waits in `waiting`, a turn at a time, until `done` (at most 3,000 tries; a try with
 * nothing waiting waits 1 ms); says how many turns ran. */
async function runTurns(waiting: Array<() => boolean | void>, done: () => boolean): Promise<number> {
  let turns = 0;
  for (let i = 0; i < 3_000 && !done(); i++) {
    const go = waiting.shift();
    if (!go) {
      await pause(1);
      continue;
    }
    go();
    turns++;
  }
  return turns;
}

/** Turns that say no to every request and piece (`tryStart`), and keep each `go` in `waiting` to be
 * called by the test; `ran`: the `go`s that started something, `starts()`: the starts counted. */
function holdTurns(t: TestContext, waiting: Array<() => boolean | void>) {
  const turns = { ran: 0, starts: () => start.mock.callCount() };
  t.mock.method(TurnShare.prototype, 'tryStart', () => false);
  t.mock.method(TurnShare.prototype, 'wait', (_ns: string, go: () => boolean | void) => {
    waiting.push(() => {
      const r = go();
      if (r !== false) turns.ran++;
      return r;
    });
  });
  const start = t.mock.method(TurnShare.prototype, 'start');
  return turns;
}

test('requests per turn: a request whose client left while it waited takes no place in its turn', async (t) => {
  const waiting: Array<() => boolean | void> = [];
  holdTurns(t, waiting); // every request and piece that asks waits, until its `go` is called
  const { m, held } = managerFor(t);
  const up = await upstreamFor(t, (_req, res) => res.end('ok'));
  const a = await freePort();
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', a), up));
  const gone = await silent(a, held), kept = await silent(a, held);
  for (const s of [gone, kept]) s.write(`GET /x HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`);
  for (let i = 0; i < 300 && waiting.length < 2; i++) await pause(10);
  assert.equal(waiting.length, 2);
  gone.destroy();
  await pause(200); // the operator sees it close
  const answer = new Promise<string>((r) => kept.once('data', (d: Buffer) => r(d.toString('latin1'))));
  assert.deepEqual(waiting.map((go) => go()).sort(), [false, true], 'the one whose client left started nothing');
  assert.match(await answer, /^HTTP\/1\.1 200/);
});

test('upgrades take their namespace\'s turns too: one team\'s burst of upgrades waits, another\'s does not', async (t) => {
  const { deps, m, held } = managerFor(t, { limits: { requestsPerTurnPerNamespace: 1 } });
  const up = await upstreamFor(t, (_req, res) => res.end('ok'), (sock) => sock.write(switched));
  const [a, b] = [await freePort(), await freePort()];
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', a), up));
  await m.apply('team-b/gw', withService(planOf('team-b', 'gw', b), up));
  const sockets = await Promise.all([a, a, a, a, a, b].map((p) => silent(p, held)));
  const send = (head: string, done: (text: string) => boolean) => exchange(sockets, () => head, done);
  // a request first on each connection: admitted, its caller known, each upgrade admitted at once
  await send(`GET /x HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`, (text) => text.endsWith('ok'));
  // the warm-up's requests may have waited too: only what the upgrades add is counted
  const deferredNow = () => counted(deps, 'requests_deferred', 'team-a');
  const before = await deferredNow();
  // five upgrades of team-a, then one of team-b, sent at once: read by the operator in one turn
  const answers = await send(`GET /ws HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
    (text) => text.includes('\r\n\r\n'));
  for (const text of answers) assert.match(text, /^HTTP\/1\.1 101 /);
  const all = await exposed(deps);
  const deferred = (await deferredNow()) - before;
  assert.ok(deferred >= 1 && deferred <= 4, `team-a's later upgrades waited for their turns: ${deferred}`);
  assert.doesNotMatch(all, /requests_deferred_total\{namespace="team-b"/);
});

test('requests per turn: a team\'s refused requests on its admitted connections wait their turn too', async (t) => {
  const { deps, held, a, b } = await twoTeams(t);
  const sockets = await Promise.all([a, a, a, a, a, b].map((p) => silent(p, held)));
  // a request first on each connection: admitted
  await exchange(sockets, () => get(alice), (text) => text.endsWith('ok'));
  const deferredNow = () => counted(deps, 'requests_deferred', 'team-a');
  const before = await deferredNow();
  // five refused requests of team-a (a token the gateway does not accept), then team-b's admitted
  // one, sent at once: read by the operator in one turn
  const answers = await exchange(sockets, (i) => get(i < 5 ? 'refused' : alice), (text) => /\}$|ok$/.test(text));
  for (const text of answers.slice(0, 5)) assert.match(text, /^HTTP\/1\.1 401 /);
  assert.match(answers[5]!, /^HTTP\/1\.1 200 /);
  const deferred = (await deferredNow()) - before;
  assert.ok(deferred >= 4 && deferred <= 8, `team-a's later refusals waited for their turns: ${deferred}`);
  assert.doesNotMatch(await exposed(deps), /requests_deferred_total\{namespace="team-b"/);
  for (const s of sockets.slice(0, 5)) assert.equal(isOpen(s), true, 'a refusal keeps an admitted connection');
});

test('requests per turn: a client never admitted takes no place in a team\'s turns (its refusal is answered at once)', async (t) => {
  const waiting: Array<() => boolean | void> = [];
  holdTurns(t, waiting); // every request and piece that asks waits, until its `go` is called
  const { m, held } = managerFor(t);
  const up = await upstreamFor(t, (_req, res) => res.end('ok'));
  const a = await freePort();
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', a), up));
  const answered = (sockets: Socket[], token: string) => Promise.race([
    exchange(sockets, () => get(token), (text) => /\}$|ok$/.test(text)), pause(2_000).then(() => ['no answer in 2 s'])]);
  const strangers = await Promise.all([a, a, a].map((p) => silent(p, held)));
  for (const text of await answered(strangers, 'refused')) assert.match(text, /^HTTP\/1\.1 401 [^]*\r\nconnection: close\r\n/i);
  assert.equal(waiting.length, 0);
  // a connection once admitted (its first request waited for its turn, as every forwarded one)
  const s = await silent(a, held);
  const first = answered([s], alice);
  for (let i = 0; i < 300 && !waiting.length; i++) await pause(10);
  waiting.shift()!();
  assert.match((await first)[0]!, /^HTTP\/1\.1 200 /);
  // ...and its refused request waits for its turn before it is answered
  const refused = answered([s], 'refused');
  for (let i = 0; i < 300 && !waiting.length; i++) await pause(10);
  assert.equal(waiting.length, 1, 'the refusal waits for its turn');
  waiting.shift()!();
  assert.match((await refused)[0]!, /^HTTP\/1\.1 401 /);
});

/** Sends a GET of `path` on `s` and reads its answer (with a content-length) whole: its head, and
 * whether its body is `length` bytes of `fill`. */
function fetchWhole(s: Socket, path: string, length: number, fill: number): Promise<{ head: string; whole: boolean }> {
  return new Promise((resolve) => {
    let head = '', got = 0, same = true, buffered: Buffer | undefined = Buffer.alloc(0);
    const read = (c: Buffer) => {
      let body = c;
      if (buffered) {
        buffered = Buffer.concat([buffered, c]);
        const end = buffered.indexOf('\r\n\r\n');
        if (end < 0) return;
        head = buffered.subarray(0, end).toString('latin1');
        body = buffered.subarray(end + 4);
        buffered = undefined;
      }
      got += body.length;
      if (same && body.some((x) => x !== fill)) same = false;
      if (got >= length) {
        s.off('data', read);
        resolve({ head, whole: same && got === length });
      }
    };
    s.on('data', read);
    s.write(`GET ${path} HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`);
  });
}

test('requests per turn: a long answer\'s pieces take their namespace\'s turns, and arrive whole (a client that stops reading too)', async (t) => {
  const { deps, m, held } = managerFor(t, { limits: { requestsPerTurnPerNamespace: 1 } });
  const big = Buffer.alloc(8 << 20, 'a');
  const up = await upstreamFor(t, (req, res) => res.end(req.url === '/big' ? big : 'ok'));
  const [a, b] = [await freePort(), await freePort()];
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', a), up));
  await m.apply('team-b/gw', withService(planOf('team-b', 'gw', b), up));
  const [s1, s2, sb] = await Promise.all([a, a, b].map((p) => silent(p, held)));
  await exchange([s1!, s2!, sb!], () => get(alice), (text) => text.endsWith('ok'));
  const deferred = () => counted(deps, 'body_pieces_deferred', 'team-a');
  assert.equal(await deferred(), 0, 'one-piece answers take no turn of their own');
  // two downloads at once, one of whose clients stops reading for a while (the answer waits for
  // its client and for its turns), and team-b's request meanwhile
  const fast = fetchWhole(s1!, '/big', big.length, 0x61);
  s2!.pause();
  const slow = fetchWhole(s2!, '/big', big.length, 0x61);
  const [other] = await exchange([sb!], () => get(alice), (text) => text.endsWith('ok'));
  assert.match(other!, /^HTTP\/1\.1 200 /);
  await pause(300);
  s2!.resume();
  for (const r of await Promise.all([fast, slow])) {
    assert.match(r.head, /^HTTP\/1\.1 200 /);
    assert.equal(r.whole, true, 'every byte, in order');
  }
  assert.ok(await deferred() > 0, 'pieces waited for their turns');
  assert.doesNotMatch(await exposed(deps), /body_pieces_deferred_total\{namespace="team-b"/);
});

test('requests per turn: a long answer waits for its turn before its next piece is read; one whose client left takes no place', async (t) => {
  const waiting: Array<() => boolean | void> = [];
  const { m, held } = managerFor(t);
  const big = Buffer.alloc(4 << 20, 'a');
  const up = await upstreamFor(t, (req, res) => res.end(req.url === '/big' ? big : 'ok'));
  const a = await freePort();
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', a), up));
  const s1 = await silent(a, held), s2 = await silent(a, held);
  await exchange([s1, s2], () => get(alice), (text) => text.endsWith('ok')); // admitted
  const paced = holdTurns(t, waiting); // every request and piece that asks waits, until its `go` is called
  // (each request waits for its turn first)
  let got = 0;
  s1.on('data', (c: Buffer) => { got += c.length; });
  s1.write(get(alice).replace('/x', '/big'));
  for (let i = 0; i < 300 && !waiting.length; i++) await pause(10);
  waiting.shift()!(); // the request's turn
  for (let i = 0; i < 300 && !waiting.length; i++) await pause(10);
  assert.equal(waiting.length, 1, 'its second piece waits for a turn');
  await pause(300);
  const before = got;
  assert.ok(before > 0 && before <= 65_536 + 1_024, `its first piece came, not the one that waits: ${before}`);
  await pause(300);
  assert.equal(got, before, 'no more until its turn');
  const turns = await runTurns(waiting, () => got > big.length); // (got counts the head too)
  assert.ok(got > big.length && turns > 4, `the rest came, in ${turns} turns`);
  assert.equal(paced.starts(), paced.ran, 'each turn that sent a piece counted its start');
  // a second download whose client leaves while it waits for a turn
  s2.write(get(alice).replace('/x', '/big'));
  for (let i = 0; i < 300 && !waiting.length; i++) await pause(10);
  waiting.shift()!();
  for (let i = 0; i < 300 && !waiting.length; i++) await pause(10);
  s2.destroy();
  await pause(200);
  assert.equal(waiting.shift()!(), false, 'it takes no place in its turn');
});

test('requests per turn: an answer that ends (its upstream closed) while its last pieces wait for their turn still sends them', async (t) => {
  const waiting: Array<() => boolean | void> = [];
  const { m, held } = managerFor(t);
  const size = 4 << 20;
  // an answer whose end is its connection's close (no length): undici hands over what it read,
  // and the end, even while paused
  const raw = createServer((sock) => {
    sock.on('error', () => {});
    sock.once('data', () => sock.end(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n'), Buffer.alloc(size, 'c')])));
  });
  await new Promise<void>((r) => raw.listen(0, '127.0.0.1', () => r()));
  t.after(() => raw.close());
  const a = await freePort();
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', a), (raw.address() as { port: number }).port));
  const s = await silent(a, held);
  holdTurns(t, waiting); // every request and piece that asks waits, until its `go` is called
  let text = '';
  s.on('data', (c: Buffer) => { text += c.toString('latin1'); });
  s.write(get(alice));
  for (let i = 0; i < 300 && !waiting.length; i++) await pause(10);
  waiting.shift()!(); // the request's turn
  await pause(300); // the upstream has sent it all and closed
  await runTurns(waiting, () => text.endsWith('\r\n0\r\n\r\n'));
  assert.ok(text.endsWith('\r\n0\r\n\r\n'), 'the answer ended');
  const body = text.slice(text.indexOf('\r\n\r\n') + 4).replace(/(^|\r\n)[0-9a-f]+\r\n/g, '').replace(/\r\n$/, '');
  assert.equal(body.length, size, 'every byte, the held ones too');
});

test('requests per turn: a stream cut when its caller is dropped still sends the piece that waited for its turn, then ends cleanly', async (t) => {
  const waiting: Array<() => boolean | void> = [];
  const { m, held } = managerFor(t);
  const up = await upstreamFor(t, (req, res) => {
    if (req.url !== '/watch') { res.end('ok'); return; }
    res.writeHead(200, { 'content-type': 'text/plain' }); // no length: a stream
    res.write('first-event\n');
    setTimeout(() => res.write('second-event\n'), 200); // and then nothing more, never ended
  });
  const a = await freePort();
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', a), up));
  const s = await silent(a, held);
  await exchange([s], () => get(alice), (text) => text.endsWith('ok')); // admitted
  const turns = holdTurns(t, waiting); // every request and piece that asks waits, until its `go` is called
  let text = '';
  s.on('data', (c: Buffer) => { text += c.toString('latin1'); });
  s.write(`GET /watch HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`);
  for (let i = 0; i < 300 && !waiting.length; i++) await pause(10);
  waiting.shift()!(); // the request's turn
  for (let i = 0; i < 300 && !waiting.length; i++) await pause(10);
  assert.equal(waiting.length, 1, 'the second piece waits for its turn');
  assert.match(text, /first-event/);
  assert.doesNotMatch(text, /second-event/);
  // spec.access drops the caller: the stream ends, after what it had received
  const starts = turns.starts();
  await m.apply('team-a/gw', withAccess(withService(planOf('team-a', 'gw', a), up), [{ users: ['bob'] }]));
  for (let i = 0; i < 300 && !text.endsWith('\r\n0\r\n\r\n'); i++) await pause(10);
  assert.ok(text.endsWith('\r\n0\r\n\r\n'), `ended cleanly: ${JSON.stringify(text)}`);
  assert.match(text, /second-event/, 'the piece that waited was sent before the end');
  assert.equal(turns.starts(), starts + 1, 'and counted in its namespace\'s turn');
  assert.deepEqual(waiting.splice(0).map((go) => go()), [false], 'and its turn takes no place');
});

test('requests per turn: a turn does not read on for a client that reads nothing; the answer goes on once it reads', async (t) => {
  const waiting: Array<() => boolean | void> = [];
  const { m, held } = managerFor(t);
  const big = Buffer.alloc(32 << 20, 'a'); // past what loopback's socket buffers take (~4 MiB here, ~10 MiB by default)
  const up = await upstreamFor(t, (req, res) => res.end(req.url === '/big' ? big : 'ok'));
  const a = await freePort();
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', a), up));
  const s = await silent(a, held);
  await exchange([s], () => get(alice), (text) => text.endsWith('ok')); // admitted
  holdTurns(t, waiting); // every request and piece that asks waits, until its `go` is called
  const next = async (ms: number) => {
    for (let i = 0; i < ms && !waiting.length; i++) await pause(1);
    return waiting.shift();
  };
  s.pause();
  s.write(get(alice).replace('/x', '/big'));
  (await next(3_000))!(); // the request's turn
  // every turn given at once: the answer stops when its client's buffers are full, not at its end
  let turns = 0;
  for (let go = await next(300); go; go = await next(300)) {
    go();
    turns++;
  }
  assert.ok(turns < (big.length >> 16) / 2, `it stopped reading (${turns} turns for ${big.length >> 16} pieces of 64 KiB)`);
  let got = 0;
  s.on('data', (c: Buffer) => { got += c.length; });
  s.resume();
  await runTurns(waiting, () => got > big.length);
  assert.ok(got > big.length, 'the rest came once the client read');
});

/** An upstream that reads each request's body whole and answers its length and whether every
 * byte was `b`; `seen` counts the bytes it has read so far. */
async function bodyCounter(t: TestContext) {
  const seen = { bytes: 0 };
  const port = await upstreamFor(t, (req, res) => {
    if (req.url === '/early') { // answers before it reads the body
      res.end('early');
      return;
    }
    let n = 0, same = true;
    req.on('data', (c: Buffer) => { n += c.length; seen.bytes += c.length; if (same && c.some((x) => x !== 0x62)) same = false; });
    req.on('end', () => res.end(`${n} ${same}`));
  });
  return { port, seen };
}

/** A POST of `size` bytes of 'b' (chunked when `chunked`), written at once on `s`. */
const upload = (s: Socket, size: number, chunked: boolean, path = '/x') => {
  const body = Buffer.alloc(size, 'b');
  s.write(`POST ${path} HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n${chunked ? 'Transfer-Encoding: chunked' : `Content-Length: ${size}`}\r\n\r\n`);
  s.write(chunked ? Buffer.concat([Buffer.from(`${size.toString(16)}\r\n`), body, Buffer.from('\r\n0\r\n\r\n')]) : body);
};

test('requests per turn: a streamed request body\'s pieces take their namespace\'s turns, and arrive whole', async (t) => {
  const { deps, m, held } = managerFor(t, { limits: { requestsPerTurnPerNamespace: 1 } });
  const { port: up } = await bodyCounter(t);
  const a = await freePort();
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', a), up));
  const [s1, s2, s3] = await Promise.all([a, a, a].map((p) => silent(p, held)));
  const size = 8 << 20; // past what a Service route buffers (1 MiB): streamed
  const answers = exchange([s1!, s2!, s3!], () => '', (text) => /\r\n\r\n\d+ (true|false)$/.test(text));
  upload(s1!, size, false);
  upload(s2!, size, true);
  upload(s3!, 1000, false); // buffered: no pieces of its own
  const [x, y, z] = await answers;
  assert.match(x!, new RegExp(`^HTTP/1\\.1 200 [^]*\\r\\n\\r\\n${size} true$`));
  assert.match(y!, new RegExp(`^HTTP/1\\.1 200 [^]*\\r\\n\\r\\n${size} true$`));
  assert.match(z!, /\r\n\r\n1000 true$/);
  assert.ok(await counted(deps, 'body_pieces_deferred', 'team-a') > 0, 'pieces waited for their turns');
});

test('requests per turn: a streamed request body waits for its turn before its next piece is read; one no one reads any more takes no place', async (t) => {
  const waiting: Array<() => boolean | void> = [];
  const { m, held } = managerFor(t);
  const { port: up, seen } = await bodyCounter(t);
  const a = await freePort();
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', a), up));
  const s1 = await silent(a, held), s2 = await silent(a, held);
  await exchange([s1, s2], () => get(alice), (text) => /\r\n\r\n0 true$/.test(text)); // admitted
  const paced = holdTurns(t, waiting); // every request and piece that asks waits, until its `go` is called
  const size = 8 << 20;
  const answer = exchange([s1], () => '', (text) => /\r\n\r\n\d+ (true|false)$/.test(text));
  upload(s1, size, false);
  for (let i = 0; i < 300 && !waiting.length; i++) await pause(10);
  waiting.shift()!(); // the request's turn
  for (let i = 0; i < 300 && !waiting.length; i++) await pause(10);
  assert.equal(waiting.length, 1, 'its second piece waits for a turn');
  await pause(300);
  const before = seen.bytes;
  assert.ok(before > 0 && before < size, `part of the body came: ${before}`);
  await pause(300);
  assert.equal(seen.bytes, before, 'no more until its turn');
  const turns = await runTurns(waiting, () => seen.bytes >= size);
  assert.match((await answer)[0]!, new RegExp(`\\r\\n\\r\\n${size} true$`));
  assert.ok(turns > 4, `the rest came, in ${turns} turns`);
  assert.equal(paced.starts(), paced.ran, 'each turn that sent a piece counted its start');
  // (its last piece's turn, if it still waits, is for a body no one reads any more)
  for (const go of waiting.splice(0)) assert.equal(go(), false, 'the answer is over: no place');
  // an upload whose upstream answers before it reads the body: its next piece takes no place
  const early = exchange([s2], () => '', (text) => text.endsWith('early'));
  upload(s2, size, false, '/early');
  for (let i = 0; i < 300 && !waiting.length; i++) await pause(10);
  waiting.shift()!(); // the request's turn
  assert.match((await early)[0]!, /^HTTP\/1\.1 200 /);
  for (let i = 0; i < 300 && !waiting.length; i++) await pause(10);
  assert.equal(waiting.length, 1, 'its second piece waited for a turn');
  assert.equal(waiting.shift()!(), false, 'it takes no place in its turn');
});

test('requests per turn: a request\'s one long piece (an answer of 64 KiB, an upload of 64 KiB) is charged to its namespace', async (t) => {
  const { m, held } = managerFor(t);
  const { port: up } = await bodyCounter(t);
  const big = await upstreamFor(t, (_req, res) => res.end(Buffer.alloc(64 << 10, 'a')));
  const a = await freePort(), b = await freePort();
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', a), up));
  await m.apply('team-b/gw', withService(planOf('team-b', 'gw', b), big));
  const charged = t.mock.method(TurnShare.prototype, 'charge');
  const s = await silent(a, held), s2 = await silent(b, held);
  const upAnswer = exchange([s], () => '', (text) => /\r\n\r\n\d+ (true|false)$/.test(text));
  upload(s, 64 << 10, false);
  assert.match((await upAnswer)[0]!, /\r\n\r\n65536 true$/);
  let got = 0;
  s2.on('data', (c: Buffer) => { got += c.length; });
  s2.write(get(alice));
  for (let i = 0; i < 300 && got < 64 << 10; i++) await pause(10);
  const calls = charged.mock.calls.map((c) => c.arguments);
  assert.ok(calls.some(([ns, bytes]) => ns === 'team-a' && bytes === 64 << 10), `the upload: ${JSON.stringify(calls)}`);
  assert.ok(calls.some(([ns, bytes]) => ns === 'team-b' && (bytes as number) >= 16 << 10), `the answer's first piece: ${JSON.stringify(calls)}`);
});

test('requests per turn: a request body buffered for retries (up to 1 MiB) is read in its namespace\'s turns too', async (t) => {
  const waiting: Array<() => boolean | void> = [];
  const { m, held } = managerFor(t);
  const { port: up, seen } = await bodyCounter(t);
  const a = await freePort();
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', a), up));
  const s = await silent(a, held);
  await exchange([s], () => get(alice), (text) => /\r\n\r\n0 true$/.test(text)); // admitted
  const paced = holdTurns(t, waiting); // every request and piece that asks waits, until its `go` is called
  const size = 1 << 20; // buffered: sent once it is whole
  const answer = exchange([s], () => '', (text) => /\r\n\r\n\d+ (true|false)$/.test(text));
  upload(s, size, false);
  for (let i = 0; i < 300 && !waiting.length; i++) await pause(10);
  waiting.shift()!(); // the request's turn
  for (let i = 0; i < 300 && !waiting.length; i++) await pause(10);
  assert.equal(waiting.length, 1, 'its second piece waits for a turn');
  await pause(300);
  assert.equal(waiting.length, 1, 'and nothing more is read meanwhile');
  assert.equal(seen.bytes, 0, 'nothing sent before it is whole');
  const turns = await runTurns(waiting, () => seen.bytes >= size);
  assert.match((await answer)[0]!, new RegExp(`\\r\\n\\r\\n${size} true$`));
  assert.ok(turns > 4, `read in ${turns} turns`);
  assert.equal(paced.starts(), paced.ran, 'each turn that read a piece counted its start');
});

test('requests per turn: an interactive session\'s pieces take their namespace\'s turns, each way; one that ended takes no place', async (t) => {
  const waiting: Array<() => boolean | void> = [];
  const { m, held } = managerFor(t);
  const big = Buffer.alloc(8 << 20, 'd');
  let fromClient = 0;
  let upstream: Socket | undefined;
  const up = await upstreamFor(t, (_req, res) => res.end('ok'), (sock) => {
    upstream = sock;
    sock.write(switched);
    sock.write(big); // a download through the session
    sock.on('data', (c: Buffer) => { fromClient += c.length; });
    sock.on('error', () => {});
  });
  const a = await freePort();
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', a), up));
  const s = await silent(a, held);
  await exchange([s], () => get(alice), (text) => text.endsWith('ok')); // admitted
  const paced = holdTurns(t, waiting); // every request and piece that asks waits, until its `go` is called
  let got = 0;
  s.on('data', (c: Buffer) => { got += c.length; });
  s.write(`GET /ws HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
  for (let i = 0; i < 300 && !waiting.length; i++) await pause(10);
  waiting.shift()!(); // the upgrade's turn
  for (let i = 0; i < 300 && !waiting.length; i++) await pause(10);
  assert.equal(waiting.length, 1, 'its first piece from the upstream took the turn\'s place, the next waits');
  await pause(300);
  const before = got;
  assert.ok(before > 0 && before < big.length, `part of it came: ${before}`);
  await pause(300);
  assert.equal(got, before, 'no more until its turn');
  // the other way: what the client sends waits for its turns too
  s.write(Buffer.alloc(4 << 20, 'u'));
  // (the client's count holds the 101 head: a last piece of the download under its length may still wait)
  const turns = await runTurns(waiting, () => got >= switched.length + big.length && fromClient >= 4 << 20);
  assert.ok(got === switched.length + big.length && fromClient === 4 << 20, `all of it came, each way (${got}, ${fromClient})`);
  assert.ok(turns > 8, `in turns: ${turns}`);
  assert.equal(paced.starts(), paced.ran, 'each turn that sent a piece counted its start');
  assert.equal(waiting.length, 0, 'nothing left waiting');
  // a piece waiting for its turn when the session ends (its upstream closed) takes no place
  s.write(Buffer.alloc(1 << 20, 'u'));
  for (let i = 0; i < 300 && !waiting.length; i++) await pause(10);
  upstream!.destroy();
  await pause(200);
  assert.deepEqual(waiting.splice(0).map((go) => go()), [false]);
});

test('requests per turn: what a session\'s side sent before it ended its sending or closed reaches the other side, after its turns, and only then the end', async (t) => {
  const waiting: Array<() => boolean | void> = [];
  const { m, held } = managerFor(t);
  const upload = 2 << 20, big = Buffer.alloc(4 << 20, 'd');
  let fromClient = 0, endedAt = -1;
  const up = await upstreamFor(t, (_req, res) => res.end('ok'), (sock) => {
    sock.write(switched);
    sock.on('data', (c: Buffer) => { fromClient += c.length; });
    // the client ended its sending: what it had sent has all come; then a download, and the upstream closes
    sock.on('end', () => {
      endedAt = fromClient;
      sock.end(big);
    });
    sock.on('error', () => {});
  });
  const a = await freePort();
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', a), up));
  const s = await silent(a, held);
  await exchange([s], () => get(alice), (text) => text.endsWith('ok')); // admitted
  holdTurns(t, waiting); // every piece waits until its `go` is called
  let got = 0, clientEnded = false;
  s.on('data', (c: Buffer) => { got += c.length; });
  s.on('end', () => { clientEnded = true; });
  s.write(`GET /ws HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
  for (let i = 0; i < 300 && !waiting.length; i++) await pause(10);
  waiting.shift()!(); // the upgrade's turn
  for (let i = 0; i < 300 && got < switched.length; i++) await pause(10);
  s.end(Buffer.alloc(upload, 'u')); // an upload, then the client's end of sending
  for (let i = 0; i < 5_000 && !clientEnded; i++) {
    const go = waiting.shift();
    if (go) go();
    else await pause(1);
  }
  assert.equal(endedAt, upload, 'the upstream saw the end after all of the upload');
  assert.ok(clientEnded, 'the client saw the end');
  assert.equal(got, switched.length + big.length, 'after all of the download');
});

test('listener TLS: ECDHE suites only and no renegotiation, after a certificate reload too', async (t) => {
  const { m } = managerFor(t);
  const port = await freePort();
  // what a TLS 1.2 client gets: the handshake refused by the server, or done and then its renegotiation
  const handshake = (o: object) => new Promise<string>((resolve) => {
    const c = tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false, maxVersion: 'TLSv1.2', ...o }, () => {
      c.renegotiate({}, (err) => { resolve(`renegotiation: ${(err as NodeJS.ErrnoException | null)?.code ?? 'done'}`); c.destroy(); });
    });
    c.on('error', (err: NodeJS.ErrnoException) => {
      // OpenSSL 3.0 (Node 22) spells the alert SSLV3_ALERT, later ones SSL/TLS_ALERT
      resolve(err.code === 'ERR_SSL_NO_RENEGOTIATION' ? 'renegotiation: refused' : `handshake: ${err.code?.replace('SSLV3_ALERT', 'SSL/TLS_ALERT')}`);
      c.destroy();
    });
    c.on('close', () => resolve('closed without an answer')); // a no-op once resolved
  });
  let listener: Listener | undefined;
  for (const generation of [1, 2]) {
    // generation 2: a new certificate, loaded into the running listener; RSA keys (RSA key exchange needs one)
    await m.apply('team-a/gw', withTLS({ ...planOf('team-a', 'gw', port), generation }, true));
    if (listener) assert.equal(m.get('team-a/gw'), listener, 'the same listener, its certificate reloaded');
    listener = m.get('team-a/gw');
    assert.equal(await handshake({ ciphers: 'AES256-GCM-SHA384' }), 'handshake: ERR_SSL_SSL/TLS_ALERT_HANDSHAKE_FAILURE', 'RSA key exchange');
    assert.equal(await handshake({ ciphers: 'ECDHE-RSA-AES256-GCM-SHA384' }), 'renegotiation: refused');
  }
});

test('certificate expiry: a series per certificate an open listener serves with; an update says what it reloaded; none once closed', async (t) => {
  const { deps, m } = managerFor(t);
  const [p1, p2] = [await freePort(), await freePort()];
  const expiry = async () => [...(await exposed(deps)).matchAll(/^access_gateway_certificate_expiry_timestamp_seconds\{(.*)\} (\S+)$/gm)].map((x) => `${x[1]} ${x[2]}`).sort();
  const seconds = (pem: string) => new X509Certificate(pem).validToDate.getTime() / 1000;
  const dir = mkdtempSync(join(tmpdir(), 'agw-exp-'));
  const clients = makeCA(dir, 'clients');
  const a = withClientCA(planOf('team-a', 'gw', p1), clients);
  assert.equal((await m.apply('team-a/gw', a))?.programmed, true);
  await m.apply('team-b/plain', planOf('team-b', 'plain', p2)); // plain HTTP: no series
  assert.deepEqual(await expiry(), [
    `namespace="team-a",gateway="gw",certificate="client-ca" ${seconds(clients.cert)}`,
    `namespace="team-a",gateway="gw",certificate="serving" ${seconds(a.tls!.cert)}`,
  ]);
  // the same listener, a new certificate: the result says so (for an Event), the series follows
  const b = { ...a, generation: 2, tls: { ...withTLS(a).tls!, clientCA: a.tls!.clientCA } };
  const applied = await m.apply('team-a/gw', b);
  assert.deepEqual(applied, { programmed: true, port: p1, reloaded: 'listener certificate of Secret team-a/s reloaded; used for new connections' });
  assert.ok((await expiry()).includes(`namespace="team-a",gateway="gw",certificate="serving" ${seconds(b.tls!.cert)}`));
  // a new client CA
  const clients2 = makeCA(dir, 'clients2');
  const c = withClientCA({ ...b, generation: 3 }, clients2);
  c.tls = { ...b.tls!, clientCA: c.tls!.clientCA };
  assert.deepEqual(await m.apply('team-a/gw', c), { programmed: true, port: p1, reloaded: 'client CA ConfigMap clients reloaded; used for new connections' });
  assert.ok((await expiry()).includes(`namespace="team-a",gateway="gw",certificate="client-ca" ${seconds(clients2.cert)}`));
  // an unrelated change reloads nothing
  assert.deepEqual(await m.apply('team-a/gw', { ...c, generation: 4 }), { programmed: true, port: p1 });
  await m.apply('team-a/gw', null);
  assert.deepEqual(await expiry(), []);
});

test('TLS handshakes take their share of the event loop, namespaces in turn: one team\'s burst of new connections does not hold back another\'s', { timeout: 30_000 }, async (t) => {
  const { deps, m, held } = managerFor(t, { limits: { tlsHandshakePercent: 2, headersTimeoutMs: 5000 } }); // an RSA-2048 handshake: one every ~60 ms
  const [a, b] = [await freePort(), await freePort()];
  await m.apply('team-a/gw', withTLS(planOf('team-a', 'gw', a), true));
  await m.apply('team-b/gw', withTLS(planOf('team-b', 'gw', b), true));
  const secured: string[] = [];
  const open = (port: number, name: string) => new Promise<void>((resolve, reject) => {
    const c = tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false }, () => {
      secured.push(name);
      resolve();
    });
    held.push(c);
    c.on('error', reject);
  });
  const burst = Array.from({ length: 10 }, (_, i) => open(a, `a${i}`));
  // team-a's burst is in, and waits
  for (let i = 0; i < 300 && (await counted(deps, 'tls_handshakes_deferred', 'team-a')) < 7; i++) await pause(10);
  await Promise.all([...burst, open(b, 'b')]);
  assert.ok(secured.indexOf('b') <= 4, `team-b's handshake took its turn with team-a's waiting ones: ${secured.join(' ')}`);
  const deferred = await counted(deps, 'tls_handshakes_deferred', 'team-a');
  assert.ok(deferred >= 7, `team-a's burst waited past the share: ${deferred}`);
});

test('handshakes with teams\' HTTPS backends wait for and are charged to the listeners\' share of handshakes', (t) => {
  const { deps } = managerFor(t, { limits: { tlsHandshakePercent: 50 } });
  // (unset, a registry's share is unbounded: everything starts at once)
  deps.pools.handshakes.charge('team-a', 'backend 10.0.0.1:443', 100);
  let started = false;
  assert.equal(deps.pools.handshakes.start('team-b', 'x', () => 0, () => (started = true)), false, 'past the share: it waits');
  assert.equal(started, false);
});

test('a listener that closes while TLS handshakes wait their turn closes those connections: they never start', { timeout: 30_000 }, async (t) => {
  const { deps, m, held } = managerFor(t, { limits: { tlsHandshakePercent: 1 } }); // an RSA-2048 handshake: one every ~125 ms
  const port = await freePort();
  await m.apply('team-a/gw', withTLS(planOf('team-a', 'gw', port), true));
  const ends = Array.from({ length: 8 }, () => new Promise<string>((resolve) => {
    const c = tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false }, () => resolve('secure'));
    held.push(c);
    c.on('error', () => resolve('closed'));
    c.on('close', () => resolve('closed'));
  }));
  const waiting = () => counted(deps, 'tls_handshakes_deferred', 'team-a');
  for (let i = 0; i < 100 && (await waiting()) < 6; i++) await pause(10);
  assert.ok((await waiting()) >= 6, 'six or more wait');
  const closing = Date.now();
  await m.closeAll(0);
  const took = Date.now() - closing;
  // else each would start in its turn, and, idle, hold the close for the header timeout (10 s)
  assert.ok(took < 5_000, `closed in ${took} ms`);
  const outcomes = await Promise.all(ends);
  assert.ok(outcomes.filter((o) => o === 'closed').length >= 6, outcomes.join(' '));
});

test('a TLS connection that waited for its handshake\'s turn past the header timeout is closed unstarted', { timeout: 30_000 }, async (t) => {
  const { deps, m, held } = managerFor(t, { limits: { tlsHandshakePercent: 1, headersTimeoutMs: 200 } }); // one every ~125 ms
  const port = await freePort();
  await m.apply('team-a/gw', withTLS(planOf('team-a', 'gw', port), true));
  const ends = await Promise.all(Array.from({ length: 8 }, () => new Promise<string>((resolve) => {
    const c = tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false }, () => resolve('secure'));
    held.push(c);
    c.on('error', () => resolve('closed'));
    c.on('close', () => resolve('closed'));
  })));
  // two at once (one if the key measured slow), one or two more within 200 ms; the others waited past it
  const secure = ends.filter((e) => e === 'secure').length;
  assert.ok(secure >= 1 && secure <= 4, ends.join(' '));
  const deferred = await counted(deps, 'tls_handshakes_deferred', 'team-a');
  assert.ok(deferred >= 6 && deferred <= 8, `waited: ${deferred}`);
});

test('one deadline from accept: a hello sent late and a wait for its turn together past the header timeout close the connection unstarted', { timeout: 30_000 }, async (t) => {
  const { m, held } = managerFor(t, { limits: { tlsHandshakePercent: 1, headersTimeoutMs: 1000 } }); // one every ~125 ms
  const port = await freePort();
  await m.apply('team-a/gw', withTLS(planOf('team-a', 'gw', port), true));
  const hello = await captureHello();
  // six accepted now, their hellos sent 700 ms later: two start at once, the others one a turn,
  // so the sixth's turn comes past 1,000 ms from its accept (but well within 1,000 ms of its hello)
  const sockets = Array.from({ length: 6 }, () => connect(port, '127.0.0.1'));
  const answered = sockets.map((s) => new Promise<boolean>((resolve) => {
    held.push(s);
    s.once('data', () => resolve(true));
    s.on('error', () => resolve(false));
    s.on('close', () => resolve(false));
  }));
  await Promise.all(sockets.map((s) => new Promise((r) => s.once('connect', r))));
  await pause(700);
  for (const s of sockets) s.write(hello);
  const got = await Promise.all(answered);
  assert.deepEqual([got[0], got[1], got[5]], [true, true, false], got.join(' '));
});

test('one deadline from accept: a handshake its client leaves unfinished is closed at the header timeout from accept, not from its start (metered or not)', { timeout: 30_000 }, async (t) => {
  const { m, held } = managerFor(t, { limits: { headersTimeoutMs: 2000 } });
  const [plain, metered] = [await freePort(), await freePort()];
  await m.apply('team-a/gw', withTLS(planOf('team-a', 'gw', plain), true));
  await m.apply('team-a/ca', withClientCA(planOf('team-a', 'ca', metered), makeCA(mkdtempSync(join(tmpdir(), 'agw-lm-')), 'clients')));
  const hello = await captureHello();
  const closedAfter = async (port: number) => {
    const s = connect(port, '127.0.0.1');
    held.push(s);
    await new Promise((r) => s.once('connect', r));
    const accepted = performance.now();
    let answered = false;
    s.on('data', () => { answered = true; });
    s.on('error', () => {});
    const closed = new Promise<number>((r) => s.once('close', () => r(performance.now() - accepted)));
    await pause(1000);
    s.write(hello); // the server answers it; the client sends nothing more
    const after = await closed;
    assert.ok(answered, `its handshake started (port ${port})`);
    return after;
  };
  for (const after of await Promise.all([closedAfter(plain), closedAfter(metered)])) {
    assert.ok(after > 1500 && after < 2600, `closed ${Math.round(after)} ms after accept (the deadline: 2,000; TLS's own timer, from the handshake's start: ~3,000)`);
  }
});

test('one deadline from accept: a connection whose handshake is done is the HTTP server\'s, past it too (metered or not)', { timeout: 30_000 }, async (t) => {
  const { m, held } = managerFor(t, { limits: { headersTimeoutMs: 1000 } });
  const [plain, metered] = [await freePort(), await freePort()];
  await m.apply('team-a/gw', withTLS(planOf('team-a', 'gw', plain), true));
  await m.apply('team-a/ca', withClientCA(planOf('team-a', 'ca', metered), makeCA(mkdtempSync(join(tmpdir(), 'agw-lm-')), 'clients')));
  const askTwice = async (port: number) => {
    const s = tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false });
    held.push(s);
    s.on('error', () => {});
    await new Promise((r) => s.once('secureConnect', r));
    const ask = () => new Promise<string>((resolve) => {
      s.once('data', (d: Buffer) => resolve(d.toString('latin1').split('\r\n')[0]!));
      s.once('close', () => resolve('closed'));
      setTimeout(() => resolve('no answer in 2 s'), 2000).unref();
      s.write(`GET /.well-known/access-gateway HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`);
    });
    const first = await ask();
    await pause(1500); // kept alive past the deadline from accept
    return [first, await ask()];
  };
  for (const answers of await Promise.all([askTwice(plain), askTwice(metered)])) {
    assert.deepEqual(answers, ['HTTP/1.1 200 OK', 'HTTP/1.1 200 OK']);
  }
});

test('a resumed TLS session is charged the key exchange only: its signature\'s share is given back', { timeout: 30_000 }, async (t) => {
  const refunds = t.mock.method(HandshakeShare.prototype, 'refund');
  const starts = t.mock.method(HandshakeShare.prototype, 'start'); // a spy: the share still decides
  const { m, held } = managerFor(t, { limits: { headersTimeoutMs: 1000 } });
  const port = await freePort();
  await m.apply('team-a/gw', withTLS(planOf('team-a', 'gw', port), true));
  // a ticket: sent by the server once its side of the handshake is done
  const first = await new Promise<Buffer>((resolve, reject) => {
    const c = tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false });
    held.push(c);
    c.once('session', resolve);
    c.on('error', reject);
  });
  assert.equal(refunds.mock.callCount(), 0, 'a full handshake keeps its charge');
  const reused = await new Promise<boolean>((resolve, reject) => {
    const c = tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false, session: first }, () => resolve(c.isSessionReused()));
    held.push(c);
    c.on('error', reject);
  });
  assert.equal(reused, true);
  for (let i = 0; i < 100 && refunds.mock.callCount() === 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(refunds.mock.callCount(), 1, 'the resumed one gets its signature back');
  const [ms] = refunds.mock.calls[0]!.arguments as [number];
  assert.ok(ms > 0.05 && ms < 50, `an RSA-2048 signature: ${ms} ms`);
  const charged = (starts.mock.calls[1]!.arguments[2] as () => number)();
  assert.ok(Math.abs(ms - (charged - connectionMs)) < 1e-9, `the signature of the ${charged} ms charged, not all of it: ${ms} ms`);
});

test('tenancy: one team\'s costly client chains, sent at once, do not hold back another team\'s new TLS connections', { timeout: 60_000 }, async (t) => {
  const charges = t.mock.method(HandshakeShare.prototype, 'charge'); // a spy: the share still counts
  const dir = mkdtempSync(join(tmpdir(), 'agw-lm-'));
  const { m, held } = managerFor(t);
  const [a, b] = [await freePort(), await freePort()];
  await m.apply('team-a/gw', withClientCA(planOf('team-a', 'gw', a), makeCA(dir, 'clients')));
  await m.apply('team-b/gw', withTLS(planOf('team-b', 'gw', b), true));
  const chain = makeCostlyChain(dir, 6); // ~8.3 KiB (within the 10 KiB bound): ~36 ms to check
  const answered: string[] = [];
  const call = (port: number, name: string, c?: { key: string; chain: string }) => new Promise<void>((resolve) => {
    const s = tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false, ...(c ? { key: c.key, cert: c.chain } : {}) }, () => {
      s.write(`GET /.well-known/access-gateway HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`);
    });
    held.push(s);
    s.once('data', () => { answered.push(name); resolve(); });
    s.on('error', () => resolve());
    s.on('close', () => resolve()); // (closed unanswered: the assertion below says so)
  });
  const flood = Array.from({ length: 6 }, (_, i) => call(a, `a${i}`, chain));
  // team-a's first chain is checked and charged; team-b's callers come then
  for (let i = 0; i < 500 && !charges.mock.calls.some((c) => c.arguments[0] === 'team-a' && (c.arguments[2] as number) > 5); i++) await pause(5);
  await Promise.all([...flood, ...Array.from({ length: 3 }, (_, i) => call(b, `b${i}`))]);
  const lastB = Math.max(...['b0', 'b1', 'b2'].map((n) => answered.indexOf(n)));
  assert.ok(answered.length === 9 && lastB <= 4, `team-b's three answered before most of team-a's chains were checked: ${answered.join(' ')}`);
});

test('a TLS handshake takes its turn once its client\'s hello is whole: connections holding back its last byte start nothing', { timeout: 30_000 }, async (t) => {
  const starts = t.mock.method(HandshakeShare.prototype, 'start'); // a spy: the share still decides
  const { m, held } = managerFor(t);
  const port = await freePort();
  await m.apply('team-a/gw', withTLS(planOf('team-a', 'gw', port), true));
  const hello = await captureHello();
  const socks = await Promise.all(Array.from({ length: 5 }, () => new Promise<Socket>((resolve) => {
    const s = connect(port, '127.0.0.1', () => resolve(s));
    held.push(s);
    s.on('error', () => {});
  })));
  const answered = socks.map((s) => new Promise<number>((resolve) => s.once('data', (d: Buffer) => resolve(d[0]!))));
  for (const s of socks) s.write(hello.subarray(0, hello.length - 1));
  await pause(300);
  assert.equal(starts.mock.callCount(), 0, 'no handshake started on a partial hello');
  for (const s of socks) s.write(hello.subarray(hello.length - 1));
  assert.deepEqual(await Promise.all(answered), [22, 22, 22, 22, 22], 'each is answered with its server hello once whole');
  assert.equal(starts.mock.callCount(), 5);
  for (const s of socks) s.resetAndDestroy(); // (a half-open handshake would hold the close for its timeout)
});

test('a client hello read before TLS: a reset does not crash the process; a dripped or late one is closed; a closing listener closes those it reads', { timeout: 30_000 }, async (t) => {
  const starts = t.mock.method(HandshakeShare.prototype, 'start'); // a spy: the share still decides
  const { m, held } = managerFor(t, { limits: { headersTimeoutMs: 600 } });
  const port = await freePort();
  await m.apply('team-a/gw', withTLS(planOf('team-a', 'gw', port)));
  const hello = await captureHello();
  const opened = () => new Promise<Socket>((resolve) => {
    const s = connect(port, '127.0.0.1', () => resolve(s));
    s.setNoDelay(true);
    held.push(s);
    s.on('error', () => {});
  });
  const closed = (s: Socket) => new Promise<void>((resolve) => s.once('close', () => resolve()));
  // a reset in the middle of a hello
  const r = await opened();
  r.write(hello.subarray(0, 10));
  await pause(50);
  r.resetAndDestroy();
  await pause(50);
  assert.equal((await ask(port, held, alice, true)).status, 200, 'the process goes on, and serves');
  // a hello dripped a byte at a time: closed after 32 reads, or 600 ms after it was accepted
  const d = await opened();
  const dClosed = closed(d);
  let sent = 0;
  for (; sent < hello.length - 1 && !d.destroyed && d.readyState === 'open'; sent++) {
    d.write(hello.subarray(sent, sent + 1));
    await pause(5);
  }
  await dClosed;
  assert.ok(sent < 40, `closed after ${sent} bytes`);
  const slow = await opened();
  const slowClosed = closed(slow);
  let slowSent = 0;
  const drip = setInterval(() => { if (!slow.destroyed) slow.write(hello.subarray(slowSent, ++slowSent)); }, 150);
  await slowClosed;
  clearInterval(drip);
  assert.ok(slowSent <= 8, `600 ms from its accept, whatever it sends meanwhile: ${slowSent} bytes`);
  assert.equal(starts.mock.calls.filter((c) => (c.arguments[2] as () => number)() !== 0).length, 1, 'only the served one started');
  // a listener that closes closes the connections whose hello it reads
  const w = await opened();
  w.write(hello.subarray(0, 10));
  await pause(50);
  const wClosed = closed(w);
  const closing = m.closeAll(0);
  await Promise.race([wClosed, pause(400).then(() => assert.fail('not closed with its listener'))]);
  await closing;
});

test('what a client sends while its whole hello waits for a turn is kept, and waits for a turn of its own after it', { timeout: 30_000 }, async (t) => {
  const starts = t.mock.method(HandshakeShare.prototype, 'start'); // a spy: the share still decides
  const dir = mkdtempSync(join(tmpdir(), 'agw-lm-'));
  const { m, held } = managerFor(t, { limits: { tlsHandshakePercent: 1 } }); // one handshake every ~125 ms
  const port = await freePort();
  await m.apply('team-a/gw', withClientCA(withTLS(planOf('team-a', 'gw', port), true), makeCA(dir, 'clients')));
  const hello = await captureHello();
  for (let i = 0; i < 3; i++) {
    const s = connect(port, '127.0.0.1', () => {
      s.write(hello);
      setTimeout(() => s.write(Buffer.from([22, 3, 3, 0, 1, 0])), 30); // a record after it, while it waits
    });
    held.push(s);
    s.on('error', () => {});
  }
  const rest = () => starts.mock.calls.filter((c) => (c.arguments[2] as () => number)() === 0).length;
  for (let i = 0; i < 300 && rest() < 3; i++) await pause(10);
  assert.equal(rest(), 3, 'each one\'s later record reached its meter');
});

test('TLS 1.2 clients, and TLS 1.3 hellos without a share the listener takes, are metered: their later bytes wait for a turn', { timeout: 30_000 }, async (t) => {
  const starts = t.mock.method(HandshakeShare.prototype, 'start'); // a spy: the share still decides
  const { m, held } = managerFor(t);
  const port = await freePort();
  await m.apply('team-a/gw', withTLS(planOf('team-a', 'gw', port), true));
  const gated = () => starts.mock.calls.filter((c) => (c.arguments[2] as () => number)() === 0).length;
  const served = (o: { maxVersion?: 'TLSv1.2'; ecdhCurve?: string }) => new Promise<number>((resolve) => {
    const s = tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false, ...o }, () => {
      s.write(`GET /.well-known/access-gateway HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`);
    });
    held.push(s);
    s.on('data', (b: Buffer) => resolve(Number(/^HTTP\/1\.1 (\d+)/.exec(b.toString('latin1'))?.[1] ?? 0)));
    s.on('error', () => resolve(-1));
  });
  assert.equal(await served({}), 200);
  assert.equal(gated(), 0, 'a TLS 1.3 hello with an X25519 share: native, nothing waits again');
  assert.equal(await served({ maxVersion: 'TLSv1.2' }), 200);
  assert.ok(gated() >= 1, 'TLS 1.2: its key exchange came in a later read, through the share');
  const before = gated();
  assert.equal(await served({ ecdhCurve: 'P-384:P-256' }), 200, 'a P-384 share: the listener asks again, for P-256');
  assert.ok(gated() > before, 'its second hello came in a later read, through the share');
});

test('on a listener with clientCA, what a client sends with its hello waits for a turn of the share', { timeout: 30_000 }, async (t) => {
  const starts = t.mock.method(HandshakeShare.prototype, 'start'); // a spy: the share still decides
  const dir = mkdtempSync(join(tmpdir(), 'agw-lm-'));
  const { m, held } = managerFor(t);
  const port = await freePort();
  await m.apply('team-a/gw', withClientCA(planOf('team-a', 'gw', port), makeCA(dir, 'clients')));
  const hello = await captureHello();
  const s = connect(port, '127.0.0.1', () => s.write(Buffer.concat([hello, Buffer.from([22, 3, 3, 0, 1, 0])]))); // a hello, and a record after it
  held.push(s);
  s.on('error', () => {});
  await new Promise((resolve) => s.once('data', resolve));
  const costs = () => starts.mock.calls.map((c) => (c.arguments[2] as () => number)() === 0 ? 'rest' : 'handshake');
  for (let i = 0; i < 100 && costs().length < 2; i++) await pause(10);
  assert.deepEqual(costs(), ['handshake', 'rest']);
});

test('a client certificate chain is checked on the event loop: one over 10 KiB is closed before TLS reads it (costly RSA links, binary-curve ones); an enterprise chain (RSA-4096, root included) is served, after a HelloRetryRequest too; one under the bound waits for its namespace\'s turn, and what it costs is charged there', { timeout: 90_000 }, async (t) => {
  const charges = t.mock.method(HandshakeShare.prototype, 'charge');
  const starts = t.mock.method(HandshakeShare.prototype, 'start'); // a spy: the share still decides
  const dir = mkdtempSync(join(tmpdir(), 'agw-lm-'));
  const { deps, m, held } = managerFor(t, { limits: { maxConnectionsPerNamespace: 6 } });
  const port = await freePort();
  await m.apply('team-a/gw', withClientCA(planOf('team-a', 'gw', port), makeCA(dir, 'clients')));
  /** A TLS connection that sends `chain`, and the status line of the answer to a request over it, or 'closed'. */
  const send = (c: { key: string; chain: string }, o: { maxVersion?: 'TLSv1.2'; ecdhCurve?: string } = {}) => {
    const s = tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false, key: c.key, cert: c.chain, ...o }, () => {
      s.write(`GET /.well-known/access-gateway HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`);
    });
    held.push(s);
    return { s, answer: new Promise<string>((resolve) => {
      let head = '';
      s.on('data', (b: Buffer) => { head += b.toString('latin1'); if (head.includes('\r\n\r\n')) resolve(head.split('\r\n')[0]!); });
      s.on('error', () => {});
      s.on('close', () => resolve('closed'));
    }) };
  };
  const chargedTo = (ns: string) => charges.mock.calls.filter((c) => c.arguments[0] === ns).reduce((sum, c) => sum + Math.max(0, c.arguments[2] as number), 0);
  /** Bytes of DER in a PEM chain. */
  const der = (pem: string) => [...pem.matchAll(/-----BEGIN CERTIFICATE-----([^-]+)-----END/g)].reduce((n, m) => n + Buffer.from(m[1]!, 'base64').length, 0);
  const over = makeCostlyChain(dir, 8); // ~11 KiB: ~50 ms to check (served when the bound was 16 KiB)
  assert.ok(der(over.chain) > 10_240 && der(over.chain) < 16_384, `${der(over.chain)} bytes of DER`);
  assert.equal(await send(over).answer, 'closed');
  assert.match(await exposed(deps), /access_gateway_connections_refused_total\{namespace="team-a",gateway="gw",limit="handshake"\} 1\n/);
  // binary-curve links: ~4 ms to check in ~370 bytes each (32 links: ~13 KiB, ~130 ms)
  const curve = makeCostlyChain(mkdtempSync(join(tmpdir(), 'agw-lm-')), 32, 'sect571r1');
  assert.ok(der(curve.chain) > 10_240 + 1_024 && der(curve.chain) < 16_384, `${der(curve.chain)} bytes of DER`);
  assert.equal(await send(curve).answer, 'closed');
  assert.match(await exposed(deps), /access_gateway_connections_refused_total\{namespace="team-a",gateway="gw",limit="handshake"\} 2\n/);
  // what an enterprise PKI issues: served, over TLS 1.2, and with a second hello (a P-384 share
  // first: the listener asks again, for X25519 or P-256)
  const corp = makeEnterpriseChain(mkdtempSync(join(tmpdir(), 'agw-lm-')));
  assert.ok(der(corp.chain) > 6_500, `${der(corp.chain)} bytes of DER`);
  for (const o of [{}, { maxVersion: 'TLSv1.2' as const }, { ecdhCurve: 'P-384:P-256' }]) {
    const c = send(corp, o);
    assert.equal(await c.answer, 'HTTP/1.1 200 OK', JSON.stringify(o));
    c.s.destroy(); // (its admitted connection would count against the namespace's 6 below)
  }

  const under = makeCostlyChain(mkdtempSync(join(tmpdir(), 'agw-lm-')), 3); // ~4.5 KiB: ~18 ms to check
  const before = chargedTo('team-a');
  const one = send(under);
  assert.equal(await one.answer, 'HTTP/1.1 200 OK', 'served (with the token: the chain is not signed by the CA)');
  const ms = chargedTo('team-a') - before;
  assert.ok(ms > 5, `3 links of ~6 ms each, past the ~2 ms charged at start: ${ms} ms`);
  // charged to the client's address too (its namespace's other addresses go first while it pays)
  assert.deepEqual([...new Set(charges.mock.calls.filter((c) => c.arguments[0] === 'team-a').map((c) => c.arguments[1]))], [addressGroup('127.0.0.1')]);

  // four at once: each chain waits for a turn of the share (a client holding back many chains
  // cannot have them all checked in one go), and the first one's cost makes the others wait
  const gated = () => starts.mock.calls.filter((c) => (c.arguments[2] as () => number)() === 0);
  const gatedBefore = gated().length;
  const four = Array.from({ length: 4 }, () => send(under));
  assert.deepEqual(await Promise.all(four.map((x) => x.answer)), Array(4).fill('HTTP/1.1 200 OK'));
  const calls = gated().slice(gatedBefore);
  const waited = calls.filter((c) => c.result === false).length;
  assert.ok(calls.length >= 4 && waited >= 2, `chains through the share: ${calls.length}, of which waited: ${waited}`);

  // once the handshake is done, what follows is not bounded: the client's last handshake bytes
  // and a request whose headers end past 16 KiB, sent in one write (held back by the client
  // until both are there), then a 64 KiB body
  const tcp = connect(port, '127.0.0.1');
  held.push(tcp);
  const later: Buffer[] = [];
  let hold = false;
  const pipe = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      if (hold) later.push(chunk);
      else tcp.write(chunk);
      cb();
    },
  });
  tcp.on('data', (d: Buffer) => { hold = true; pipe.push(d); }); // after the hello: held
  tcp.on('error', () => {});
  const big = tlsConnect({ socket: pipe, rejectUnauthorized: false }, () => {
    big.write(`POST /.well-known/access-gateway HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\nx-pad: ${'x'.repeat(15_900)}\r\ncontent-length: 65536\r\n\r\n`);
    setImmediate(() => {
      hold = false;
      tcp.write(Buffer.concat(later));
      big.write('x'.repeat(65536));
    });
  });
  held.push(big);
  const bigAnswer = await new Promise<string>((resolve) => {
    let head = '';
    big.on('data', (b: Buffer) => { head += b.toString('latin1'); if (head.includes('\r\n')) resolve(head.split('\r\n')[0]!); });
    big.on('error', () => {});
    tcp.on('close', () => resolve('closed'));
  });
  assert.match(bigAnswer, /^HTTP\/1\.1 \d+/);

  // its TLS socket has the connection's addresses, so it is told admitted: new connections do
  // not close it as the namespace's oldest one not admitted yet
  for (let i = 0; i < 4; i++) await silent(port, held, true);
  await pause(200);
  assert.ok(isOpen(one.s), 'the admitted connection stays open');
});

test('a backend\'s answer refused for its form is not tried on another endpoint (502 AGW_ERR_UPSTREAM_PROTOCOL); nor an upgrade answered with too many informational answers or header fields', async (t) => {
  const { m, held } = managerFor(t);
  let asked = 0;
  const fields = Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`x-h${i}`, 'v']));
  const many = (_req: IncomingMessage, res: ServerResponse) => { asked++; res.writeHead(200, fields).end('ok'); };
  const hints = await upstreamFor(t, many, (sock) => {
    sock.on('data', () => {});
    sock.write('HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n'.repeat(20));
  });
  const wide = await upstreamFor(t, many, (sock) => {
    sock.on('data', () => {});
    sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n${'x: y\r\n'.repeat(300)}\r\n`);
  });
  const [p1, p2, p3] = [await freePort(), await freePort(), await freePort()];
  const plan = withService(planOf('team-a', 'gw', p1), hints);
  const route = plan.routes[0]!;
  const target = { ...(route.target as ServiceTarget), endpoints: [{ ip: '127.0.0.1', port: hints }, { ip: '127.0.0.1', port: wide }] };
  await m.apply('team-a/gw', { ...plan, routes: [{ ...route, retries: 2, target }], sessions: { maxConcurrent: 4, idleTimeoutSeconds: 5 } });
  await m.apply('team-a/gw2', { ...withService(planOf('team-a', 'gw2', p2), wide), sessions: { maxConcurrent: 4, idleTimeoutSeconds: 5 } });
  await m.apply('team-a/gw3', { ...withService(planOf('team-a', 'gw3', p3), hints), sessions: { maxConcurrent: 4, idleTimeoutSeconds: 5 } });
  const [answer] = await exchange([await silent(p1, held)], () => `GET /x HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`, (text) => /\r\n\r\n[^]*\}/.test(text));
  assert.match(answer!, /^HTTP\/1\.1 502[^]*answered with 30\d header fields[^]*AGW_ERR_UPSTREAM_PROTOCOL/);
  assert.equal(asked, 1, 'asked once: not again on the other endpoint');
  const upgrade = 'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';
  for (const [port, why] of [[p3, /more than 8 informational answers/], [p2, /answered with 30\d header fields/]] as const) {
    const { text } = stream(port, held, upgrade);
    assert.equal(await waitUntil(async () => { await pause(20); return /\r\n\r\n[^]*\}/.test(text()); }), true, text());
    assert.match(text(), /^HTTP\/1\.1 502/);
    assert.match(text(), why);
  }
});

test('a Service backend that picks a SPDY subprotocol gets a plain WebSocket relay: its messages are not unmasked and parsed as SPDY', async (t) => {
  // the inner SPDY reading unmasks every byte in JavaScript: for kubectl port-forward through the
  // apiserver only, not at the choice of a team's own backend (SPDY pings inside are activity here)
  const { m, held } = managerFor(t);
  const up = await upstreamFor(t, undefined, (sock) => {
    sock.on('data', () => {});
    sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io\r\n\r\n');
  });
  const port = await freePort();
  await m.apply('team-a/gw', { ...withService(planOf('team-a', 'gw', port), up), sessions: { maxConcurrent: 4, idleTimeoutSeconds: 1 } });
  const { text, ended, socket: s } = stream(port, held, 'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io\r\n');
  assert.equal(await waitUntil(async () => { await pause(20); return text().includes('\r\n\r\n'); }), true, text());
  assert.match(text(), /^HTTP\/1\.1 101 /);
  // a SPDY PING in a masked binary message, every 200 ms for 2.5 s (the idle timeout is 1 s)
  const ping = Buffer.from([0x80, 0x03, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1]);
  const mask = Buffer.from([1, 2, 3, 4]);
  const frame = Buffer.concat([Buffer.from([0x82, 0x80 | ping.length]), mask, Buffer.from(ping.map((b, i) => b ^ mask[i & 3]!))]);
  for (let i = 0; i < 12 && !ended(); i++) {
    s.write(frame);
    await pause(200);
  }
  assert.equal(ended(), false, 'the messages kept the session open');
});

test('a request admitted while its table is swapped is admitted again by the current table (the old one\'s pools are closed, its rules old)', async (t) => {
  const { deps, held: review } = heldDeps();
  const { m, held } = managerFor(t, { deps });
  const [one, two] = [await upstreamFor(t, (_req, res) => res.end('one')), await upstreamFor(t, (_req, res) => res.end('two'))];
  const port = await freePort();
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', port), one));
  const s = await silent(port, held);
  let text = '';
  s.on('data', (c: Buffer) => { text += c.toString('latin1'); });
  s.write(`GET /x HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`);
  await pause(100); // its token is being checked
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', port), two)); // the Service's endpoint changed
  review.answer();
  assert.equal(await waitUntil(async () => { await pause(50); return /\r\n\r\n(one|two)$/.test(text); }), true, text);
  assert.match(text, /^HTTP\/1\.1 200[^]*\r\n\r\ntwo$/);
  // spec.access changed meanwhile: the caller is no longer let in
  const s2 = await silent(port, held);
  let text2 = '';
  s2.on('data', (c: Buffer) => { text2 += c.toString('latin1'); });
  const other = `${alice.split('.')[0]}.${b64({ aud: ['gw'], exp: Math.floor(Date.now() / 1000) + 3600, sub: 'alice', n: 2 })}.sig`; // not cached
  const review2 = deps.reviewer.review;
  deps.reviewer.review = (token: string, ...rest) => review2(token === other ? alice : token, ...rest);
  s2.write(`GET /x HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${other}\r\n\r\n`);
  await pause(100);
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', port, ['bob']), two));
  review.answer();
  assert.equal(await waitUntil(async () => { await pause(50); return /^HTTP\/1\.1 \d+/.test(text2); }), true, text2);
  assert.match(text2, /^HTTP\/1\.1 403 /);
  assert.match(text2, /no rule of spec\.access names it/, 'refused by the access step, not only by the route grant');
});

test('a connection with more than 16 requests open at once (pipelined) is closed', async (t) => {
  const { deps, m, held } = managerFor(t);
  let arrived = 0;
  const up = await upstreamFor(t, (req, res) => { // answers only /prime
    if (req.url === '/prime') res.end('ok');
    else arrived++;
  });
  const p = planOf('team-a', 'gw', await freePort());
  await m.apply('team-a/gw', withService(p, up));
  const s = await silent(p.port, held);
  let text = '';
  s.on('data', (c: Buffer) => { text += c.toString('latin1'); });
  // 20 one after the other (the token is cached after the first): each gives its place back
  for (let i = 1; i <= 20; i++) {
    s.write(`GET /prime HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`);
    assert.equal(await waitUntil(async () => { await pause(5); return text.split('ok').length - 1 === i; }), true);
  }
  assert.equal(isOpen(s), true);
  s.write(`GET /x HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`.repeat(40));
  await pause(300);
  assert.ok(arrived <= 16, `${arrived} reached the upstream`);
  assert.equal(isOpen(s), false, 'closed');
  assert.match(await exposed(deps), /access_gateway_connections_refused_total\{namespace="team-a",gateway="gw",limit="pipelined"\} 1\n/);
});

test('a gateway moved and then deleted while its old listener drains leaves no metric series behind', async (t) => {
  const { deps, held: review } = heldDeps();
  const { m, held } = managerFor(t, { deps, graceMs: 2_000 });
  const [p1, p2] = [await freePort(), await freePort()];
  await m.apply('team-a/gw', planOf('team-a', 'gw', p1));
  const s = await silent(p1, held);
  s.write(discoveryRequest);
  await pause(100);
  await m.apply('team-a/gw', planOf('team-a', 'gw', p2));
  await m.apply('team-a/gw', null);
  review.answer(); // the old listener serves it now, making its series again
  await m.closeAll(0); // waits for the old listener
  const all = await exposed(deps);
  assert.doesNotMatch(all, /namespace="team-a",gateway="gw"/);
});

test('a route table that cannot be compiled gives back the endpoint pools and the metric series its earlier routes took', async (t) => {
  const { deps, m } = managerFor(t);
  const p = planOf('team-a', 'gw', await freePort());
  // a pattern RE2 refuses (translate would have: this stands for any compile failure after route 0)
  const bad = { ...p.routes[0]!, name: 'bad', target: { ...(p.routes[0]!.target as ApiserverTarget), acceptPaths: ['^/(?=api)'] } };
  await assert.rejects(m.apply('team-a/gw', { ...p, routes: [withService(p).routes[0]!, bad] }));
  assert.equal(deps.pools.size, 0);
  const series = () => exposed(deps);
  assert.doesNotMatch(await series(), /gateway="gw"/, 'the series its routes made');
  // served, then a change that cannot be compiled: the served route's series stay, the new ones go
  await m.apply('team-a/gw', p);
  const extra = { ...p.routes[0]!, name: 'extra', pathPrefix: '/extra' };
  await assert.rejects(m.apply('team-a/gw', { ...p, routes: [p.routes[0]!, extra, { ...bad, pathPrefix: '/bad' }] }));
  assert.match(await series(), new RegExp(`route="${p.routes[0]!.name}"`));
  assert.doesNotMatch(await series(), /route="extra"/);
});

test('a listener that cannot listen gives back what its route table took (endpoint pools, metric series)', async (t) => {
  const { deps, m } = managerFor(t);
  const taken = createServer();
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()));
  t.after(() => taken.close());
  const port = (taken.address() as { port: number }).port;
  const p = planOf('team-a', 'gw', port);
  // a gateway kept on a taken port while its routes are renamed, again and again: no series pile up
  for (let i = 0; i < 3; i++) {
    const r = await m.apply('team-a/gw', withService({ ...p, routes: p.routes.map((x) => ({ ...x, name: `${x.name}-${i}` })) }));
    assert.equal(r?.programmed, false);
  }
  assert.equal(deps.pools.size, 0);
  assert.doesNotMatch(await exposed(deps), /gateway="gw"/);
});

test('a listener switched to TLS on the same port that then cannot listen releases its pools once (a shared pool stays)', async (t) => {
  const { deps, m } = managerFor(t);
  const port = await freePort();
  // another gateway uses the same endpoint: one pool, two references
  await m.apply('team-a/other', withService(planOf('team-a', 'other', await freePort())));
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', port)));
  assert.equal(deps.pools.size, 1);
  // the same port, now with TLS: the old listener lets go of it first; then the port is taken by someone else
  const listen = Listener.prototype.listen;
  t.mock.method(Listener.prototype, 'listen', function (this: Listener, ...args: [number, string]) {
    return (this as unknown as { plan: GatewayPlan }).plan.tls ? Promise.reject(Object.assign(new Error('taken'), { code: 'EADDRINUSE' })) : listen.apply(this, args);
  });
  const r = await m.apply('team-a/gw', withTLS(withService(planOf('team-a', 'gw', port))));
  assert.equal(r?.programmed, false);
  assert.equal(deps.pools.size, 1, 'the pool the other gateway uses is still there');
  assert.match(await exposed(deps), /^access_gateway_listeners\{state="open"\} 1$/m, 'only the other gateway\'s listener is open');
});

test('a client that leaves while its first request is being authenticated spends none of the budget', async (t) => {
  // the token check is held until the client has gone
  const { deps, held: review } = heldDeps();
  const { m, held } = managerFor(t, { deps, limits: { maxConnectionsPerNamespace: 1 } });
  const port = await freePort();
  await m.apply('team-a/gw', planOf('team-a', 'gw', port));
  const s = await silent(port, held);
  s.write(`GET /.well-known/access-gateway HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`);
  await pause(100);
  s.resetAndDestroy();
  await pause(100);
  review.answer();
  await pause(100);
  // the budget of 1 is still there
  assert.deepEqual(await ask(port, held), { status: 200, open: true });
});

test('a connection counts once, however many requests it carries', async (t) => {
  const { m, held } = managerFor(t, { limits: { maxConnectionsPerNamespace: 1 } });
  const port = await freePort();
  await m.apply('team-a/gw', planOf('team-a', 'gw', port));
  // three requests on one connection, one after the other
  const s = connect(port, '127.0.0.1');
  held.push(s);
  let text = '';
  s.on('data', (c: Buffer) => { text += c.toString('latin1'); });
  await new Promise((r) => s.once('connect', r));
  for (let i = 0; i < 3; i++) {
    s.write(`GET /.well-known/access-gateway HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`);
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.deepEqual([...text.matchAll(/HTTP\/1\.1 (\d+)/g)].map((x) => x[1]), ['200', '200', '200']);
  // the budget of 1 is this connection: another is refused
  assert.deepEqual(await ask(port, held), { status: 503, open: false });
});

/** The plan with these access rules (users, and a window's end in ms). */
const withAccess = (p: GatewayPlan, rules: { users: string[]; notAfter?: number }[]): GatewayPlan =>
  ({ ...p, access: rules.map((r) => ({ serviceAccounts: [], groups: [], users: r.users, routes: null, notBefore: null, notAfter: r.notAfter ?? null })) });

/** A response that streams for ever (a watch): its text so far, and whether it ended. */
function stream(port: number, held: Socket[], headers = ''): { text: () => string; ended: () => boolean; socket: Socket } {
  const s = connect(port, '127.0.0.1');
  held.push(s);
  let text = '';
  let closed = false;
  s.on('error', () => {});
  s.on('data', (c: Buffer) => { text += c.toString('latin1'); });
  s.on('end', () => { closed = true; });
  s.write(`GET /watch HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n${headers}\r\n`);
  // chunked: its last chunk; an upgrade answered without 101: the connection's end
  return { text: () => text, ended: () => text.endsWith('\r\n0\r\n\r\n') || closed, socket: s };
}

/** A WebSocket upstream's 101 to the requests below (their Sec-WebSocket-Key, RFC 6455's example). */
const switched = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n';

/** An upstream whose every answer streams for ever (a watch), a tick every 50 ms. */
const ticking = (t: TestContext) => upstreamFor(t, (_req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain' }); // no length: it streams
  const timer = setInterval(() => res.write('tick\n'), 50);
  res.on('close', () => clearInterval(timer));
});
const streaming = async (x: { text: () => string }) => waitUntil(async () => { await pause(50); return x.text().includes('tick'); });

test('a stream ends when its grant does: at the rule\'s notAfter, and when spec.access drops the caller; another change keeps it', async (t) => {
  const { m, held } = managerFor(t);
  const up = await ticking(t);
  const port = await freePort();
  const edge = Date.now() + 2000;
  await m.apply('team-a/gw', withAccess(withService(planOf('team-a', 'gw', port), up), [{ users: ['alice'], notAfter: edge }]));
  const boxed = stream(port, held);
  assert.equal(await streaming(boxed), true, boxed.text());
  assert.equal(boxed.ended(), false);
  assert.equal(await waitUntil(async () => { await pause(50); return boxed.ended(); }, 5_000), true, 'ended at notAfter');
  assert.ok(Date.now() >= edge, 'not before the edge');
  // a grant without a window: a change that still admits the caller keeps the stream; one that drops it ends it
  await m.apply('team-a/gw', withAccess(withService(planOf('team-a', 'gw', port), up), [{ users: ['alice'] }]));
  const open = stream(port, held);
  assert.equal(await streaming(open), true, open.text());
  await m.apply('team-a/gw', withAccess(withService(planOf('team-a', 'gw', port), up), [{ users: ['alice'] }, { users: ['bob'] }]));
  const before = open.text().length;
  await pause(300);
  assert.ok(open.text().length > before && !open.ended(), 'still streaming after a change that admits the caller');
  await m.apply('team-a/gw', withAccess(withService(planOf('team-a', 'gw', port), up), [{ users: ['bob'] }]));
  assert.equal(await waitUntil(async () => { await pause(50); return open.ended(); }), true, 'ended when spec.access dropped the caller');
});

test('a session ends when its grant does, with a close frame that says why', async (t) => {
  const { m, held } = managerFor(t);
  const up = await upstreamFor(t, undefined, (sock) => {
    sock.write(switched);
    sock.on('data', (d) => sock.write(d)); // an echo
  });
  const port = await freePort();
  const edge = Date.now() + 2000;
  await m.apply('team-a/gw', withAccess(withService(planOf('team-a', 'gw', port), up), [{ users: ['alice'], notAfter: edge }]));
  const s = connect(port, '127.0.0.1');
  held.push(s);
  let bytes = Buffer.alloc(0);
  s.on('error', () => {});
  s.on('data', (c: Buffer) => { bytes = Buffer.concat([bytes, c]); });
  s.write(`GET /ws HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
  assert.equal(await waitUntil(async () => { await pause(50); return bytes.includes('\r\n\r\n'); }), true, bytes.toString('latin1'));
  assert.match(bytes.toString('latin1'), /^HTTP\/1\.1 101 /);
  let closed = false;
  s.once('close', () => { closed = true; });
  assert.equal(await waitUntil(async () => { await pause(50); return closed; }, 5_000), true, 'closed at notAfter');
  assert.ok(Date.now() >= edge, 'not before the edge');
  const frame = bytes.subarray(bytes.indexOf('\r\n\r\n') + 4);
  assert.equal(frame[0], 0x88, 'a close frame');
  assert.equal(frame.readUInt16BE(2), 1008);
  assert.equal(frame.subarray(4).toString(), `access ended: spec.access[0]'s notAfter ${new Date(edge).toISOString()} has passed`);
});

test('a request admitted again after its table is swapped takes one rate-limit token and counts one authentication', async (t) => {
  const { deps, held: review } = heldDeps();
  const { m, held } = managerFor(t, { deps });
  const up = await upstreamFor(t, (_req, res) => res.end('ok'));
  const port = await freePort();
  // one request per caller, then none for ~15 minutes; the limiter is kept across the swap (same limit)
  const limited = (endpoint: number): GatewayPlan => ({ ...withService(planOf('team-a', 'gw', port), endpoint), rateLimit: { requestsPerSecond: 0.001, burst: 1 } });
  await m.apply('team-a/gw', limited(up));
  const s = await silent(port, held);
  let text = '';
  s.on('data', (c: Buffer) => { text += c.toString('latin1'); });
  s.write(`GET /x HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`);
  assert.equal(await waitUntil(async () => { await pause(20); return review.asked; }), true, 'its token is being checked');
  await m.apply('team-a/gw', { ...limited(up), routes: [{ ...limited(up).routes[0]!, timeoutSeconds: 7 }] }); // a change: the table is swapped
  review.answer();
  assert.equal(await waitUntil(async () => { await pause(50); return /^HTTP\/1\.1 \d+/.test(text); }), true, text);
  assert.match(text, /^HTTP\/1\.1 200 /);
  const all = await exposed(deps);
  assert.match(all, /access_gateway_authentications_total\{namespace="team-a",gateway="gw",result="allowed"\} 1\n/);
  // the next request is the second: refused
  s.write(`GET /x HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`);
  assert.equal(await waitUntil(async () => { await pause(50); return /HTTP\/1\.1 429 /.test(text); }), true, text);
});

test('what is held is asked at once: a session whose 101 comes after notAfter is ended then', async (t) => {
  const { m, held } = managerFor(t);
  const up = await upstreamFor(t, undefined, (sock) => { setTimeout(() => sock.write(switched), 2500); });
  const port = await freePort();
  const edge = Date.now() + 1500;
  await m.apply('team-a/gw', withAccess(withService(planOf('team-a', 'gw', port), up), [{ users: ['alice'], notAfter: edge }]));
  const s = connect(port, '127.0.0.1');
  held.push(s);
  let bytes = Buffer.alloc(0);
  let closed = false;
  s.on('error', () => {});
  s.on('data', (c: Buffer) => { bytes = Buffer.concat([bytes, c]); });
  s.once('close', () => { closed = true; });
  s.write(`GET /ws HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
  assert.equal(await waitUntil(async () => { await pause(50); return closed; }, 6_000), true, bytes.toString('latin1'));
  assert.match(bytes.toString('latin1'), /^HTTP\/1\.1 101 [^]*\r\n\r\n\x88/, 'the 101, then a close frame');
});

test('a nearer window boundary from a later spec is waited for, whatever an earlier spec\'s was', async (t) => {
  const { m, held } = managerFor(t);
  const up = await ticking(t);
  const port = await freePort();
  await m.apply('team-a/gw', withAccess(withService(planOf('team-a', 'gw', port), up), [{ users: ['alice'], notAfter: Date.now() + 3_600_000 }]));
  const first = stream(port, held);
  assert.equal(await streaming(first), true); // held: a timer for the boundary an hour away
  first.socket.destroy();
  await pause(100);
  const edge = Date.now() + 2000;
  await m.apply('team-a/gw', withAccess(withService(planOf('team-a', 'gw', port), up), [{ users: ['alice'], notAfter: edge }]));
  const second = stream(port, held);
  assert.equal(await streaming(second), true);
  assert.equal(await waitUntil(async () => { await pause(50); return second.ended(); }, 5_000), true, 'ended at the new notAfter');
});

test('a gateway moved to another port: what is open on its old listener follows the new rules and their later changes (not the drain\'s grace)', async (t) => {
  const { m, held } = managerFor(t, { graceMs: 30_000 });
  const up = await ticking(t);
  const [p1, p2, p3] = [await freePort(), await freePort(), await freePort()];
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', p1), up));
  const first = stream(p1, held);
  assert.equal(await streaming(first), true);
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', p2, ['bob']), up)); // moved, and alice dropped
  assert.equal(await waitUntil(async () => { await pause(50); return first.ended(); }), true, 'ended by the new rules');
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', p2, ['alice']), up));
  const open = stream(p2, held);
  assert.equal(await streaming(open), true);
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', p3, ['alice']), up)); // moved, alice kept
  const before = open.text().length;
  await pause(300);
  assert.ok(open.text().length > before && !open.ended(), 'kept by the new rules');
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', p3, ['bob']), up)); // then a change on the new listener
  assert.equal(await waitUntil(async () => { await pause(50); return open.ended(); }), true, 'ended by the new listener\'s change');
});

test('an upgrade the upstream answers without 101 (a stream) is ended at notAfter too', async (t) => {
  const { m, held } = managerFor(t);
  const up = await ticking(t); // no upgrade handler: Node answers it as a request
  const port = await freePort();
  await m.apply('team-a/gw', withAccess(withService(planOf('team-a', 'gw', port), up), [{ users: ['alice'], notAfter: Date.now() + 2000 }]));
  const relayed = stream(port, held, 'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n');
  assert.equal(await streaming(relayed), true, relayed.text());
  assert.match(relayed.text(), /^HTTP\/1\.1 200 /);
  assert.equal(relayed.ended(), false);
  assert.equal(await waitUntil(async () => { await pause(50); return relayed.ended(); }, 5_000), true, 'ended at notAfter');
});

test('what a Service endpoint\'s closed connections owed is charged to their namespace\'s turns: its next request waits, another namespace\'s does not', async (t) => {
  const { deps, m, held } = managerFor(t, { limits: { requestsPerTurnPerNamespace: 1 } });
  const up = await upstreamFor(t, (_req, res) => res.end('ok'));
  const [a, b] = [await freePort(), await freePort()];
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', a), up));
  await m.apply('team-b/gw', withService(planOf('team-b', 'gw', b), up));
  const [sa, sb] = await Promise.all([a, b].map((p) => silent(p, held)));
  deps.pools.charge('team-a', 20); // (what wire.ts reports when a connection closes)
  const answers = await exchange([sa!, sb!], () => get(alice), (text) => text.endsWith('ok'));
  assert.deepEqual(answers.map((x) => /^HTTP\/1\.1 200 /.test(x!)), [true, true]);
  assert.ok(await counted(deps, 'requests_deferred', 'team-a') >= 1, 'team-a waited');
  assert.equal(await counted(deps, 'requests_deferred', 'team-b'), 0);
});

test('an upgrade answered without 101 relays its body in the namespace\'s turns, as a request\'s answer, whole', async (t) => {
  const { deps, m, held } = managerFor(t, { limits: { requestsPerTurnPerNamespace: 1 } });
  const big = Buffer.alloc(4 << 20, 'a');
  const upgrade = 'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';
  // a body with a length (Node answers the upgrade as a request), and one that ends with its connection
  const sized = await upstreamFor(t, (_req, res) => res.end(big));
  const untilClose = await upstreamFor(t, undefined, (sock) => {
    sock.on('data', () => {});
    sock.end(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n'), big]));
  });
  for (const [name, up] of [['sized', sized], ['until-close', untilClose]] as const) {
    const port = await freePort();
    await m.apply(`team-a/${name}`, withService(planOf('team-a', name, port), up));
    const relays = [stream(port, held, upgrade), stream(port, held, upgrade)];
    assert.equal(await waitUntil(async () => { await pause(50); return relays.every((r) => r.ended()); }, 10_000), true);
    for (const r of relays) {
      assert.match(r.text(), /^HTTP\/1\.1 200 /);
      assert.equal(r.text().length - r.text().indexOf('\r\n\r\n') - 4, big.length, `every byte (${name})`);
    }
    const m2 = new RegExp(`^access_gateway_body_pieces_deferred_total\\{namespace="team-a",gateway="${name}"\\} (\\d+)$`, 'm').exec(await exposed(deps));
    assert.ok(Number(m2?.[1] ?? 0) > 0, `pieces waited for their turns (${name})`);
  }
});

test('an upgrade whose table is swapped during its token check is admitted again: a caller dropped meanwhile is refused, nothing reaches the upstream', async (t) => {
  const { deps, held: review } = heldDeps();
  const { m, held } = managerFor(t, { deps });
  let upgrades = 0;
  const up = await upstreamFor(t, undefined, (sock) => { upgrades++; sock.write(switched); });
  const port = await freePort();
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', port), up));
  const s = await silent(port, held);
  let text = '';
  s.on('data', (c: Buffer) => { text += c.toString('latin1'); });
  s.write(`GET /exec HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
  assert.equal(await waitUntil(async () => { await pause(20); return review.asked; }), true, 'its token is being checked');
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', port, ['bob']), up)); // alice dropped
  review.answer();
  assert.equal(await waitUntil(async () => { await pause(50); return /^HTTP\/1\.1 \d+/.test(text); }), true, text);
  assert.match(text, /^HTTP\/1\.1 403 [^]*no rule of spec\.access names it/);
  assert.equal(upgrades, 0, 'the upstream was not asked');
});

test('an upgrade answered without 101 after the drain\'s grace is ended at once, and closed though its client keeps its side open', async (t) => {
  const { m, held } = managerFor(t, { graceMs: 300 });
  const up = await upstreamFor(t, (_req, res) => { // answers after 700 ms, then streams
    setTimeout(() => { res.writeHead(200); res.write('tick\n'); }, 700);
  });
  const port = await freePort();
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', port), up));
  const s = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  held.push(s);
  let text = '';
  let closed = false;
  s.on('error', () => {});
  s.on('data', (c: Buffer) => { text += c.toString('latin1'); });
  s.on('end', () => { closed = true; }); // (its side stays open: it sees the gateway's FIN, not its close)
  s.write(`GET /watch HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
  await pause(150);
  await m.apply('team-a/gw', null); // deleted: its listener drains for 300 ms
  assert.equal(await waitUntil(async () => { await pause(50); return closed; }, 5_000), true, text);
  assert.match(text, /^HTTP\/1\.1 200 /);
  // the gateway closes the connection itself soon after: the drained listener is closed then
  const drained = await Promise.race([m.closeAll(0).then(() => true), pause(5_000).then(() => false)]);
  assert.equal(drained, true, 'the listener finished closing');
});

test('an upgrade waiting for its token check on a listener replaced meanwhile is admitted by the new one\'s rules', async (t) => {
  const { deps, held: review } = heldDeps();
  const { m, held } = managerFor(t, { deps, graceMs: 10_000 });
  let upgrades = 0;
  const up = await upstreamFor(t, undefined, (sock) => { upgrades++; sock.write(switched); });
  const [p1, p2] = [await freePort(), await freePort()];
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', p1), up));
  const s = await silent(p1, held);
  let text = '';
  s.on('data', (c: Buffer) => { text += c.toString('latin1'); });
  s.write(`GET /exec HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
  assert.equal(await waitUntil(async () => { await pause(20); return review.asked; }), true, 'its token is being checked');
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', p2, ['bob']), up)); // moved, and alice dropped
  review.answer();
  // the new listener's token cache is its own: the token is checked again there
  assert.equal(await waitUntil(async () => { await pause(20); return review.asked; }), true, 'checked again by the new listener');
  review.answer();
  assert.equal(await waitUntil(async () => { await pause(50); return /^HTTP\/1\.1 \d+/.test(text); }), true, text);
  assert.match(text, /^HTTP\/1\.1 403 [^]*no rule of spec\.access names it/);
  assert.equal(upgrades, 0, 'the upstream was not asked');
});

/**
 * A Service-route gateway over `handler`, and a client connection whose token is cached (a first
 * GET /warm answered); `pipeline` sends GETs of `urls` at once; `text` is all it has read.
 */
async function pipelinedClient(t: TestContext, handler: RequestListener) {
  const { deps, m, held } = managerFor(t);
  const up = await upstreamFor(t, handler);
  const p = planOf('team-a', 'gw', await freePort());
  await m.apply('team-a/gw', withService(p, up));
  const s = await silent(p.port, held);
  const c = { deps, s, text: '', pipeline: (urls: string[]) => s.write(urls.map((u) => `GET ${u} HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`).join('')) };
  s.on('data', (b: Buffer) => { c.text += b.toString('latin1'); });
  c.pipeline(['/warm']);
  assert.equal(await waitUntil(async () => { await pause(20); return /^HTTP\/1\.1 200 /.test(c.text); }), true, c.text);
  return c;
}

test('requests pipelined on one connection reach the upstream one at a time, in order, each after the one before is answered', async (t) => {
  let open = 0, most = 0;
  const seen: string[] = [];
  const c = await pipelinedClient(t, (req, res) => {
    open++;
    most = Math.max(most, open);
    seen.push(req.url!);
    setTimeout(() => { open--; res.end(`answer ${req.url}`); }, 100);
  });
  c.pipeline(['/a', '/b', '/c']);
  assert.equal(await waitUntil(async () => { await pause(50); return c.text.includes('answer /c'); }), true, c.text);
  assert.deepEqual(seen, ['/warm', '/a', '/b', '/c']);
  assert.equal(most, 1, 'one request at a time reached the upstream');
  const text = c.text;
  assert.ok(text.indexOf('answer /a') < text.indexOf('answer /b') && text.indexOf('answer /b') < text.indexOf('answer /c'));
  assert.equal(isOpen(c.s), true);
});

test('a client that leaves with pipelined requests still waiting: they are never forwarded, and nothing stays counted in flight', async (t) => {
  const seen: string[] = [];
  const c = await pipelinedClient(t, (req, res) => {
    seen.push(req.url!);
    if (req.url === '/warm') res.end('ok');
    else setTimeout(() => res.end('late'), 300);
  });
  c.pipeline(['/a', '/b', '/c']);
  assert.equal(await waitUntil(async () => { await pause(20); return seen.includes('/a'); }), true);
  c.s.destroy();
  await pause(600);
  assert.deepEqual(seen, ['/warm', '/a']);
  assert.match(await exposed(c.deps), /access_gateway_requests_in_flight\{namespace="team-a",gateway="gw"\} 0\n/);
});

test('a download with a length that its client reads slowly is cut at its grant\'s notAfter too', async (t) => {
  const { m, held } = managerFor(t);
  const size = 64 << 20;
  const up = await upstreamFor(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size });
    const chunk = Buffer.alloc(1 << 20);
    let sent = 0;
    const more = () => { while (sent < size && res.write(chunk)) sent += chunk.length; if (sent < size) res.once('drain', () => { sent += chunk.length; more(); }); else res.end(); };
    more();
  });
  const port = await freePort();
  const edge = Date.now() + 1500;
  await m.apply('team-a/gw', withAccess(withService(planOf('team-a', 'gw', port), up), [{ users: ['alice'], notAfter: edge }]));
  // a slow reader until the edge, then it reads all there is: the connection must end short of the length
  await cutAtEdge(download(port, held, edge), size, edge);
});

/** A GET of a download on a raw socket (read slowly until `slowUntil`): bytes read, and whether it closed. */
function download(port: number, held: Socket[], slowUntil = 0): { got: () => number; closed: () => boolean } {
  const s = connect(port, '127.0.0.1');
  held.push(s);
  let got = 0;
  let closed = false;
  s.on('error', () => {});
  s.on('close', () => { closed = true; });
  s.on('data', (c: Buffer) => { got += c.length; if (Date.now() < slowUntil) { s.pause(); setTimeout(() => s.resume(), 200); } });
  s.write(`GET /download HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`);
  return { got: () => got, closed: () => closed };
}

/** The download was cut at the window's edge, not before, short of its length. */
async function cutAtEdge(d: ReturnType<typeof download>, size: number, edge: number): Promise<void> {
  assert.equal(await waitUntil(async () => { await pause(50); return d.closed(); }, 6_000), true, `cut at notAfter (${d.got()} of ${size} bytes read)`);
  assert.ok(Date.now() >= edge, 'not before the edge');
  assert.ok(d.got() < size, 'the download did not complete');
}

test('a download with a length that its upstream trickles to a fast client is cut at notAfter too', async (t) => {
  const { m, held } = managerFor(t);
  const size = 1 << 20;
  const up = await upstreamFor(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size });
    let sent = 0;
    const timer = setInterval(() => { res.write(Buffer.alloc(1024)); sent += 1024; if (sent >= size) { clearInterval(timer); res.end(); } }, 20);
    res.on('close', () => clearInterval(timer));
  });
  const port = await freePort();
  const edge = Date.now() + 1500;
  await m.apply('team-a/gw', withAccess(withService(planOf('team-a', 'gw', port), up), [{ users: ['alice'], notAfter: edge }]));
  await cutAtEdge(download(port, held), size, edge);
});

test('a route a served plan drops loses its series; one a failed plan would have dropped keeps them, made on use', async (t) => {
  const { deps, m } = managerFor(t);
  const p = planOf('team-a', 'gw', await freePort());
  const series = () => exposed(deps);
  const named = (name: string, pathPrefix = '/') => ({ ...p.routes[0]!, name, pathPrefix });
  await m.apply('team-a/gw', { ...p, routes: [named('one')] });
  // a change that cannot be compiled drops nothing: route one still serves and still counts
  const bad = { ...named('bad', '/bad'), target: { ...(p.routes[0]!.target as ApiserverTarget), acceptPaths: ['^/(?=api)'] } };
  await assert.rejects(m.apply('team-a/gw', { ...p, routes: [named('two'), bad] }));
  assert.match(await series(), /route="one"/);
  const res = await request(`http://127.0.0.1:${p.port}/x`, { method: 'PATCH', headers: { authorization: `Bearer ${alice}` } });
  await res.body.dump();
  assert.match(await series(), /access_gateway_requests_total\{namespace="team-a",gateway="gw",route="one",method="PATCH"/, 'made on first use');
  // renamed by a plan that is served: gone
  await m.apply('team-a/gw', { ...p, routes: [named('two')] });
  assert.doesNotMatch(await series(), /route="one"/);
  assert.match(await series(), /route="two"/);
});

test('an upgrade the upstream resets does not eject its endpoint (every gateway routing there shares it); requests go on to both endpoints', async (t) => {
  const { m, held } = managerFor(t);
  const got = new Map<number, number>();
  const upstream = async () => {
    const port: number = await upstreamFor(t, (req, res) => {
      got.set(port, (got.get(port) ?? 0) + 1);
      res.end('ok');
    }, (sock) => sock.destroy()); // a reset, provoked by what the caller sent
    return port;
  };
  const [u1, u2] = [await upstream(), await upstream()];
  const port = await freePort();
  const p = withService(planOf('team-a', 'gw', port));
  const target = { ...(p.routes[0]!.target as ServiceTarget), endpoints: [{ ip: '127.0.0.1', port: u1 }, { ip: '127.0.0.1', port: u2 }] };
  const plan = { ...p, routes: [{ ...p.routes[0]!, target }] };
  await m.apply('team-a/gw', plan);
  const s = await silent(port, held);
  const [upgrade] = await exchange([s], () => `GET /ws HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
    (text) => text.includes('\r\n\r\n'));
  assert.match(upgrade!, /^HTTP\/1\.1 502 /);
  for (let i = 0; i < 6; i++) {
    const c = await silent(port, held);
    assert.match((await exchange([c], () => get(alice), (x) => x.endsWith('ok')))[0]!, /^HTTP\/1\.1 200/);
  }
  assert.ok((got.get(u1) ?? 0) >= 1 && (got.get(u2) ?? 0) >= 1, `both endpoints still take requests: ${JSON.stringify([...got])}`);
});

test('an upgrade whose endpoint cannot be reached ejects it, as a request does: the next requests go to the other endpoint', async (t) => {
  const { m, held } = managerFor(t);
  const up = await upstreamFor(t, (_req, res) => res.end('ok'), (sock) => sock.write(switched));
  const dead = await freePort(); // nothing listens there: connections are refused
  const port = await freePort();
  const p = withService(planOf('team-a', 'gw', port));
  const target = { ...(p.routes[0]!.target as ServiceTarget), endpoints: [{ ip: '127.0.0.1', port: dead }, { ip: '127.0.0.1', port: up }] };
  await m.apply('team-a/gw', { ...p, routes: [{ ...p.routes[0]!, target }] });
  let refused = false;
  for (let i = 0; i < 4 && !refused; i++) {
    const s = await silent(port, held);
    const [answer] = await exchange([s], () => `GET /ws HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
      (text) => text.includes('\r\n\r\n'));
    refused = /^HTTP\/1\.1 502 /.test(answer!);
    s.destroy();
  }
  assert.ok(refused, 'an upgrade went to the endpoint that refuses connections');
  for (let i = 0; i < 6; i++) {
    const c = await silent(port, held);
    assert.match((await exchange([c], () => get(alice), (x) => /ok$|\}$/.test(x)))[0]!, /^HTTP\/1\.1 200/, `request ${i}`);
  }
});

test('header lines: a body whose length or chunking is named after 250 others reaches the upstream whole; more than 256 lines are 431 (Node drops those past them unsaid) and close the connection', async (t) => {
  const { m, held } = managerFor(t);
  // an upstream that reads every header too
  const u = createHttpServer({ maxHeaderSize: 64 * 1024 }, (req, res) => {
    let n = '';
    req.on('data', (c: Buffer) => { n += c.toString(); });
    req.on('end', () => res.end(JSON.stringify({ body: n, filler: Object.keys(req.headers).filter((h) => /^x-f\d/.test(h)).length })));
  });
  u.maxHeadersCount = 0;
  await new Promise<void>((r) => u.listen(0, '127.0.0.1', () => r()));
  t.after(() => { u.closeAllConnections(); u.close(); });
  const port = await freePort();
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', port), (u.address() as { port: number }).port));
  const filler = (n: number) => Array.from({ length: n }, (_, i) => `X-F${i}: y\r\n`).join('');
  for (const framing of ['Content-Length: 5\r\n\r\nhello', 'Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n']) {
    const s = await silent(port, held);
    // Host, Authorization, 250 fillers and the framing: 253 lines
    const [text] = await exchange([s], () => `POST /x HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n${filler(250)}${framing}`, (x) => x.includes('}') || /^HTTP\/1\.1 [^2]/.test(x));
    assert.match(text!, /^HTTP\/1\.1 200/);
    assert.deepEqual(JSON.parse(text!.slice(text!.indexOf('{'))), { body: 'hello', filler: 250 }, framing);
    // 257 lines or more (under 16 KiB): refused, never forwarded, the connection closed: at 257 by
    // the gateway (Node keeps that many), past it by Node itself
    for (const n of [254, 400]) {
      const s2 = await silent(port, held);
      const refused = await new Promise<string>((resolve) => {
        let got = '';
        s2.on('data', (c: Buffer) => { got += c.toString('latin1'); });
        s2.on('close', () => resolve(got));
        s2.write(`POST /x HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n${filler(n)}${framing}`);
      });
      assert.match(refused, /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/, `${n}`);
      assert.match(refused, /connection: close/i);
      if (n === 254) assert.match(refused, /more than 256 header lines/);
      // past them, by the parser: no request made of 400 header lines (unbounded, a client with
      // no token made the shared loop build thousands of header strings a request)
      else assert.match(refused, /content-length: 0\r\n\r\n$/);
    }
  }
});

test('a request sent in clear to a TLS listener is answered 400, as Go\'s servers answer it, and closed; the listener still serves TLS', async (t) => {
  const { m, held } = managerFor(t);
  const port = await freePort();
  await m.apply('team-a/tls', withTLS(planOf('team-a', 'tls', port)));
  const answer = await new Promise<string>((resolve) => {
    const s = connect(port, '127.0.0.1');
    held.push(s);
    let text = '';
    s.on('data', (c: Buffer) => { text += c.toString('latin1'); });
    s.on('error', () => {});
    s.on('close', () => resolve(text));
    s.once('connect', () => s.write(discoveryRequest));
  });
  assert.match(answer, /^HTTP\/1\.0 400 Bad Request\r\n[^]*\r\n\r\nClient sent an HTTP request to an HTTPS server\.\n$/);
  assert.equal((await ask(port, held, alice, true)).status, 200);
});

test('tenancy: streams keep at most 8 replaced tables alive: past that, those of the oldest are ended; a Service\'s endpoints changing alone ends nothing', async (t) => {
  const { m, held } = managerFor(t);
  const [up, up2] = [await ticking(t), await ticking(t)];
  const port = await freePort();
  const planFor = (i: number, endpoint = up) => withAccess(withService(planOf('team-a', 'gw', port), endpoint), [{ users: ['alice', `other-${i}`] }]);
  await m.apply('team-a/gw', planFor(0));
  const streams = [stream(port, held)];
  assert.equal(await streaming(streams[0]!), true, streams[0]!.text());
  // endpoint changes alone, a stream opened after each (a rolling update under watches): all go on
  for (let i = 1; i <= maxOlderTables + 2; i++) {
    await m.apply('team-a/gw', planFor(0, i % 2 ? up2 : up));
    const s = stream(port, held);
    assert.equal(await streaming(s), true, s.text());
  }
  await pause(200);
  assert.equal(streams[0]!.ended(), false, 'ended by a few endpoint changes');
  for (let i = 1; i <= maxOlderTables; i++) { // a spec change each: every stream is asked again, and admitted
    await m.apply('team-a/gw', planFor(i));
    streams.push(stream(port, held));
    assert.equal(await streaming(streams[i]!), true, streams[i]!.text());
  }
  await pause(200);
  assert.ok(streams.every((s) => !s.ended()), 'as many replaced tables as may be are kept');
  await m.apply('team-a/gw', planFor(maxOlderTables + 1));
  assert.equal(await waitUntil(async () => { await pause(50); return streams[0]!.ended(); }), true, 'the oldest table\'s streams were ended');
  await pause(200);
  assert.deepEqual(streams.map((s) => s.ended()), streams.map((_, i) => i === 0));
});

test('tenancy: over all of a namespace\'s gateways, streams keep at most 16 replaced specs\' tables alive; another namespace\'s are not counted', async (t) => {
  const { m, held } = managerFor(t);
  const up = await ticking(t);
  const ports = { a1: await freePort(), a2: await freePort(), a3: await freePort(), b: await freePort() };
  const planFor = (ns: string, name: string, port: number, i: number) => withAccess(withService(planOf(ns, name, port), up), [{ users: ['alice', `other-${i}`] }]);
  const opened: Record<string, ReturnType<typeof stream>[]> = { a1: [], a2: [], a3: [], b: [] };
  const change = async (gw: 'a1' | 'a2' | 'a3' | 'b', i: number) => {
    const ns = gw === 'b' ? 'team-b' : 'team-a';
    await m.apply(`${ns}/${gw}`, planFor(ns, gw, ports[gw], i));
    const s = stream(ports[gw], held);
    assert.equal(await streaming(s), true, s.text());
    opened[gw]!.push(s);
  };
  // team-b: a stream under each of 8 specs, then team-a's two gateways 8 older specs each (16)
  for (let i = 0; i <= maxOlderTables; i++) await change('b', i);
  for (let i = 0; i <= maxOlderTables; i++) await change('a1', i);
  for (let i = 0; i <= maxOlderTables; i++) await change('a2', i);
  await pause(200);
  assert.ok(Object.values(opened).flat().every((s) => !s.ended()), 'as many older specs as may be are kept');
  // a third gateway's first spec is no older one; its second makes 17 in team-a: a1's oldest ends
  await change('a3', 0);
  await pause(200);
  assert.equal(opened.a1![0]!.ended(), false);
  await change('a3', 1);
  assert.equal(await waitUntil(async () => { await pause(50); return opened.a1![0]!.ended(); }, 10_000), true, 'the namespace\'s oldest spec\'s streams were ended');
  await pause(200);
  assert.deepEqual(opened.a1!.map((s) => s.ended()), opened.a1!.map((_, i) => i === 0));
  assert.ok([...opened.a2!, ...opened.a3!, ...opened.b!].every((s) => !s.ended()), 'nothing else ended, team-b\'s least');
});

test('tenancy: streams whose upstream answered after their table was replaced count as that table\'s: past 8 such tables, the oldest\'s are ended', async (t) => {
  const { m, held } = managerFor(t);
  const answers: (() => void)[] = [];
  const up = await upstreamFor(t, (_req, res) => {
    answers.push(() => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      const timer = setInterval(() => res.write('tick\n'), 50);
      res.on('close', () => clearInterval(timer));
    });
  });
  const port = await freePort();
  const planFor = (i: number) => withAccess(withService(planOf('team-a', 'gw', port), up), [{ users: ['alice', `other-${i}`] }]);
  await m.apply('team-a/gw', planFor(0));
  const streams: ReturnType<typeof stream>[] = [];
  for (let i = 0; i <= maxOlderTables; i++) { // each forwarded by table i, its answer not begun, then the table replaced
    streams.push(stream(port, held));
    assert.equal(await waitUntil(async () => { await pause(20); return answers.length === i + 1; }), true);
    await m.apply('team-a/gw', planFor(i + 1));
  }
  for (const a of answers.reverse()) a(); // the oldest table's stream begins last: it is still the oldest
  assert.equal(await waitUntil(async () => { await pause(50); return streams[0]!.ended(); }), true, `the oldest table's stream ended: ${streams[0]!.text()}`);
  await pause(200);
  assert.deepEqual(streams.map((s) => s.ended()), streams.map((_, i) => i === 0));
  assert.ok(streams.every((s) => /^HTTP\/1\.1 200/.test(s.text())));
});

test('Expect: 100-continue: 100 Continue only once the request is admitted; a refused one gets its refusal, never 100', async (t) => {
  const { m, held } = managerFor(t);
  const up = await upstreamFor(t, (req, res) => {
    let n = '';
    req.on('data', (c: Buffer) => { n += c.toString(); });
    req.on('end', () => res.end(`got ${n}`));
  });
  const port = await freePort();
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', port), up));
  const head = (token: string) => `POST /x HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${token}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n`;
  const s = await silent(port, held);
  const [first] = await exchange([s], () => head('not-a-token'), (x) => x.includes('\r\n\r\n'));
  assert.match(first!, /^HTTP\/1\.1 401 /, 'refused before any 100');
  const s2 = await silent(port, held);
  const [cont] = await exchange([s2], () => head(alice), (x) => x.includes('\r\n\r\n'));
  assert.match(cont!, /^HTTP\/1\.1 100 Continue\r\n\r\n$/);
  const [answer] = await exchange([s2], () => 'hello', (x) => x.includes('got hello'));
  assert.match(answer!, /^HTTP\/1\.1 200 [^]*got hello$/);
  // a Service without endpoints: no 100 (its answer will be 503 whatever the body)
  const none = await freePort();
  const empty = withService(planOf('team-a', 'gw2', none), up);
  await m.apply('team-a/gw2', { ...empty, routes: [{ ...empty.routes[0]!, target: { ...(empty.routes[0]!.target as ServiceTarget), endpoints: [] } }] });
  const s3 = await silent(none, held);
  let got = '';
  s3.on('data', (c: Buffer) => { got += c.toString('latin1'); });
  s3.write(head(alice));
  await pause(300);
  assert.doesNotMatch(got, /100 Continue/);
  s3.write('hello');
  assert.equal(await waitUntil(async () => { await pause(20); return got.includes('\r\n\r\n'); }), true);
  assert.match(got, /^HTTP\/1\.1 503 /);
});

test('tenancy: a Service\'s endpoints changing alone, a stream opened after each: past 32 replaced tables holding streams, the oldest\'s are ended', async (t) => {
  const { m, held } = managerFor(t);
  const [up, up2] = [await ticking(t), await ticking(t)];
  const port = await freePort();
  const planFor = (i: number) => withAccess(withService(planOf('team-a', 'gw', port), i % 2 ? up2 : up), [{ users: ['alice'] }]);
  await m.apply('team-a/gw', planFor(0));
  const streams = [stream(port, held)];
  assert.equal(await streaming(streams[0]!), true);
  for (let i = 1; i <= maxOlderTablesInAll; i++) {
    await m.apply('team-a/gw', planFor(i));
    streams.push(stream(port, held));
    assert.equal(await streaming(streams[i]!), true);
  }
  await pause(200);
  assert.ok(streams.every((s) => !s.ended()));
  await m.apply('team-a/gw', planFor(maxOlderTablesInAll + 1));
  assert.equal(await waitUntil(async () => { await pause(50); return streams[0]!.ended(); }), true);
  await pause(200);
  assert.deepEqual(streams.map((s) => s.ended()), streams.map((_, i) => i === 0));
});

test('an endpoint makes only what is used: an upgrade its upgrade agent, not a request pool; a request its pool', async (t) => {
  const { m, held, deps } = managerFor(t);
  const up = await upstreamFor(t, (_req, res) => res.end('ok'), (sock) => {
    sock.on('data', () => {});
    sock.write(switched);
  });
  const port = await freePort();
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', port), up));
  const pools = () => [...(deps.pools as unknown as { pools: Map<string, EndpointPool> }).pools.values()];
  const upgraded = stream(port, held, 'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n');
  assert.equal(await waitUntil(async () => { await pause(20); return upgraded.text().includes('\r\n\r\n'); }), true);
  assert.match(upgraded.text(), /^HTTP\/1\.1 101 /);
  assert.deepEqual(pools().map((p) => p.pooled), [false], 'an upgrade made a request pool');
  assert.equal((await ask(port, held)).status, 200); // discovery: no upstream
  const s = await silent(port, held);
  const [answer] = await exchange([s], () => `GET /x HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`, (x) => x.includes('ok'));
  assert.match(answer!, /^HTTP\/1\.1 200 /);
  assert.deepEqual(pools().map((p) => p.pooled), [true]);
});

test('a malformed request, a CONNECT or an upgrade pipelined behind valid ones is refused after their answers, not in their place', async (t) => {
  const { m, held } = managerFor(t);
  const up = await upstreamFor(t, (req, res) => setTimeout(() => res.end(`answer ${req.url}`), 50));
  const port = await freePort();
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', port), up));
  const get = (n: number) => `GET /r${n} HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\n\r\n`;
  for (const [bad, status] of [['POST /x HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', '400'],
    ['CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n', '405'],
    // an upgrade without a token: its 401 is written raw on the connection, as the others are
    ['GET /ws HTTP/1.1\r\nHost: g\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n', '401']] as const) {
    const s = await silent(port, held);
    const text = await new Promise<string>((resolve) => {
      let got = '';
      s.on('data', (c: Buffer) => { got += c.toString('latin1'); });
      s.on('close', () => resolve(got));
      s.write(get(1) + get(2) + get(3) + bad);
    });
    const statuses = [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((x) => x[1]);
    assert.deepEqual(statuses, ['200', '200', '200', status], text);
    assert.deepEqual([...text.matchAll(/answer (\/r\d)/g)].map((x) => x[1]), ['/r1', '/r2', '/r3']);
  }
});

test('only websocket and SPDY/3.1 are relayed as upgrades: another protocol (h2c, a backend\'s own) is 400 and never reaches the upstream; a 101 to another protocol, or without its key\'s accept, is 502 and not joined', async (t) => {
  const { m, held } = managerFor(t);
  const asked: string[] = [];
  let answer = (upgrade: string) => `HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${upgrade}\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n`;
  const after: string[] = [];
  const counting = createHttpServer((_req, res) => res.end('ok'));
  counting.on('upgrade', (req, sock: Socket) => {
    asked.push(String(req.headers.upgrade));
    sock.on('data', (d: Buffer) => after.push(d.toString()));
    sock.on('error', () => {});
    sock.write(answer(String(req.headers.upgrade)));
  });
  await new Promise<void>((r) => counting.listen(0, '127.0.0.1', () => r()));
  t.after(() => { counting.closeAllConnections(); counting.close(); });
  const port = await freePort();
  await m.apply('team-a/gw', withService(planOf('team-a', 'gw', port), (counting.address() as { port: number }).port));
  const upgrade = async (protocol: string) => {
    const s = await silent(port, held);
    const [text] = await exchange([s], () => `GET /x HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${alice}\r\nConnection: Upgrade\r\nUpgrade: ${protocol}\r\n`
      + 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n', (x) => x.includes('\r\n\r\n'));
    if (!s.destroyed) s.write('DELETE /admin HTTP/1.1\r\nHost: x\r\n\r\n'); // past the rules, were it joined
    await pause(50);
    return text!.split('\r\n')[0];
  };
  for (const p of ['h2c', 'anything', 'websocket, h2c', 'SPDY/3']) assert.equal(await upgrade(p), 'HTTP/1.1 400 Bad Request', p);
  assert.deepEqual(asked, []);
  assert.equal(await upgrade('WebSocket'), 'HTTP/1.1 101 Switching Protocols');
  assert.equal(await upgrade('SPDY/3.1'), 'HTTP/1.1 101 Switching Protocols');
  assert.deepEqual(asked, ['WebSocket', 'SPDY/3.1']);
  assert.equal(after.length, 2, 'joined: the client\'s bytes reach the upstream');
  // the upstream switches to a protocol other than the one asked for, or answers a WebSocket
  // upgrade with an accept that is not its key's: not joined
  answer = () => 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n';
  assert.equal(await upgrade('websocket'), 'HTTP/1.1 502 Bad Gateway');
  answer = (u) => `HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${u}\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n`;
  assert.equal(await upgrade('websocket'), 'HTTP/1.1 502 Bad Gateway');
  answer = (u) => `HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${u}\r\nConnection: Upgrade\r\n\r\n`;
  assert.equal(await upgrade('SPDY/3.1'), 'HTTP/1.1 101 Switching Protocols', 'SPDY has no accept');
  assert.equal(after.length, 3, 'only the SPDY session was joined');
});

test('--min-access-log: a gateway\'s annotation may ask for more than the platform\'s least, never less', async (t) => {
  const up = await upstreamFor(t, (_req, res) => res.end('ok'));
  const logged = async (least: 'none' | 'errors' | 'all' | undefined, asked: GatewayPlan['accessLog']) => {
    const lines: { status: number }[] = [];
    const deps = { ...aliceDeps(), accessLog: () => ({ write: (e: { status: number }) => lines.push(e) }), ...(least ? { minAccessLog: least } : {}) } as unknown as DataplaneDeps;
    const { m, held } = managerFor(t, { deps });
    const port = await freePort();
    await m.apply('team-a/gw', { ...withService(planOf('team-a', 'gw', port), up), accessLog: asked });
    const s = await silent(port, held);
    await exchange([s], () => get(alice), (text) => text.endsWith('ok'));
    await exchange([s], () => get('refused'), (text) => text.endsWith('}'));
    await pause(20); // (a line is written when its answer is done)
    await m.closeAll(0);
    return lines.map((l) => l.status);
  };
  const none = { errors: false, sample: 0 };
  assert.deepEqual(await logged(undefined, none), [], 'the team\'s none, no least');
  assert.deepEqual(await logged('errors', none), [401]);
  assert.deepEqual(await logged('errors', { errors: true, sample: 1 }), [200, 401], 'asking for more');
  assert.deepEqual(await logged('all', none), [200, 401]);
  assert.deepEqual(await logged('none', { errors: true, sample: 0 }), [401]);
});

test('with a pace, a plan\'s route table is made in steps: a turn whenever they held the loop 1 ms, the pieces after a turn told to the pace; the plan is served', async (t) => {
  const busy = (ms: number) => { for (const end = performance.now() + ms; performance.now() < end;); };
  // each route's endpoint pools cost the loop 2 ms to take (as a costly route's metrics and filters may)
  class SlowPools extends PoolRegistry {
    override acquire(...args: Parameters<PoolRegistry['acquire']>): EndpointPool {
      busy(2);
      return super.acquire(...args);
    }
  }
  const deps = { ...aliceDeps(), pools: new SlowPools() } as unknown as DataplaneDeps;
  const { m, held } = managerFor(t, { deps });
  const up = await upstreamFor(t, (_req, res) => res.end('ok'));
  const port = await freePort();
  const base = withService(planOf('team-a', 'gw', port), up);
  const route0 = base.routes[0]!;
  const target = route0.target as ServiceTarget;
  const routes = Array.from({ length: 8 }, (_, i) => ({ ...route0, name: `r${i}`, pathPrefix: i === 7 ? '/' : `/r${i}`, target: { ...target, name: `echo${i}` } }));
  let turns = 0;
  let heldMs = 0;
  const pace = { turn: () => { turns++; return new Promise<void>((r) => setImmediate(r)); }, held: (ms: number) => { heldMs += ms; } };
  assert.deepEqual(await m.apply('team-a/gw', { ...base, routes }, pace), { programmed: true, port });
  assert.ok(turns >= 7, `a turn between routes: ${turns}`);
  assert.ok(heldMs >= 14, `the pieces after the first turn told: ${heldMs} ms`);
  const [answer] = await exchange([await silent(port, held)], () => get(alice), (x) => x.endsWith('ok'));
  assert.match(answer!, /^HTTP\/1\.1 200 /);
  // an update, in steps too, from the table it replaces (its token cache kept)
  turns = 0;
  const authenticator = () => (m.get('team-a/gw') as unknown as { table: RouteTable }).table.authenticator;
  const before = authenticator();
  const renamed = routes.map((r, i) => ({ ...r, name: `s${i}`, target: { ...r.target, name: `other${i}` } }));
  assert.deepEqual(await m.apply('team-a/gw', { ...base, routes: renamed }, pace), { programmed: true, port });
  assert.ok(turns >= 7, `an update's: ${turns}`);
  assert.equal(authenticator(), before);
  assert.deepEqual(m.get('team-a/gw')!.plan.routes.map((r) => r.name), renamed.map((r) => r.name));
});

test('a gateway deleted and made again in steps keeps its routes\' series when its old listener finishes draining meanwhile', async (t) => {
  let slow = false;
  class SlowPools extends PoolRegistry {
    override acquire(...args: Parameters<PoolRegistry['acquire']>): EndpointPool {
      if (slow) for (const end = performance.now() + 4; performance.now() < end;);
      return super.acquire(...args);
    }
  }
  const deps = { ...aliceDeps(), pools: new SlowPools() } as unknown as DataplaneDeps;
  const { m, held } = managerFor(t, { deps, graceMs: 60 });
  const port = await freePort();
  const base = withService(planOf('team-a', 'gw', port), 9);
  const route0 = base.routes[0]!;
  const routes = (n: number) => Array.from({ length: n }, (_, i) => ({ ...route0, name: `r${i}`, pathPrefix: `/r${i}`, target: { ...(route0.target as ServiceTarget), name: `echo${i}` } }));
  const pace = { turn: () => new Promise<void>((r) => setTimeout(r, 5)), held: () => {} };
  await m.apply('team-a/gw', { ...base, routes: routes(8) }, pace);
  const s = await silent(port, held);
  s.write('GET /r0 HTTP/1.1\r\nHost: g\r\n'); // half a request: the old listener drains until its grace ends
  await pause(20);
  await m.apply('team-a/gw', null);
  slow = true; // the new table's steps outlast the old listener's drain
  await m.apply('team-a/gw', { ...base, routes: routes(30) }, pace);
  await pause(100);
  const exported = new Set([...(await exposed(deps)).matchAll(/^access_gateway_responses_total\{namespace="team-a",gateway="gw",route="(r\d+)"/gm)].map((x) => x[1]));
  assert.equal(exported.size, 30, [...exported].join(','));
});

test('a session\'s start and end lines clip a caller\'s name past 512 characters, as access lines do; and the protocol a backend chose', async (t) => {
  const long = `system:serviceaccount:team-a:${'x'.repeat(1_000)}`;
  const protocol = `p${'y'.repeat(1_000)}`;
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'info' }, new Writable({ write(c: Buffer, _e, done) { lines.push(JSON.parse(c.toString())); done(); } }));
  const deps = { ...aliceDeps(), log,
    reviewer: { review: async (token: string) => token === alice
      ? { authenticated: true, user: { username: long, uid: '', groups: [], extra: {} }, audiences: ['gw'] }
      : { authenticated: false, error: 'no' } } } as unknown as DataplaneDeps;
  const { m, held } = managerFor(t, { deps });
  const up = await upstreamFor(t, undefined, (sock) => { sock.on('data', () => {}); sock.write(switched.replace('\r\n\r\n', `\r\nSec-WebSocket-Protocol: ${protocol}\r\n\r\n`)); });
  const port = await freePort();
  await m.apply('team-a/gw', { ...withService(planOf('team-a', 'gw', port, [long]), up), sessions: { maxConcurrent: 4, idleTimeoutSeconds: 1 } });
  const { text, socket } = stream(port, held, `Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: ${protocol}\r\n`);
  assert.equal(await waitUntil(async () => { await pause(20); return text().includes('\r\n\r\n'); }), true, text());
  assert.match(text(), /^HTTP\/1\.1 101 /);
  socket.destroy();
  assert.equal(await waitUntil(async () => { await pause(50); return lines.some((l) => l.msg === 'session ended'); }, 10_000), true);
  for (const msg of ['session started', 'session ended']) {
    const l = lines.find((x) => x.msg === msg)!;
    assert.match(String(l.caller), /^system:serviceaccount:team-a:x{483}…\(1029 characters, sha256 [0-9a-f]{16}\)$/, msg);
  }
  assert.match(String(lines.find((x) => x.msg === 'session started')!.protocol), /^py{511}…\(1001 characters, sha256 [0-9a-f]{16}\)$/);
});

test('an upstream failure\'s warn line clips its message and cause (a backend\'s certificate names in Node\'s message), and weighs what it keeps', () => {
  const names = Array.from({ length: 300 }, (_, i) => `DNS:${'n'.repeat(90)}${i}.example`).join(', ');
  const err = new UpstreamUnreachableError(`upstream failed: Hostname/IP does not match certificate's altnames: Host: w.team-a.svc. is not in the cert's altnames: ${names}`,
    { cause: new Error(`ERR_TLS_CERT_ALTNAME_INVALID: ${names}`) });
  const line = failureLine(err);
  assert.ok(err.message.length > 28_000);
  assert.match(line.msg, /…\(\d+ characters, sha256 [0-9a-f]{16}\)$/);
  assert.match(line.cause, /^Error: ERR_TLS_CERT_ALTNAME_INVALID: .*…\(\d+ characters, sha256 [0-9a-f]{16}\)$/);
  assert.ok(line.msg.length < 600 && line.cause.length < 600);
  assert.equal(line.weight, lineWeight(line.msg, line.cause));
  assert.ok(line.weight >= 8);
  // a short one is as it was
  assert.deepEqual(failureLine(new UpstreamUnreachableError('connect ECONNREFUSED')), { msg: 'connect ECONNREFUSED', cause: '', weight: 1 });
});
