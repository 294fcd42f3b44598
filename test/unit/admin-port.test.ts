// The admin port, which any pod may reach: its connections are bounded, and slow headers time out.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { request } from 'undici';
import { boundConnections } from '../../src/dataplane/namespace-budget.js';
import { startAdminServer, type AdminOptions } from '../../src/observability/admin-server.js';
import { testMetrics } from '../../src/observability/metrics.js';

async function admin(t: TestContext, o: Partial<AdminOptions> = {}) {
  const server = await startAdminServer({ host: '127.0.0.1', port: 0, metrics: testMetrics(), ready: () => true, ...o });
  const held: Socket[] = [];
  t.after(() => {
    for (const s of held) s.destroy();
    server.closeAllConnections();
    server.close();
  });
  const port = (server.address() as AddressInfo).port;
  const open = () => new Promise<Socket>((resolve) => {
    const s = connect(port, '127.0.0.1', () => resolve(s));
    s.on('error', () => {});
    s.resume(); // read (and drop) what comes: the server's end is seen
    held.push(s);
  });
  return { server, port, open };
}

const closed = (s: Socket) => new Promise<boolean>((resolve) => {
  if (s.destroyed) return resolve(true);
  const timer = setTimeout(() => resolve(false), 3_000);
  s.once('close', () => { clearTimeout(timer); resolve(true); });
});

test('the admin port holds a bounded number of connections: a new probe gets in, the oldest of the address holding the most is closed', async (t) => {
  const { server, port, open } = await admin(t);
  assert.equal(server.headersTimeout, 10_000, 'the default header timeout');
  boundConnections(server, 4);
  const idle = [await open(), await open(), await open(), await open()];
  const held = () => new Promise<number>((resolve) => server.getConnections((_err, n) => resolve(n)));
  for (let i = 0; i < 100 && (await held()) < 4; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(await held(), 4, 'the server holds the four idle connections');
  const r = await request(`http://127.0.0.1:${port}/readyz`);
  assert.equal(r.statusCode, 200);
  assert.equal(await r.body.text(), 'ok');
  assert.equal(await closed(idle[0]!), true, 'the oldest idle connection was closed to make room');
  assert.deepEqual(idle.slice(1).map((s) => s.destroyed), [false, false, false]);
});

test('an admin connection that trickles its headers is closed after the header timeout', async (t) => {
  const { open } = await admin(t, { headersTimeoutMs: 300 });
  const s = await open();
  s.write('GET /readyz HTTP/1.1\r\nHost: x\r\n');
  assert.equal(await closed(s), true);
});

test('a /metrics answer its client stops reading is closed once nothing moved for a while; one read slowly is not', async (t) => {
  // 32 MiB: more than the two sockets' buffers hold
  const chunk = Buffer.alloc(64 << 10, 'x');
  const metrics = { contentType: 'text/plain', exposition: async () => ({ head: '', chunks: Array.from({ length: 512 }, () => chunk) }) };
  const { server, port } = await admin(t, { metrics, stalledMs: 500 });
  const scrape = () => {
    const s = connect(port, '127.0.0.1', () => s.write('GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n'));
    s.on('error', () => {});
    s.pause();
    t.after(() => s.destroy());
    return s;
  };
  scrape(); // never read
  const slow = scrape();
  let got = 0;
  const timer = setInterval(() => { for (let c; (c = slow.read()) !== null;) got += c.length; }, 20); // ~64 KiB each time
  t.after(() => clearInterval(timer));
  const open = () => new Promise<number>((resolve) => server.getConnections((_err, n) => resolve(n)));
  for (let i = 0; i < 60 && (await open()) < 2; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(await open(), 2);
  for (let i = 0; i < 60 && (await open()) > 1; i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(await open(), 1, 'the unread answer\'s connection was closed');
  const before = got;
  await new Promise((r) => setTimeout(r, 500));
  assert.ok(got > before, `the slow reader is still served: ${before} then ${got} bytes`);
  assert.equal(await open(), 1, 'and its connection is still open at the server');
});

test('the admin routes: probes, status, metrics refusals with their headers, 404 for the rest; a callback that throws is a 500, and the port goes on', async (t) => {
  let ready = false, broken = false;
  const decisions = ['unauthenticated', 'forbidden', 'unavailable', 'overloaded', 'allowed'] as const;
  let next = 0;
  const checked: string[] = [];
  const metrics = { contentType: 'text/plain; version=0.0.4; charset=utf-8', exposition: async () => {
    if (broken) throw new Error('no exposition');
    return { head: '# head\n', chunks: [Buffer.from('m 1\n')] };
  } };
  const { port } = await admin(t, {
    metrics,
    ready: () => { if (broken) throw new Error('no readiness'); return ready; },
    status: () => ({ gateways: 1 }),
    metricsAuth: { check: async (_h, path) => { checked.push(path); return decisions[next++ % decisions.length]!; } },
  });
  const get = async (path: string, method = 'GET') => {
    const r = await request(`http://127.0.0.1:${port}${path}`, { method: method as 'GET' });
    return { status: r.statusCode, type: r.headers['content-type'], headers: r.headers, body: await r.body.text() };
  };
  const h = await get('/healthz');
  assert.deepEqual([h.status, h.type, h.body], [200, 'text/plain; charset=utf-8', 'ok']);
  assert.equal((await get('/healthz/?x=1')).body, 'ok', 'a trailing slash and a query are the same path');
  const head = await get('/healthz', 'HEAD');
  assert.deepEqual([head.status, head.headers['content-length']], [200, '2'], 'HEAD: the GET\'s headers');
  assert.deepEqual([(await get('/readyz')).status, (await get('/readyz')).body], [503, 'not ready']);
  ready = true;
  assert.deepEqual([(await get('/readyz')).status, (await get('/readyz')).body], [200, 'ok']);
  // serve's /status names every gateway's Secrets, Services and ports: behind the same check
  next = 1; // forbidden
  const s403 = await get('/status');
  assert.deepEqual([s403.status, s403.body], [403, 'Forbidden: needs get on the non-resource URL /status\n']);
  next = 4; // allowed
  const s = await get('/status');
  assert.deepEqual([s.status, s.type, JSON.parse(s.body)], [200, 'application/json; charset=utf-8', { gateways: 1 }]);
  assert.deepEqual(checked, ['/status', '/status']);
  next = 0;
  const m401 = await get('/metrics');
  assert.deepEqual([m401.status, m401.headers['www-authenticate']], [401, 'Bearer']);
  const m403 = await get('/metrics');
  assert.deepEqual([m403.status, m403.body], [403, 'Forbidden: needs get on the non-resource URL /metrics\n']);
  const m503 = await get('/metrics');
  assert.deepEqual([m503.status, m503.headers['retry-after']], [503, '1']);
  const busy = await get('/metrics');
  assert.deepEqual([busy.status, busy.headers['retry-after']], [503, '1'], 'overloaded');
  const m = await get('/metrics');
  assert.deepEqual([m.status, m.type, m.body], [200, metrics.contentType, '# head\nm 1\n']);
  // the same route however it is spelt, and HEAD too: each asks the check first
  for (const [path, method] of [['/METRICS', 'GET'], ['/metrics/', 'GET'], ['/metrics?x=1', 'GET'], ['/metrics', 'HEAD']] as const) {
    next = 0; // unauthenticated
    assert.equal((await get(path, method)).status, 401, `${method} ${path}`);
  }
  for (const [path, method] of [['/nothing', 'GET'], ['/', 'GET'], ['/healthz', 'POST'], ['/metrics', 'DELETE']] as const) {
    assert.equal((await get(path, method)).status, 404, `${method} ${path}`);
  }
  const serving = await admin(t, { status: undefined, ready: () => true });
  assert.equal((await request(`http://127.0.0.1:${serving.port}/status`)).statusCode, 404, 'no /status outside serve mode');
  broken = true;
  assert.deepEqual([(await get('/readyz')).status, (await get('/readyz')).body], [500, 'Internal Server Error\n'], 'readiness threw');
  next = 4; // allowed: the exposition fails
  assert.equal((await get('/metrics')).status, 500, 'the exposition failed');
  broken = false;
  assert.equal((await get('/healthz')).body, 'ok', 'and the port goes on');
});

/** Everything the server writes on a connection that sends `msg`, until it closes (or 3 s). */
async function exchange(port: number, msg: string): Promise<{ got: string; closed: boolean }> {
  const s = connect(port, '127.0.0.1', () => s.write(msg));
  s.on('error', () => {});
  let got = '';
  s.on('data', (d: Buffer) => { got += d.toString('latin1'); });
  const wasClosed = await closed(s);
  s.destroy();
  return { got, closed: wasClosed };
}

test('CONNECT on the admin port: a 404 like any other path\'s, with Connection: close, and the connection closed', async (t) => {
  const { port } = await admin(t);
  const { got, closed: wasClosed } = await exchange(port, 'CONNECT host:443 HTTP/1.1\r\nHost: host:443\r\n\r\n');
  assert.match(got, /^HTTP\/1\.1 404 Not Found\r\n/);
  const [head, body] = got.split('\r\n\r\n');
  assert.match(head!, /\r\ncontent-type: text\/plain; charset=utf-8\r\n/i);
  assert.match(head!, /\r\nconnection: close(\r\n|$)/i);
  assert.equal(body, 'Not Found\n', 'the body of the server\'s other 404s');
  assert.equal(wasClosed, true, 'the server closed the connection');
  // and the port goes on
  assert.equal(await (await request(`http://127.0.0.1:${port}/healthz`)).body.text(), 'ok');
});

test('a request with a body the admin port does not read: one answer, with Connection: close, and no 408 after it', async (t) => {
  // a short request timeout: without the close, Node writes "408 Request Timeout" within a second
  const { port } = await admin(t, { headersTimeoutMs: 300 });
  for (const msg of [
    'POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n', // the body never comes
    'POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n', // nor its end
    'GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody', // a body sent whole: answered, then closed
  ]) {
    const first = msg.split('\r\n')[0]!;
    const { got, closed: wasClosed } = await exchange(port, msg);
    assert.equal(got.split('HTTP/1.1 ').length - 1, 1, `${first}: one answer only: ${JSON.stringify(got)}`);
    assert.match(got, /^HTTP\/1\.1 (404 Not Found|200 OK)\r\n/, first);
    assert.match(got.split('\r\n\r\n')[0]!, /\r\nconnection: close(\r\n|$)/i, first);
    assert.equal(wasClosed, true, `${first}: closed`);
  }
  // a request without a body keeps its connection
  const r = await request(`http://127.0.0.1:${port}/healthz`);
  assert.deepEqual([r.statusCode, r.headers.connection, await r.body.text()], [200, 'keep-alive', 'ok']);
});
