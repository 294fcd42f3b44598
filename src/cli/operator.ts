// access-gateway operator: watch AccessGateways, serve their listeners, write their status.
import { hostname } from 'node:os';
import { Manager } from '../controller/manager.js';
import { ListenerManager } from '../dataplane/listener-manager.js';
import { PoolRegistry } from '../dataplane/endpoints.js';
import { KubeClient, loadKubeConfig } from '../kube/client.js';
import { KubeTokenReviewer } from '../kube/token-review.js';
import { KubeKeySource, KubeRevocation } from '../kube/jwks-source.js';
import { JwksKeySet } from '../auth/jwks.js';
import { startAdminServer } from '../observability/admin-server.js';
import { createLogger } from '../observability/logger.js';
import { createRegistry } from '../observability/metrics.js';
import { hostPort, parseFlags, portRange, type FlagSpec } from './flags.js';

export const operatorFlags: FlagSpec = {
  kubeconfig: { type: 'string' },
  namespace: { type: 'string', multiple: true },
  'admin-address': { type: 'string', default: '0.0.0.0:8080' },
  'listen-address': { type: 'string', default: '0.0.0.0' },
  'advertise-address': { type: 'string' },
  'port-range': { type: 'string', default: '20000-20999' },
  'leader-elect': { type: 'boolean', default: false },
  'drain-seconds': { type: 'string', default: '10' },
  'log-level': { type: 'string', default: 'info' },
  'log-format': { type: 'string', default: 'json' },
};

export async function runOperator(args: string[]): Promise<void> {
  const f = parseFlags(args, operatorFlags);
  const log = createLogger({ level: f['log-level'], format: f['log-format'] === 'pretty' ? 'pretty' : 'json' });
  if (f['leader-elect']) throw new Error('--leader-elect is not implemented yet: run a single replica');
  const admin = hostPort(f['admin-address'], '--admin-address');
  const range = portRange(f['port-range']);
  const listenHost: string = f['listen-address'];
  const advertise: string = f['advertise-address'] ?? (listenHost === '0.0.0.0' || listenHost === '::' ? hostname() : listenHost);
  const drainMs = Number(f['drain-seconds']) * 1000;

  const kc = loadKubeConfig(f.kubeconfig);
  const client = await KubeClient.create(kc, log);
  const registry = createRegistry();
  const revocation = new KubeRevocation(client, log);
  const keySet = new JwksKeySet(new KubeKeySource(client));
  const dataplane = new ListenerManager({
    apiserver: client.apiserverConnection(), reviewer: new KubeTokenReviewer(client, registry), log, pools: new PoolRegistry(),
    jwks: { keySet, revocation },
  }, listenHost, drainMs);
  const manager = new Manager(client, dataplane, { namespaces: f.namespace ?? [], portRange: range, advertiseHost: advertise, log });
  let stopping = false;
  const adminServer = await startAdminServer({ host: admin.host, port: admin.port, registry, ready: () => !stopping && manager.ready });
  log.info({ admin: adminServer.address(), server: client.server.origin, portRange: range, namespaces: f.namespace ?? 'all' }, 'operator starting');

  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, drainMs }, 'shutting down: unready, draining listeners');
    await manager.stop();
    keySet.stop();
    await revocation.stop();
    await dataplane.closeAll(drainMs);
    adminServer.close();
    await client.close();
    log.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  await manager.start();
  log.info('caches synced');
}
