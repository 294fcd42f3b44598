// The floor the gateway is measured against: a bare Node.js reverse proxy, node:http in front of
// an undici Pool, no authentication, no policy, no metrics.
//   node lean-proxy.js --port P --upstream http://IP:PORT
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';

const { values } = parseArgs({ options: { port: { type: 'string' }, upstream: { type: 'string' } } });
// (keep-alive as the gateway's endpoint pools: undici's default 4 s closed the warm-up's connections
// before the first measured round)
const pool = new Pool(values.upstream!, { connections: 128, pipelining: 1, keepAliveTimeout: 60_000, keepAliveMaxTimeout: 60_000 });
const noop = (): void => {};
const hop = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'host']);

createServer(async (req, res) => {
  const headers: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && !hop.has(k)) headers[k] = v;
  let up;
  try {
    up = await pool.request({ method: req.method as 'GET', path: req.url!, headers, body: req.method === 'GET' || req.method === 'HEAD' ? null : req });
  } catch {
    res.writeHead(502).end();
    return;
  }
  if (res.destroyed) { // its client has gone
    up.body.on('error', noop).destroy();
    return;
  }
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(up.headers)) if (v !== undefined && !hop.has(k)) out[k] = v;
  res.writeHead(up.statusCode, out);
  up.body.pipe(res);
  // (pipe() alone left an answer unread when its client had gone: its upstream connection was held
  // for good, and a few rounds' ends took the whole pool. pipeline() costs twice the CPU a request.)
  res.once('close', () => {
    if (!up.body.readableEnded) up.body.on('error', noop).destroy();
  });
}).listen(Number(values.port), '127.0.0.1', () => process.stdout.write('ready\n'));
process.once('SIGTERM', () => process.exit(0)); // exits cleanly, so --cpu-prof writes its profile
