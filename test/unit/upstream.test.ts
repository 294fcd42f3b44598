// What a team's backend's answer costs the namespace before any body (header lines, informational
// answers, trailers), through proxyRequest against real loopback servers.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, get, type RequestListener } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { Pool } from 'undici';
import { proxyRequest, type Turns } from '../../src/dataplane/upstream.js';

async function listen(t: TestContext, handler: RequestListener): Promise<number> {
  const srv = createServer(handler);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  t.after(() => { srv.closeAllConnections(); srv.close(); });
  return (srv.address() as AddressInfo).port;
}

/** A front proxying to a backend answering with `backend`: what a GET gets (status, 1xx seen, body),
 * and the starts charged to its namespace. */
async function through(t: TestContext, backend: RequestListener | undefined, port?: number) {
  const up = port ?? await listen(t, backend!);
  const pool = new Pool(`http://127.0.0.1:${up}`);
  t.after(() => pool.close());
  const charged: number[] = [];
  const turns: Turns = { tryStart: () => true, start: () => {}, charge: () => {}, wait: () => {}, chargeStarts: (_ns, n) => { if (n > 0) charged.push(n); } };
  const front = await listen(t, (req, res) => proxyRequest({ url: new URL(`http://127.0.0.1:${up}`), method: 'GET', path: '/', headers: {}, timeoutMs: 5_000, what: 'backend', pool }, req, res, {
    body: null, stalledMs: 5_000, turns, namespace: 'team-a', m: { pieceDeferred: () => {} },
    respond: (status) => res.writeHead(status),
    onError: (f) => res.writeHead(502).end(`${f.err.code} ${f.err.message}`),
  }));
  return new Promise<{ status: number; informational: number; body: string; charged: number[] }>((resolve, reject) => {
    let informational = 0;
    const req = get(`http://127.0.0.1:${front}/`, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode!, informational, body, charged }));
    });
    req.on('information', () => informational++);
    req.on('error', reject);
  });
}

const fields = (n: number, prefix = 'x-h') => Object.fromEntries(Array.from({ length: n }, (_, i) => [`${prefix}${i}`, 'v']));

test('an answer\'s header lines cost its namespace a start per 64; past 256 the answer is refused (502)', async (t) => {
  const plain = await through(t, (_req, res) => res.end('ok'));
  assert.deepEqual([plain.status, plain.body, plain.charged], [200, 'ok', []], 'a usual answer costs nothing more');
  const many = await through(t, (_req, res) => res.writeHead(200, fields(200)).end('ok'));
  assert.deepEqual([many.status, many.body], [200, 'ok']);
  assert.deepEqual(many.charged, [3]);
  const tooMany = await through(t, (_req, res) => res.writeHead(200, fields(300)).end('ok'));
  assert.equal(tooMany.status, 502);
  assert.match(tooMany.body, /30\d header fields \(at most 256\)/);
  assert.deepEqual(tooMany.charged, [4], 'charged, refused or not');
});

test('the header bound is exact: 256 fields pass, 257 are refused as a protocol error', async (t) => {
  // a raw backend: exactly `n` header lines and a content-length (no date or connection added)
  const raw = (n: number) => async () => {
    const srv = createNetServer((sock) => sock.once('data', () => sock.end(`HTTP/1.1 200 OK\r\n${'x: y\r\n'.repeat(n)}content-length: 2\r\n\r\nok`)));
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    t.after(() => srv.close());
    return (srv.address() as AddressInfo).port;
  };
  const ok = await through(t, undefined, await raw(255)());
  assert.deepEqual([ok.status, ok.body, ok.charged], [200, 'ok', [4]]);
  const refused = await through(t, undefined, await raw(256)());
  assert.equal(refused.status, 502);
  assert.match(refused.body, /^AGW_ERR_UPSTREAM_PROTOCOL backend answered with 257 header fields \(at most 256\)$/);
});

test('informational answers (103 Early Hints) are not relayed as the answer; each costs a start, and past 8 the request fails', async (t) => {
  const hinted = await through(t, (_req, res) => {
    res.writeEarlyHints({ link: '</a.css>; rel=preload' });
    res.writeEarlyHints({ link: '</b.css>; rel=preload' });
    res.end('ok');
  });
  assert.deepEqual([hinted.status, hinted.informational, hinted.body], [200, 0, 'ok']);
  assert.deepEqual(hinted.charged, [1, 1]);
  const flood = await through(t, (_req, res) => {
    for (let i = 0; i < 20; i++) res.writeEarlyHints({ link: `</${i}.css>; rel=preload` });
    res.end('ok');
  });
  assert.equal(flood.status, 502);
  assert.match(flood.body, /more than 8 informational answers/);
});

test('an answer\'s trailer lines cost its namespace a start per 64', async (t) => {
  const r = await through(t, (_req, res) => {
    res.writeHead(200, { 'transfer-encoding': 'chunked', trailer: 'x-t0' });
    res.write('o');
    res.addTrailers(fields(130, 'x-t'));
    res.end('k');
  });
  assert.deepEqual([r.status, r.body], [200, 'ok']);
  assert.deepEqual(r.charged, [2]);
});
