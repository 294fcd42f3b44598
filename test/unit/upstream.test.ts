// What a team's backend's answer costs the namespace before any body (header lines, informational
// answers, trailers), through proxyRequest against real loopback servers.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Agent as HttpAgent, createServer, get, type RequestListener } from 'node:http';
import { connect, createServer as createNetServer, type AddressInfo } from 'node:net';
import { Pool } from 'undici';
import { proxyRequest, proxyUpgrade, type Turns } from '../../src/dataplane/upstream.js';
import { PoolRegistry } from '../../src/dataplane/endpoints.js';
import { PausedAnswers } from '../../src/dataplane/namespace-budget.js';
import type { Dispatcher } from 'undici';

async function listen(t: TestContext, handler: RequestListener): Promise<number> {
  const srv = createServer(handler);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  t.after(() => { srv.closeAllConnections(); srv.close(); });
  return (srv.address() as AddressInfo).port;
}

/** A front proxying to a backend answering with `backend`: what a GET gets (status, 1xx seen, body),
 * and the starts charged to its namespace. */
/** A Service endpoint's pool; what its closed connections owed goes to `closed`. */
function endpointPool(port: number, closed: number[] = []): Dispatcher {
  const reg = new PoolRegistry();
  reg.charge = (_ns, n) => closed.push(n);
  return reg.acquire({ kind: 'service', namespace: 'team-a', name: 'b', port, scheme: 'http', endpoints: [], ca: null, serverName: 'b.team-a.svc', problem: null }, { ip: '127.0.0.1', port }, 'team-a').pool;
}

async function through(t: TestContext, backend: RequestListener | undefined, port?: number, endpoint: boolean | Dispatcher = false) {
  const up = port ?? await listen(t, backend!);
  // a plain undici pool, or the one a Service endpoint has (its connections metered: wire.ts)
  const pool: Dispatcher = typeof endpoint === 'object' ? endpoint : endpoint ? endpointPool(up) : new Pool(`http://127.0.0.1:${up}`);
  if (typeof endpoint !== 'object') t.after(() => pool.close());
  const charged: number[] = [];
  const turns: Turns = { tryStart: () => true, start: () => {}, charge: () => {}, wait: () => {}, chargeStarts: (_ns, n) => { if (n > 0) charged.push(n); } };
  const front = await listen(t, (req, res) => proxyRequest({ url: new URL(`http://127.0.0.1:${up}`), method: 'GET', path: '/', headers: {}, timeoutMs: 5_000, what: 'backend', pool }, req, res, {
    body: null, pace: { stalledMs: 5_000, turns, namespace: 'team-a', m: { pieceDeferred: () => {} } },
    respond: (status) => res.writeHead(status),
    onError: (f) => res.writeHead(502).end(`${f.err.code} ${f.err.message}`),
  }));
  return new Promise<{ status: number; informational: number; body: string; charged: number[]; complete: boolean }>((resolve) => {
    let informational = 0, body = '', answered = false;
    const req = get(`http://127.0.0.1:${front}/`, (res) => {
      answered = true;
      res.on('data', (c: Buffer) => { body += c; });
      res.on('error', () => {}); // cut: `complete` false
      res.on('close', () => resolve({ status: res.statusCode!, informational, body, charged, complete: res.complete }));
    });
    req.on('information', () => informational++);
    // cut before its head was read: no status
    req.on('error', () => (answered ? undefined : resolve({ status: 0, informational, body, charged, complete: false })));
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

/** A raw backend: after each request's head, a chunked answer's head and then `body` as it is. */
async function chunked(t: TestContext, body: string): Promise<number> {
  const srv = createNetServer((sock) => sock.on('error', () => {}).once('data', () => sock.end(`HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n${body}`))); // (cut: reset)
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  t.after(() => srv.close());
  return (srv.address() as AddressInfo).port;
}
const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);

test('what a Service endpoint sends that is not body (chunk extensions, padded sizes, framing) costs its namespace a start per 16 KiB', async (t) => {
  // 16 chunks of one byte, each with 40 KiB of extension: 640 KiB parsed for 16 bytes of body
  const ext = `1;e=${'x'.repeat(40 * 1024)}\r\nX\r\n`.repeat(16) + '0\r\n\r\n';
  const r = await through(t, undefined, await chunked(t, ext), true);
  assert.deepEqual([r.status, r.body, r.complete], [200, 'X'.repeat(16), true]);
  assert.ok(sum(r.charged) >= 39 && sum(r.charged) <= 41, `charged ${sum(r.charged)} starts (640 KiB / 16 KiB = 40)`);
  // the same through a pool that is not an endpoint's (a test's own): not counted
  const plain = await through(t, undefined, await chunked(t, ext));
  assert.deepEqual([plain.body, plain.charged], ['X'.repeat(16), []]);
  // a body read with its head is body, not charged as framing (its first piece is charged as a body's)
  const body = await through(t, (_req, res) => res.end('b'.repeat(60 * 1024)), undefined, true);
  assert.deepEqual([body.body.length, body.charged], [60 * 1024, []]);
  // usual framing: 20,000 one-byte chunks (~98 KiB not body) cost ~6 starts
  const small = await through(t, undefined, await chunked(t, '1\r\nX\r\n'.repeat(20_000) + '0\r\n\r\n'), true);
  assert.deepEqual([small.status, small.body.length, small.complete], [200, 20_000, true]);
  assert.ok(sum(small.charged) >= 5 && sum(small.charged) <= 7, `charged ${sum(small.charged)}`);
});

test('a Service endpoint\'s answer that sends more than 64 KiB without a head or a body piece is cut (chunk extensions, padded sizes, blank lines)', async (t) => {
  for (const flood of [`1;e=${'x'.repeat(1024 * 1024)}\r\nX\r\n0\r\n\r\n`, `${'0'.repeat(1024 * 1024)}1\r\nX\r\n0\r\n\r\n`]) {
    const port = await chunked(t, `1\r\nA\r\n${flood}`);
    const closed: number[] = [];
    const pool = endpointPool(port, closed);
    t.after(() => pool.close());
    const r = await through(t, undefined, port, pool);
    assert.equal(r.complete, false, 'cut');
    // what the cut connection read (its first read, then 64 KiB) is charged: by the answer's
    // piece, the rest when the connection closed
    const parsed = 64 + 64; // KiB: a read of at most 64 KiB, then the bound
    for (let i = 0; i < 100 && !closed.length; i++) await new Promise((resolve) => setTimeout(resolve, 20)); // (closing)
    const all = sum(r.charged) + sum(closed);
    assert.ok(all >= 64 / 16 && all <= parsed / 16 + 1, `charged ${r.charged}, closed ${closed}`);
    assert.ok(sum(closed) >= 1, 'some of it when it closed');
    // (through a pool that is not an endpoint's, the same answer is whole)
    const plain = await through(t, undefined, await chunked(t, `1\r\nA\r\n${flood}`));
    assert.deepEqual([plain.status, plain.body, plain.complete], [200, 'AX', true]);
  }
  // blank lines before the head (the parser skips them): a 502 before any answer
  const port = await (async () => {
    const srv = createNetServer((sock) => sock.on('error', () => {}).once('data', () => sock.end(`${'\r\n'.repeat(512 * 1024)}HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok`)));
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    t.after(() => srv.close());
    return (srv.address() as AddressInfo).port;
  })();
  const blank = await through(t, undefined, port, true);
  assert.equal(blank.status, 502);
  assert.match(blank.body, /^AGW_ERR_UPSTREAM_PROTOCOL Service team-a\/b endpoint 127\.0\.0\.1:\d+ sent more than 64 KiB without a head or a body piece/);
  assert.deepEqual((await through(t, undefined, port)).body, 'ok', 'whole through a pool that is not an endpoint\'s');
  // 56 KiB of extension before each piece is not cut
  const r = await through(t, undefined, await chunked(t, `1;e=${'x'.repeat(56 * 1024)}\r\nX\r\n`.repeat(4) + '0\r\n\r\n'), true);
  assert.deepEqual([r.body, r.complete], ['XXXX', true]);
});

test('an upgrade\'s answer costs its namespace as a request\'s does: a start per 64 header lines, one per informational answer', async (t) => {
  const raw = createNetServer((sock) => sock.on('error', () => {}).once('data', () => sock.end(
    `HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n${'x: y\r\n'.repeat(200)}content-length: 2\r\nconnection: close\r\n\r\nok`)));
  await new Promise<void>((r) => raw.listen(0, '127.0.0.1', () => r()));
  t.after(() => raw.close());
  const up = (raw.address() as AddressInfo).port;
  const charged: number[] = [];
  const turns: Turns = { tryStart: () => true, start: () => {}, charge: () => {}, wait: () => {}, chargeStarts: (_ns, n) => { if (n > 0) charged.push(n); } };
  const front = createServer();
  front.on('upgrade', (_req, socket) => proxyUpgrade({ url: new URL(`http://127.0.0.1:${up}`), method: 'GET', path: '/', headers: { connection: 'upgrade', upgrade: 'websocket' }, timeoutMs: 5_000, what: 'backend', agent: new HttpAgent() },
    socket, () => socket.destroy(), () => {}, () => socket.destroy(), undefined, { turns, namespace: 'team-a', m: { pieceDeferred: () => {} } }));
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', () => r()));
  t.after(() => { front.closeAllConnections(); front.close(); });
  const text = await new Promise<string>((resolve) => {
    const s = connect((front.address() as AddressInfo).port, '127.0.0.1');
    let got = '';
    s.on('data', (c: Buffer) => { got += c.toString('latin1'); });
    s.on('close', () => resolve(got));
    s.write('GET / HTTP/1.1\r\nHost: g\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
  });
  assert.match(text, /^HTTP\/1\.1 200 [^]*\r\n\r\nok$/);
  assert.deepEqual(charged, [1, 3], 'the 103, then 203 header lines');
});

test('a backend\'s unpaid bytes are charged to the namespace whose pool read them: another namespace\'s answers beside them cost it nothing', async (t) => {
  const reg = new PoolRegistry();
  const charges: Array<[string, number]> = [];
  reg.charge = (ns, n) => charges.push([ns, n]);
  const target = (ns: string, port: number) => reg.acquire({ kind: 'service', namespace: ns, name: 'b', port, scheme: 'http', endpoints: [], ca: null, serverName: `b.${ns}.svc`, problem: null }, { ip: '127.0.0.1', port }, ns).pool;
  const flood = await chunked(t, `1\r\nA\r\n1;e=${'x'.repeat(1024 * 1024)}\r\nX\r\n0\r\n\r\n`);
  const plain = await chunked(t, `1;e=${'x'.repeat(8 * 1024)}\r\nB\r\n0\r\n\r\n`);
  const [a, b] = [target('team-a', flood), target('team-b', plain)];
  t.after(() => Promise.all([a.close(), b.close()]));
  // team-a's cut answers and team-b's answers interleaved, on connections of their own pools
  const runs = await Promise.all(Array.from({ length: 10 }, (_, i) => through(t, undefined, i % 2 ? plain : flood, i % 2 ? b : a)));
  for (let i = 1; i < 10; i += 2) assert.deepEqual([runs[i]!.body, runs[i]!.complete, runs[i]!.charged], ['B', true, []], 'team-b: whole, nothing charged');
  for (let i = 0; i < 10; i += 2) assert.equal(runs[i]!.complete, false, 'team-a: cut');
  for (let i = 0; i < 100 && charges.length < 5; i++) await new Promise((resolve) => setTimeout(resolve, 20)); // (closing)
  assert.ok(charges.length >= 5, JSON.stringify(charges));
  assert.deepEqual([...new Set(charges.map(([ns]) => ns))], ['team-a'], 'only the namespace whose pool read the flood');
});

test('a call whose new connections are costly (the apiserver\'s TLS) charges them: when its client leaves mid-answer (the pool\'s connection ends), and for each upgrade; not for an answer read whole', async (t) => {
  const up = await listen(t, (req, res) => {
    if (req.url === '/watch') { res.writeHead(200); res.write('event\n'); return; } // streams for ever
    res.writeHead(200, { 'content-length': '2' }).end('ok');
  });
  const pool = new Pool(`http://127.0.0.1:${up}`);
  t.after(() => pool.close());
  const charged: number[] = [];
  const turns: Turns = { tryStart: () => true, start: () => {}, charge: () => {}, wait: () => {}, chargeStarts: (_ns, n) => { if (n > 0) charged.push(n); } };
  const front = await listen(t, (req, res) => proxyRequest({ url: new URL(`http://127.0.0.1:${up}`), method: 'GET', path: req.url!, headers: {}, timeoutMs: 5_000, what: 'the apiserver', pool, connectStarts: 3 }, req, res, {
    body: null, pace: { stalledMs: 5_000, turns, namespace: 'team-a', m: { pieceDeferred: () => {} } },
    respond: (status) => res.writeHead(status),
    onError: (f) => res.writeHead(502).end(f.err.message),
  }));
  const body = await new Promise<string>((resolve) => get(`http://127.0.0.1:${front}/whole`, (res) => { let b = ''; res.on('data', (c: Buffer) => { b += c; }); res.on('end', () => resolve(b)); }));
  assert.equal(body, 'ok');
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(charged, [], 'an answer read whole: its connection is kept');
  await new Promise<void>((resolve) => {
    const req = get(`http://127.0.0.1:${front}/watch`, (res) => res.once('data', () => { req.destroy(); resolve(); }));
    req.on('error', () => {});
  });
  for (let i = 0; i < 50 && charged.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(charged, [3], 'a watch its client left: the connection it ended');
  // an upgrade makes a connection each time
  const upgraded: number[] = [];
  const uturns: Turns = { ...turns, chargeStarts: (_ns, n) => { if (n > 0) upgraded.push(n); } };
  const ufront = createServer();
  ufront.on('upgrade', (_req, socket) => proxyUpgrade({ url: new URL(`http://127.0.0.1:${up}`), method: 'GET', path: '/whole', headers: { connection: 'upgrade', upgrade: 'websocket' }, timeoutMs: 5_000, what: 'the apiserver', agent: new HttpAgent(), connectStarts: 3 },
    socket, () => socket.destroy(), () => {}, () => socket.destroy(), undefined, { turns: uturns, namespace: 'team-a', m: { pieceDeferred: () => {} } }));
  await new Promise<void>((r) => ufront.listen(0, '127.0.0.1', () => r()));
  t.after(() => { ufront.closeAllConnections(); ufront.close(); });
  await new Promise<void>((resolve) => {
    const s = connect((ufront.address() as AddressInfo).port, '127.0.0.1');
    s.on('data', () => {});
    s.on('close', () => resolve());
    s.write('GET / HTTP/1.1\r\nHost: g\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
  });
  assert.equal(upgraded[0], 3);
});

test('answers waiting for clients that do not read are bounded per namespace: past it the longest waiting is cut; another namespace\'s are not', async (t) => {
  const chunk = Buffer.alloc(64 * 1024, 'x');
  const up = await listen(t, (_req, res) => {
    res.writeHead(200);
    const pump = () => { while (res.write(chunk)); res.once('drain', pump); };
    pump();
  });
  const pool = new Pool(`http://127.0.0.1:${up}`);
  t.after(() => pool.destroy()); // (its answers never end)
  const paused = new PausedAnswers(2);
  const turns: Turns = { tryStart: () => true, start: () => {}, charge: () => {}, wait: () => {}, chargeStarts: () => {} };
  const answers: { destroyed: boolean }[] = []; // the gateway's side of each, in order
  const front = await listen(t, (req, res) => answers.push(res) && proxyRequest({ url: new URL(`http://127.0.0.1:${up}`), method: 'GET', path: '/', headers: {}, timeoutMs: 5_000, what: 'backend', pool }, req, res, {
    body: null, pace: { stalledMs: 60_000, turns, namespace: req.url!.slice(1), m: { pieceDeferred: () => {} }, paused },
    respond: (status) => res.writeHead(status),
    onError: (f) => res.writeHead(502).end(f.err.message),
  }));
  const reader = (ns: string) => {
    const s = connect(front, '127.0.0.1');
    const i = answers.length;
    s.on('error', () => {});
    s.write(`GET /${ns} HTTP/1.1\r\nHost: g\r\n\r\n`);
    s.once('data', () => s.pause()); // the head, then nothing more read
    t.after(() => s.destroy());
    return { closed: () => answers[i]?.destroyed === true, leave: () => s.destroy() };
  };
  const until = async (f: () => boolean) => { for (let i = 0; i < 200 && !f(); i++) await new Promise((r) => setTimeout(r, 20)); return f(); };
  const a1 = reader('team-a');
  assert.ok(await until(() => paused.waiting('team-a') === 1));
  const a2 = reader('team-a');
  assert.ok(await until(() => paused.waiting('team-a') === 2));
  const b1 = reader('team-b');
  assert.ok(await until(() => paused.waiting('team-b') === 1));
  assert.equal(a1.closed(), false);
  const a3 = reader('team-a');
  assert.ok(await until(() => a1.closed()), 'team-a\'s longest waiting answer was cut');
  assert.ok(await until(() => paused.waiting('team-a') === 2));
  assert.deepEqual([a2.closed(), a3.closed(), b1.closed()], [false, false, false]);
  // a client that leaves gives its place back
  a2.leave();
  assert.ok(await until(() => paused.waiting('team-a') === 1));
});

// An upgrade the upstream answers without switching (a team's backend answering 200 and a body
// without end): relayed as an answer, its client that reads nothing is counted and cut as one.
test('an upgrade answered without switching: a client that reads nothing is counted among the paused, cut past the bound and when it stalls', async (t) => {
  const chunk = Buffer.alloc(64 * 1024, 'x');
  const raw = createNetServer((sock) => sock.on('error', () => {}).once('data', () => {
    sock.write('HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n');
    const pump = () => { while (sock.write(chunk)); sock.once('drain', pump); };
    pump();
  }));
  await new Promise<void>((r) => raw.listen(0, '127.0.0.1', () => r()));
  t.after(() => raw.close());
  const up = (raw.address() as AddressInfo).port;
  const paused = new PausedAnswers(1);
  const turns: Turns = { tryStart: () => true, start: () => {}, charge: () => {}, wait: () => {}, chargeStarts: () => {} };
  const sockets: { destroyed: boolean }[] = [];
  const front = createServer();
  front.on('upgrade', (req, socket) => {
    sockets.push(socket);
    const [, ns, stall] = req.url!.split('/');
    proxyUpgrade({ url: new URL(`http://127.0.0.1:${up}`), method: 'GET', path: '/', headers: { connection: 'upgrade', upgrade: 'websocket' }, timeoutMs: 5_000, what: 'backend', agent: new HttpAgent() },
      socket, () => socket.destroy(), () => {}, () => socket.destroy(), undefined, { turns, namespace: ns!, m: { pieceDeferred: () => {} }, paused, stalledMs: Number(stall) });
  });
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', () => r()));
  t.after(() => { front.closeAllConnections(); front.close(); });
  const reader = (path: string) => {
    const s = connect((front.address() as AddressInfo).port, '127.0.0.1');
    const i = sockets.length;
    s.on('error', () => {});
    s.write(`GET ${path} HTTP/1.1\r\nHost: g\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`);
    s.once('data', () => s.pause()); // the head, then nothing more read
    t.after(() => s.destroy());
    return { closed: () => sockets[i]?.destroyed === true };
  };
  const until = async (f: () => boolean) => { for (let i = 0; i < 250 && !f(); i++) await new Promise((r) => setTimeout(r, 20)); return f(); };
  const a1 = reader('/team-a/60000');
  assert.ok(await until(() => paused.waiting('team-a') === 1), 'counted while its client reads nothing');
  const b1 = reader('/team-b/60000');
  assert.ok(await until(() => paused.waiting('team-b') === 1));
  const a2 = reader('/team-a/60000');
  assert.ok(await until(() => a1.closed()), 'team-a\'s longest waiting was cut');
  assert.ok(await until(() => paused.waiting('team-a') === 1));
  assert.deepEqual([a2.closed(), b1.closed()], [false, false]);
  // one that waits its stalledMs is cut, and its place given back
  const c1 = reader('/team-c/300');
  assert.ok(await until(() => paused.waiting('team-c') === 1));
  assert.ok(await until(() => c1.closed()), 'cut once stalled');
  assert.equal(paused.waiting('team-c'), 0);
});
