// access-gateway operator: watch AccessGateways, serve their listeners, write their status.
import { hostname } from 'node:os';
import { Manager, type GatewayEvents } from '../controller/manager.js';
import { FileSource } from '../controller/file-source.js';
import { publishable } from '../controller/exposure.js';
import { Replicas } from '../kube/replicas.js';
import type { AccessGateway, AccessGatewayStatus } from '../api/types.js';
import { ListenerManager } from '../dataplane/listener-manager.js';
import { PoolRegistry } from '../dataplane/endpoints.js';
import { KubeClient, loadKubeConfig } from '../kube/client.js';
import { KubeTokenReviewer } from '../kube/token-review.js';
import { KubeAdminReviewer } from '../kube/admin-review.js';
import { LeaderElector } from '../kube/leader.js';
import { KubeKeySource, KubeRevocation } from '../kube/jwks-source.js';
import { JwksKeySet, JwksReadiness } from '../auth/jwks.js';
import { FairLimiter, LimitedReviewer } from '../auth/review-limiter.js';
import { startAdminServer } from '../observability/admin-server.js';
import { AdminAuthorizer } from '../observability/admin-auth.js';
import { createLogger } from '../observability/logger.js';
import { createMetrics } from '../observability/metrics.js';
import { hostPort, intFlag, parseFlags, portRange, type FlagSpec } from './flags.js';

export const operatorFlags: FlagSpec = {
  kubeconfig: { type: 'string' },
  namespace: { type: 'string', multiple: true },
  'admin-address': { type: 'string', default: '0.0.0.0:8080' },
  'metrics-auth': { type: 'string', default: 'kubernetes' },
  'listen-address': { type: 'string', default: '0.0.0.0' },
  'advertise-address': { type: 'string' },
  'no-expose': { type: 'boolean', default: false },
  'replica-selector': { type: 'string' },
  'port-range': { type: 'string', default: '20000-20999' },
  'leader-elect': { type: 'boolean', default: false },
  'leader-election-namespace': { type: 'string' },
  'leader-election-id': { type: 'string', default: 'access-gateway-operator' },
  'drain-seconds': { type: 'string', default: '10' },
  'max-gateways-per-namespace': { type: 'string', default: '16' },
  'max-connections-per-listener': { type: 'string', default: '4096' },
  'header-timeout-seconds': { type: 'string', default: '10' },
  'idle-timeout-seconds': { type: 'string', default: '65' },
  'max-token-reviews-in-flight': { type: 'string', default: '16' },
  'jwks-clock-skew-seconds': { type: 'string', default: '5' },
  'log-level': { type: 'string', default: 'info' },
  'log-format': { type: 'string', default: 'json' },
};

export const serveFlags: FlagSpec = {
  gateways: { type: 'string', multiple: true },
  kubeconfig: { type: 'string' },
  'admin-address': { type: 'string', default: '127.0.0.1:8080' },
  'metrics-auth': { type: 'string', default: 'none' },
  'listen-address': { type: 'string', default: '127.0.0.1' },
  'port-range': { type: 'string', default: '20000-20999' },
  'drain-seconds': { type: 'string', default: '2' },
  'max-connections-per-listener': { type: 'string', default: '4096' },
  'header-timeout-seconds': { type: 'string', default: '10' },
  'idle-timeout-seconds': { type: 'string', default: '65' },
  'max-token-reviews-in-flight': { type: 'string', default: '16' },
  'jwks-clock-skew-seconds': { type: 'string', default: '5' },
  'log-level': { type: 'string', default: 'info' },
  'log-format': { type: 'string', default: 'json' },
};

/** access-gateway operator: gateways from the cluster, status to the cluster. */
export async function runOperator(args: string[]): Promise<void> {
  const f = parseFlags(args, operatorFlags);
  await run(f, 'operator');
}

/** access-gateway serve: gateways from files (re-read on change), status on the admin port and in logs. */
export async function runServe(args: string[]): Promise<void> {
  const f = parseFlags(args, serveFlags);
  if (!f.gateways?.length) throw new Error('serve: --gateways FILE|DIR is required');
  await run(f, 'serve');
}

async function run(f: Record<string, any>, mode: 'operator' | 'serve'): Promise<void> {
  const log = createLogger({ level: f['log-level'], format: f['log-format'] === 'pretty' ? 'pretty' : 'json' });
  const admin = hostPort(f['admin-address'], '--admin-address');
  const range = portRange(f['port-range']);
  const listenHost: string = f['listen-address'];
  const advertise: string = f['advertise-address'] ?? (listenHost === '0.0.0.0' || listenHost === '::' ? hostname() : listenHost);
  const drainMs = intFlag(f['drain-seconds'], 'drain-seconds', 0, 3600) * 1000;
  const limits = {
    maxConnections: intFlag(f['max-connections-per-listener'], 'max-connections-per-listener', 1, 1_000_000),
    headersTimeoutMs: intFlag(f['header-timeout-seconds'], 'header-timeout-seconds', 1, 3600) * 1000,
    idleTimeoutMs: intFlag(f['idle-timeout-seconds'], 'idle-timeout-seconds', 1, 3600) * 1000,
  };
  const maxGatewaysPerNamespace = mode === 'operator' ? intFlag(f['max-gateways-per-namespace'], 'max-gateways-per-namespace', 0, 100_000) : 0;
  const metricsAuth: string = f['metrics-auth'];
  if (metricsAuth !== 'kubernetes' && metricsAuth !== 'none') {
    throw new Error(`--metrics-auth: expected kubernetes or none, got ${JSON.stringify(metricsAuth)}`);
  }
  const maxReviews = intFlag(f['max-token-reviews-in-flight'], 'max-token-reviews-in-flight', 1, 1000);
  const clockSkewSeconds = intFlag(f['jwks-clock-skew-seconds'], 'jwks-clock-skew-seconds', 0, 60);

  const kc = loadKubeConfig(f.kubeconfig);
  const client = await KubeClient.create(kc, log);
  const metrics = createMetrics();
  const registry = metrics.registry;
  const revocation = new KubeRevocation(client, log, metrics);
  const keySet = new JwksKeySet(new KubeKeySource(client), { onRefresh: () => metrics.jwksRefreshes.inc() });
  const jwksReadiness = new JwksReadiness(keySet, revocation);
  const reviewLimiter = new FairLimiter({
    maxInFlight: maxReviews,
    onInFlight: (n) => metrics.tokenReviewsInFlight.set(n),
    onRefused: (namespace, reason) => metrics.tokenReviewRefusals.inc({ namespace, reason }),
    onNamespace: (namespace) => { for (const reason of ['queue_full', 'timeout']) metrics.tokenReviewRefusals.inc({ namespace, reason }, 0); },
  });
  metrics.tokenReviewsInFlight.set(0);
  const dataplane = new ListenerManager({
    apiserver: client.apiserverConnection(), reviewer: new LimitedReviewer(new KubeTokenReviewer(client, metrics), reviewLimiter),
    log, pools: new PoolRegistry(), metrics, jwks: { keySet, revocation }, clockSkewSeconds,
  }, listenHost, drainMs, limits);
  let files: FileSource | undefined;
  // the ready operator pods (in a cluster: --replica-selector, e.g. app.kubernetes.io/name=access-gateway)
  const replicas = mode === 'operator' && f['replica-selector']
    ? new Replicas(client, process.env.POD_NAMESPACE ?? 'default', f['replica-selector'], log, () => manager.resyncAll())
    : undefined;
  let elector: LeaderElector | undefined;
  if (mode === 'operator' && f['leader-elect']) {
    const identity = process.env.POD_NAME ?? `${hostname()}_${process.pid}`;
    elector = new LeaderElector(client, {
      namespace: f['leader-election-namespace'] ?? process.env.POD_NAMESPACE ?? 'default',
      name: f['leader-election-id'], identity, log,
      onStartedLeading: () => { metrics.leader.set(1); manager.resyncAll(); },
      onStoppedLeading: () => metrics.leader.set(0),
    });
  } else {
    metrics.leader.set(1);
  }
  const statuses = new Map<string, AccessGatewayStatus>();
  const manager = new Manager(client, dataplane, {
    namespaces: f.namespace ?? [], portRange: range, maxGatewaysPerNamespace, advertiseHost: advertise, log, metrics, jwksReady: jwksReadiness,
    ...(elector ? { isLeader: () => elector!.isLeader } : {}),
    // in a cluster the pod's own address (POD_IP); outside, --advertise-address when it is publishable
    ...(mode === 'operator' && !f['no-expose'] ? {
      exposeAddresses: () => (replicas ? replicas.addresses() : [process.env.POD_IP ?? advertise].filter(publishable)),
    } : {}),
    ...(mode === 'serve' ? {
      source: (onEvent: GatewayEvents) => (files = new FileSource(f.gateways, onEvent, log)),
      writeStatus: async (gw: AccessGateway, status: AccessGatewayStatus) => {
        statuses.set(`${gw.metadata.namespace}/${gw.metadata.name}`, status);
        files!.setStatus(gw, status);
        const ready = status.conditions?.find((c) => c.type === 'Ready');
        log.info({ gateway: `${gw.metadata.namespace}/${gw.metadata.name}`, port: status.listener?.port, ready: ready?.status, reason: ready?.reason, message: ready?.message }, 'gateway status');
      },
    } : {}),
  });
  let stopping = false;
  const adminServer = await startAdminServer({
    host: admin.host, port: admin.port, registry, ready: () => !stopping && manager.ready,
    ...(metricsAuth === 'kubernetes' ? { metricsAuth: new AdminAuthorizer(new KubeAdminReviewer(client, metrics), { metrics, log }) } : {}),
    status: mode === 'serve' ? () => ({
      gateways: Object.fromEntries([...statuses].filter(([k]) => files?.get(...(k.split('/') as [string, string])))),
      fileProblems: Object.fromEntries(files?.problems ?? []),
    }) : undefined,
  });
  log.info({ mode, admin: adminServer.address(), metricsAuth, server: client.server.origin, portRange: range, namespaces: f.namespace ?? 'all' }, 'starting');

  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, drainMs }, 'shutting down: unready, draining listeners');
    await elector?.stop(); // releases the Lease at once
    await replicas?.stop();
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
  elector?.start();
  replicas?.start();
  await manager.start();
  log.info('caches synced');
}
