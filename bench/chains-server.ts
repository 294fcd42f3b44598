// The listeners of bench/chains.ts, in a process of their own: team-a's with a client CA (its
// handshakes metered), team-b's without (native TLS), one token accepted. Prints their ports as
// JSON; on SIGUSR2 prints the event loop's largest delay since the last one ("maxdelay MS").
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { applyDefaults } from '../src/api/defaults.js';
import type { AccessGateway } from '../src/api/types.js';
import { PoolRegistry } from '../src/dataplane/endpoints.js';
import { defaultLimits } from '../src/dataplane/listener.js';
import { ListenerManager } from '../src/dataplane/listener-manager.js';
import type { DataplaneDeps } from '../src/dataplane/route-table.js';
import { silentLogger } from '../src/observability/logger.js';
import { testMetrics } from '../src/observability/metrics.js';
import { translate } from '../src/translate/translate.js';

const [dir, token] = process.argv.slice(2) as [string, string];
const file = (f: string) => readFileSync(join(dir, f), 'utf8');
const deps = {
  apiserver: {}, log: silentLogger, pools: new PoolRegistry(), metrics: testMetrics(),
  reviewer: { review: async (t: string) => t === token
    ? { authenticated: true, user: { username: 'bench', uid: '', groups: [], extra: {} }, audiences: ['gw'] }
    : { authenticated: false, error: 'no' } },
} as unknown as DataplaneDeps;
const m = new ListenerManager(deps, '127.0.0.1', 0, defaultLimits);
const plan = (namespace: string, port: number) => translate(applyDefaults({
  apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: 'gw', namespace, generation: 1 },
  spec: { authentication: { audiences: ['gw'] }, access: [{ users: ['bench'] }], routes: [{ name: 'r', pathPrefix: '/', apiserver: {} }] },
} as unknown as AccessGateway), { port: { port } }).plan!;
const tls = { secretName: 's', cert: file('listener.crt'), key: file('listener.key'), notAfter: 0 };
const [a, b] = [Number(process.argv[4]), Number(process.argv[5])];
await m.apply('team-a/gw', { ...plan('team-a', a), tls: { ...tls, clientCA: { ref: 'bench', pem: file('clients.crt'), required: false, prefix: 'team:team-a:', notAfter: 0 } } });
await m.apply('team-b/gw', { ...plan('team-b', b), tls: { ...tls, clientCA: null } });
const h = monitorEventLoopDelay({ resolution: 1 });
h.enable();
process.on('SIGUSR2', () => {
  console.log(`maxdelay ${(h.max / 1e6).toFixed(1)}`);
  h.reset();
});
console.log(JSON.stringify({ a, b }));
