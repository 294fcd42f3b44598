// A test upstream, run inside a test host's netns (see startServer in netns.ts):
//   node test-host-server.js --host IP --port P --name N [--tls-cert F --tls-key F [--h2] [--handshake-delay-ms N]]
// Every request is echoed as JSON {name, method, path, httpVersion, headers, rawHeaders, bodyLength};
// with --h2 the TLS server offers HTTP/2 as well as HTTP/1.1 (ALPN); /slow?ms=N answers
// after N ms; /bytes?n=N answers N bytes; --handshake-delay-ms holds each new connection that long before its TLS handshake; /status/CODE answers CODE; /ws is a WebSocket echo; an Upgrade to /upgrade-refuse
// is answered 200 with a body; /__requests answers how many other requests arrived (tests prove a
// refused request never reached the upstream). Prints `ready` once listening; exits on SIGTERM/SIGINT.
import { readFileSync } from 'node:fs';
import { createServer as createHttp, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttps } from 'node:https';
import { createSecureServer } from 'node:http2';
import { createServer as createNetServer } from 'node:net';
import { parseArgs } from 'node:util';
import { WebSocketServer } from 'ws';

const { values: opt } = parseArgs({
  options: {
    host: { type: 'string' }, port: { type: 'string' }, name: { type: 'string' },
    'tls-cert': { type: 'string' }, 'tls-key': { type: 'string' }, h2: { type: 'boolean' }, 'handshake-delay-ms': { type: 'string' },
  },
});
if (!opt.host || !opt.port || !opt.name) throw new Error('usage: test-host-server --host IP --port P --name N [--tls-cert F --tls-key F]');
const name = opt.name;

function echo(req: IncomingMessage, bodyLength: number) {
  return { name, method: req.method, path: req.url, httpVersion: req.httpVersion, headers: req.headers, rawHeaders: req.rawHeaders, bodyLength };
}

function send(res: ServerResponse, status: number, body: unknown): void {
  if (status === 204 || status === 304 || status < 200) {
    res.writeHead(status).end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
}

let requests = 0;

function handle(req: IncomingMessage, res: ServerResponse): void {
  if (req.url === '/__requests') return send(res, 200, { requests });
  requests++;
  let bodyLength = 0;
  req.on('data', (c: Buffer) => { bodyLength += c.length; });
  req.on('end', () => {
    const url = new URL(req.url ?? '/', 'http://test-host');
    const status = /^\/status\/(\d{3})$/.exec(url.pathname);
    if (status) return send(res, Number(status[1]), echo(req, bodyLength));
    if (url.pathname === '/bytes') {
      // N bytes, written as the client reads them
      let left = Number(url.searchParams.get('n') ?? 0);
      const chunk = Buffer.alloc(64 * 1024, 120);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': left });
      const more = () => {
        while (left > 0) {
          const c = left >= chunk.length ? chunk : chunk.subarray(0, left);
          left -= c.length;
          if (!res.write(c)) return void res.once('drain', more);
        }
        res.end();
      };
      return more();
    }
    if (url.pathname === '/slow') {
      const timer = setTimeout(() => send(res, 200, echo(req, bodyLength)), Number(url.searchParams.get('ms') ?? 1000));
      res.once('close', () => clearTimeout(timer));
      return;
    }
    send(res, 200, echo(req, bodyLength));
  });
}

const tls = opt['tls-cert'] && opt['tls-key'] ? { cert: readFileSync(opt['tls-cert']), key: readFileSync(opt['tls-key']) } : null;
const server = !tls ? createHttp(handle)
  : opt.h2 ? createSecureServer({ ...tls, allowHTTP1: true }, handle as any) as unknown as ReturnType<typeof createHttps>
    : createHttps(tls, handle);

const wss = new WebSocketServer({ noServer: true });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});

server.on('upgrade', (req, socket, head) => {
  requests++;
  socket.on('error', () => socket.destroy());
  const path = new URL(req.url ?? '/', 'http://test-host').pathname;
  if (path === '/ws') {
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  } else {
    const refuse = path === '/upgrade-refuse';
    const body = refuse ? JSON.stringify(echo(req, 0)) : '';
    socket.end(`HTTP/1.1 ${refuse ? '200 OK' : '404 Not Found'}\r\ncontent-type: application/json\r\n`
      + `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  }
});

const delay = Number(opt['handshake-delay-ms'] ?? 0);
const front = tls && delay > 0 ? createNetServer((s) => { setTimeout(() => server.emit('connection', s), delay); }) : null;
// behind `front` the server itself listens on loopback only (its connection tracking needs it)
if (front) server.listen(0, '127.0.0.1');
(front ?? server).listen(Number(opt.port), opt.host, () => process.stdout.write('ready\n'));

const shutdown = () => {
  for (const ws of wss.clients) ws.terminate();
  server.closeAllConnections();
  front?.close();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
};
process.once('SIGTERM', shutdown);
process.once('SIGINT', shutdown);
