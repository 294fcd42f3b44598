// The admin port: /healthz (alive), /readyz (caches synced, listeners programmed), /metrics.
import express from 'express';
import type { Server } from 'node:http';
import type { Registry } from 'prom-client';

export interface AdminOptions {
  host: string;
  port: number;
  registry: Registry;
  ready: () => boolean;
  /** `serve` mode: gateway status, shown at /status instead of written to a cluster. */
  status?: () => unknown;
}

export async function startAdminServer(opts: AdminOptions): Promise<Server> {
  const app = express();
  app.disable('x-powered-by');
  app.get('/healthz', (_req, res) => { res.type('text/plain').send('ok'); });
  app.get('/readyz', (_req, res) => {
    if (opts.ready()) res.type('text/plain').send('ok');
    else res.status(503).type('text/plain').send('not ready');
  });
  const status = opts.status;
  if (status) app.get('/status', (_req, res) => { res.json(status()); });
  app.get('/metrics', async (_req, res) => {
    res.type(opts.registry.contentType).send(await opts.registry.metrics());
  });
  return new Promise((resolve, reject) => {
    const server = app.listen(opts.port, opts.host, (err?: Error) => (err ? reject(err) : resolve(server)));
    server.once('error', reject);
  });
}
