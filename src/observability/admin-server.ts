// The admin port: /healthz (alive), /readyz (caches synced, listeners programmed), /metrics
// (with `metricsAuth`: only for a bearer token the apiserver authenticates and authorises).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { AdminDecision } from './admin-auth.js';
import type { Exposition } from './metrics.js';

export interface AdminOptions {
  host: string;
  port: number;
  metrics: { contentType: string; exposition(): Promise<Exposition> };
  ready: () => boolean;
  /** Decides who may read /metrics (an AdminAuthorizer); absent: anyone (`--metrics-auth none`). */
  metricsAuth?: { check(authorization: string[] | undefined, path: string, source: string): Promise<AdminDecision> };
  /** `serve` mode: gateway status, shown at /status instead of written to a cluster. */
  status?: () => unknown;
  /** Time for a request's headers to arrive (default 10 s; Node's own is 60 s). */
  headersTimeoutMs?: number;
  /** A connection with nothing read or written for this long is closed (default 30 s): an answer
   * its client stopped reading. */
  stalledMs?: number;
}

const refusals: Record<Exclude<AdminDecision, 'allowed'>, [number, string]> = {
  unauthenticated: [401, 'Unauthorized: send a valid bearer token'],
  forbidden: [403, 'Forbidden: needs get on the non-resource URL'],
  unavailable: [503, 'Service Unavailable: the apiserver could not check the token'],
  overloaded: [503, 'Service Unavailable: too many token checks waiting'],
};

/** A short answer, whole (no body for HEAD: node:http drops it). */
function send(res: ServerResponse, status: number, type: string, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

const text = 'text/plain; charset=utf-8';
const notFound = 'Not Found\n';

function refuse(res: ServerResponse, d: Exclude<AdminDecision, 'allowed'>, path: string): void {
  const [status, msg] = refusals[d];
  const headers: Record<string, string> = status === 401 ? { 'www-authenticate': 'Bearer' } : status === 503 ? { 'retry-after': '1' } : {};
  send(res, status, text, `${msg}${d === 'forbidden' ? ` ${path}` : ''}\n`, headers);
}

/** Resolves true once `res` can take more, false if the connection closed first. */
function drained(res: ServerResponse): Promise<boolean> {
  if (res.destroyed) return Promise.resolve(false); // closed already: 'close' will not come again
  return new Promise((resolve) => {
    const done = (ok: boolean) => () => { res.off('drain', onDrain); res.off('close', onClose); resolve(ok); };
    const onDrain = done(true);
    const onClose = done(false);
    res.once('drain', onDrain);
    res.once('close', onClose);
  });
}

/** The path of `req`, as the routes below name it: without its query, a trailing slash, or case. */
function pathOf(req: IncomingMessage): string {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const p = (q < 0 ? url : url.slice(0, q)).toLowerCase();
  return p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p;
}

async function metrics(opts: AdminOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (opts.metricsAuth) {
    const d = await opts.metricsAuth.check(req.headersDistinct.authorization, '/metrics', req.socket.remoteAddress ?? '');
    if (d !== 'allowed') return refuse(res, d, '/metrics');
  }
  const e = await opts.metrics.exposition();
  res.writeHead(200, { 'content-type': opts.metrics.contentType });
  res.write(e.head);
  // chunk by chunk as the socket takes them: memory stays a few chunks, whatever the scrape's size
  for (const c of e.chunks) {
    if (!res.write(c) && !(await drained(res))) return;
  }
  res.end();
}

/** `serve`'s /status: every gateway's conditions (names, Secrets, Services, ports), behind the
 * same check as /metrics, for the non-resource URL /status. */
async function status(opts: AdminOptions, of: () => unknown, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (opts.metricsAuth) {
    const d = await opts.metricsAuth.check(req.headersDistinct.authorization, '/status', req.socket.remoteAddress ?? '');
    if (d !== 'allowed') return refuse(res, d, '/status');
  }
  send(res, 200, 'application/json; charset=utf-8', JSON.stringify(of()) ?? 'null');
}

/** GET (and HEAD) /healthz, /readyz, /metrics and, in `serve` mode, /status; anything else 404. */
function handle(opts: AdminOptions, req: IncomingMessage, res: ServerResponse): void {
  const path = pathOf(req);
  if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 404, text, notFound);
  if (path === '/healthz') return send(res, 200, text, 'ok');
  if (path === '/readyz') return opts.ready() ? send(res, 200, text, 'ok') : send(res, 503, text, 'not ready');
  if (path === '/status' && opts.status) return void status(opts, opts.status, req, res).catch(() => failed(res));
  if (path !== '/metrics') return send(res, 404, text, notFound);
  metrics(opts, req, res).catch(() => failed(res)); // (the token check or the exposition failed)
}

/** Whether `req` says a body follows (no route here reads one). */
function carriesBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/** The 404 of a CONNECT (no route here tunnels), written on the bare socket. */
const connectNotFound = `HTTP/1.1 404 Not Found\r\ncontent-type: ${text}\r\n`
  + `content-length: ${Buffer.byteLength(notFound)}\r\nconnection: close\r\n\r\n${notFound}`;

/** A 500 with nothing of the error in it; cut if the answer had started. */
function failed(res: ServerResponse): void {
  if (!res.headersSent) send(res, 500, text, 'Internal Server Error\n');
  else res.destroy();
}

export async function startAdminServer(opts: AdminOptions): Promise<Server> {
  // any pod may reach the port: a connection that trickles its headers is closed soon
  const headersTimeout = opts.headersTimeoutMs ?? 10_000;
  const server = createServer({ headersTimeout, requestTimeout: headersTimeout, connectionsCheckingInterval: Math.min(1000, headersTimeout) },
    (req, res) => {
      // a body no route reads: the answer closes the connection (else the connection waits for
      // the rest of the body, and its request timeout later writes an unasked-for 408 on it); what
      // arrives meanwhile is read and dropped, so the close does not reset the answer away
      if (carriesBody(req)) {
        res.setHeader('connection', 'close');
        req.resume();
      }
      try {
        handle(opts, req, res);
      } catch {
        failed(res); // (a readiness or status callback threw: the process goes on)
      }
    });
  // an answer the client does not read (a scrape is written as the socket takes it) holds its connection no longer
  const stalledMs = opts.stalledMs ?? 30_000;
  server.setTimeout(stalledMs);
  // CONNECT (node:http hands it here, else drops it unanswered): a 404 like any other path's, and the
  // connection closed; what the client sends after is dropped, and a client that never closes its
  // side is cut after the stall time
  server.on('connect', (_req: IncomingMessage, socket: Socket) => {
    socket.on('error', () => {});
    socket.setTimeout(stalledMs, () => socket.destroy());
    socket.resume();
    socket.end(connectNotFound);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}
