// The admin port: /healthz (alive), /readyz (caches synced, listeners programmed), /metrics
// (with `metricsAuth`: only for a bearer token the apiserver authenticates and authorises).
import express, { type Response } from 'express';
import { createServer, type Server } from 'node:http';
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

function refuse(res: Response, d: Exclude<AdminDecision, 'allowed'>, path: string): void {
  const [status, text] = refusals[d];
  if (status === 401) res.set('WWW-Authenticate', 'Bearer');
  if (status === 503) res.set('Retry-After', '1');
  res.status(status).type('text/plain').send(`${text}${d === 'forbidden' ? ` ${path}` : ''}\n`);
}

/** Resolves true once `res` can take more, false if the connection closed first. */
function drained(res: Response): Promise<boolean> {
  if (res.destroyed) return Promise.resolve(false); // closed already: 'close' will not come again
  return new Promise((resolve) => {
    const done = (ok: boolean) => () => { res.off('drain', onDrain); res.off('close', onClose); resolve(ok); };
    const onDrain = done(true);
    const onClose = done(false);
    res.once('drain', onDrain);
    res.once('close', onClose);
  });
}

export async function startAdminServer(opts: AdminOptions): Promise<Server> {
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag'); // a hash over every scrape (megabytes with many gateways) that no scraper sends back
  app.get('/healthz', (_req, res) => { res.type('text/plain').send('ok'); });
  app.get('/readyz', (_req, res) => {
    if (opts.ready()) res.type('text/plain').send('ok');
    else res.status(503).type('text/plain').send('not ready');
  });
  const status = opts.status;
  if (status) app.get('/status', (_req, res) => { res.json(status()); });
  app.get('/metrics', async (req, res) => {
    if (opts.metricsAuth) {
      const d = await opts.metricsAuth.check(req.headersDistinct.authorization, '/metrics', req.socket.remoteAddress ?? '');
      if (d !== 'allowed') return refuse(res, d, '/metrics');
    }
    const e = await opts.metrics.exposition();
    res.type(opts.metrics.contentType);
    res.write(e.head);
    // chunk by chunk as the socket takes them: memory stays a few chunks, whatever the scrape's size
    for (const c of e.chunks) {
      if (!res.write(c) && !(await drained(res))) return;
    }
    res.end();
  });
  // any pod may reach the port: a connection that trickles its headers is closed soon
  const headersTimeout = opts.headersTimeoutMs ?? 10_000;
  const server = createServer({ headersTimeout, requestTimeout: headersTimeout, connectionsCheckingInterval: Math.min(1000, headersTimeout) }, app);
  // an answer the client does not read (a scrape is written as the socket takes it) holds its connection no longer
  server.setTimeout(opts.stalledMs ?? 30_000);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}
