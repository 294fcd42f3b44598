// What `operator` and `serve` share: the flags both take, logger, apiserver client, metrics, the
// data plane (listeners, authentication, JWKS), the admin server and an orderly shutdown.
import type { Server } from 'node:http';
import type { Logger } from 'pino';
import { JwksKeySet, JwksReadiness } from '../auth/jwks.js';
import { FairLimiter, LimitedReviewer } from '../auth/review-limiter.js';
import { ImpersonationChecker } from '../auth/impersonation.js';
import type { JwtAuthenticator, OidcIssuers } from '../auth/oidc.js';
import { CachingRequestReviewer } from '../auth/request-info.js';
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { KubeAccessReviewer } from '../kube/access-review.js';
import { PoolRegistry } from '../dataplane/endpoints.js';
import { defaultFilterLimits, FilterChecks } from '../dataplane/filter-checks.js';
import { ListenerManager } from '../dataplane/listener-manager.js';
import { defaultLimits } from '../dataplane/listener.js';
import { boundConnections } from '../dataplane/namespace-budget.js';
import { KubeAdminReviewer } from '../kube/admin-review.js';
import { KubeClient, loadKubeConfig } from '../kube/client.js';
import { KubeKeySource, KubeRevocation } from '../kube/jwks-source.js';
import { KubeTokenReviewer } from '../kube/token-review.js';
import { AdminAuthorizer } from '../observability/admin-auth.js';
import { startAdminServer } from '../observability/admin-server.js';
import { accessLogFor, createLogger, drainLogs } from '../observability/logger.js';
import { createMetrics, type Metrics } from '../observability/metrics.js';
import { flag, type Parsed } from './flags.js';

/** Connections the admin port holds at most (any pod may reach it): past that, the oldest of the
 * address holding the most, or of all, is closed: a new probe or scrape is accepted (README: one in progress may still be closed). */
export const adminConnections = 256;

/** Flags of both commands; each command adds its own and picks the defaults that suit it. */
export const commonFlags = (defaults: { admin: string; listen: string; drain: number; metricsAuth: 'kubernetes' | 'none' }) => ({
  kubeconfig: flag.optional(),
  'admin-address': flag.hostPort(defaults.admin),
  'metrics-auth': flag.oneOf(['kubernetes', 'none'], defaults.metricsAuth),
  'listen-address': flag.string(defaults.listen),
  'port-range': flag.portRange('20000-20999'),
  'requestable-ports': flag.portRange('1-65535', 'requestable-ports'),
  'drain-seconds': flag.int(defaults.drain, 0, 3600),
  'max-connections-per-listener': flag.int(4096, 1, 1_000_000),
  'max-connections-per-namespace': flag.int(1024, 0, 1_000_000),
  'max-unadmitted-connections': flag.int(2048, 0, 1_000_000),
  'max-cached-callers-per-namespace': flag.int(10_000, 0, 10_000_000),
  'max-metric-series-per-namespace': flag.int(20_000, 0, 10_000_000),
  'requests-per-turn-per-namespace': flag.int(4, 0, 100_000),
  'max-apiserver-requests-per-namespace': flag.int(0, 0, 100_000),
  'max-paused-answers-per-namespace': flag.int(32, 0, 1_000_000),
  'tls-handshake-percent': flag.int(50, 1, 100),
  'endpoint-addresses': flag.oneOf(['pods', 'any'], 'pods'),
  'min-access-log': flag.oneOf(['none', 'errors', 'all'], 'none'),
  'audit-extras': flag.oneOf(['all', 'none'], 'all'),
  'header-timeout-seconds': flag.int(10, 1, 3600),
  'idle-timeout-seconds': flag.int(65, 1, 3600),
  'max-token-reviews-in-flight': flag.int(16, 1, 1000),
  'max-token-reviews-per-second': flag.int(500, 1, 100_000),
  'jwks-clock-skew-seconds': flag.int(5, 0, 60),
  'authentication-config': flag.optional(),
  'log-level': flag.oneOf(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'], 'info'),
  'log-format': flag.oneOf(['json', 'pretty'], 'json'),
});
export type CommonFlags = Parsed<ReturnType<typeof commonFlags>>;

export interface Runtime {
  log: Logger;
  client: KubeClient;
  metrics: Metrics;
  dataplane: ListenerManager;
  jwksReadiness: JwksReadiness;
  /** The platform's OIDC issuers (--authentication-config) by URL: null when usable, else why not. */
  issuers: Record<string, string | null>;
  /** Starts the admin port: /healthz, /readyz (ready() and not stopping), /metrics, and `status` at /status. */
  serveAdmin(ready: () => boolean, status?: () => unknown): Promise<Server>;
  /** On SIGTERM/SIGINT: unready at once, then `stop` (the command's parts), then the shared parts; exit 0. */
  onShutdown(stop: () => Promise<void>): void;
}

export async function startRuntime(f: CommonFlags): Promise<Runtime> {
  const log = createLogger({ level: f['log-level'], format: f['log-format'] });
  const client = await KubeClient.create(loadKubeConfig(f.kubeconfig), log);
  const metrics = createMetrics(undefined, { maxSeriesPerNamespace: f['max-metric-series-per-namespace'] });
  const revocation = new KubeRevocation(client, log, metrics);
  const keySet = new JwksKeySet(new KubeKeySource(client), { onRefresh: () => metrics.jwksRefreshes.inc() });
  const reviewLimiter = new FairLimiter({
    maxInFlight: f['max-token-reviews-in-flight'], perSecond: f['max-token-reviews-per-second'],
    onInFlight: (n) => metrics.tokenReviewsInFlight.set(n),
    onRefused: (namespace, reason) => metrics.tokenReviewRefusals.inc({ namespace, reason }),
    onPostponed: (namespace) => metrics.reviewRenewalsPostponed.inc({ namespace, review: 'TokenReview' }),
    onNamespace: (namespace) => {
      for (const reason of ['queue_full', 'source_full', 'timeout']) metrics.tokenReviewRefusals.inc({ namespace, reason }, 0);
      metrics.reviewRenewalsPostponed.inc({ namespace, review: 'TokenReview' }, 0);
    },
  });
  metrics.tokenReviewsInFlight.set(0);
  metrics.impersonationReviewsInFlight.set(0);
  // callers' own impersonation requests (kubectl --as): SubjectAccessReviews, as fairly limited
  const accessReviewLimiter = new FairLimiter({
    maxInFlight: f['max-token-reviews-in-flight'], perSecond: f['max-token-reviews-per-second'], what: 'impersonation check',
    onInFlight: (n) => metrics.impersonationReviewsInFlight.set(n),
    onRefused: () => metrics.impersonationReviews.inc({ result: 'refused' }),
    onPostponed: (namespace) => metrics.reviewRenewalsPostponed.inc({ namespace, review: 'SubjectAccessReview' }),
    onNamespace: (namespace) => metrics.reviewRenewalsPostponed.inc({ namespace, review: 'SubjectAccessReview' }, 0),
  });
  const impersonation = new ImpersonationChecker(new KubeAccessReviewer(client, accessReviewLimiter, metrics));
  // can-i questions on the listeners: a limiter of their own (two at a time, fair by namespace),
  // answers remembered for 10 s; callers are limited to one question a second (route table)
  const accessReviewer = new CachingRequestReviewer(new KubeAccessReviewer(client, new FairLimiter({ maxInFlight: 2, what: 'can-i question' }), metrics));
  // OIDC (and its CEL engine) is loaded only when the platform configures issuers
  const oidc: OidcIssuers | undefined = f['authentication-config']
    ? new (await import('../auth/oidc.js')).OidcIssuers(readAuthenticationConfig(f['authentication-config'])) : undefined;
  for (const [issuer, problem] of Object.entries(oidc?.states() ?? {})) {
    if (problem) log.error({ issuer, problem }, 'OIDC issuer not usable: gateways naming it are not served');
  }
  const drainMs = f['drain-seconds'] * 1000;
  // teams' path filters run on the event loop while cheap, else on a thread of their own
  const overBudgetLogged = new Map<string, number>();
  const slowLogged = new Map<string, number>();
  const filterChecks = new FilterChecks(defaultFilterLimits, {
    sent: (ns, why) => metrics.filterThreadChecks.inc({ namespace: ns, why }),
    refused: (ns, reason) => metrics.filterRefusals.inc({ namespace: ns, reason }),
    overBudget: (ns) => {
      const now = Date.now();
      if (now - (overBudgetLogged.get(ns) ?? 0) < 60_000) return;
      overBudgetLogged.set(ns, now);
      log.warn({ namespace: ns, msPerSecond: defaultFilterLimits.msPerSecond }, 'path filters of this namespace used their event-loop time: its checks run on the filter thread until it is refilled');
    },
    slow: (ns) => {
      const now = Date.now();
      if (now - (slowLogged.get(ns) ?? 0) < 60_000) return;
      slowLogged.set(ns, now);
      log.warn({ namespace: ns, slowForSeconds: defaultFilterLimits.slowForMs / 1000 }, 'path filters of this namespace are slow on the filter thread: its checks run on the slow lane, with other slow namespaces\' only');
    },
  });
  const dataplane = new ListenerManager({
    apiserver: client.apiserverConnection(), reviewer: new LimitedReviewer(new KubeTokenReviewer(client, metrics, undefined, log), reviewLimiter),
    log, accessLog: (gateway) => accessLogFor(gateway, { format: f['log-format'], logger: log }), minAccessLog: f['min-access-log'],
    pools: new PoolRegistry(f['max-connections-per-namespace'], (namespace, n) => metrics.upstreamPoolsRecycled.inc({ namespace }, n)), metrics, jwks: { keySet, revocation }, clockSkewSeconds: f['jwks-clock-skew-seconds'], auditExtras: f['audit-extras'] === 'all', impersonation, accessReviewer, filterChecks, ...(oidc ? { oidc } : {}),
  }, f['listen-address'], drainMs, {
    maxConnections: f['max-connections-per-listener'],
    maxConnectionsPerNamespace: f['max-connections-per-namespace'],
    maxUnadmittedConnections: f['max-unadmitted-connections'],
    bufferedBodyBytesPerNamespace: defaultLimits.bufferedBodyBytesPerNamespace,
    cachedCallersPerNamespace: f['max-cached-callers-per-namespace'],
    requestsPerTurnPerNamespace: f['requests-per-turn-per-namespace'],
    apiserverRequestsPerNamespace: f['max-apiserver-requests-per-namespace'],
    pausedAnswersPerNamespace: f['max-paused-answers-per-namespace'],
    tlsHandshakePercent: f['tls-handshake-percent'],
    headersTimeoutMs: f['header-timeout-seconds'] * 1000,
    idleTimeoutMs: f['idle-timeout-seconds'] * 1000,
  });
  let stopping = false;
  let admin: Server | undefined;
  return {
    log, client, metrics, dataplane, jwksReadiness: new JwksReadiness(keySet, revocation), issuers: oidc?.states() ?? {},
    async serveAdmin(ready, status) {
      admin = await startAdminServer({
        host: f['admin-address'].host, port: f['admin-address'].port, metrics,
        ready: () => !stopping && ready(), status,
        ...(f['metrics-auth'] === 'kubernetes' ? { metricsAuth: new AdminAuthorizer(new KubeAdminReviewer(client, metrics), { metrics, log, reviewsPerSecond: 20 }) } : {}),
      });
      boundConnections(admin, adminConnections);
      return admin;
    },
    onShutdown(stop) {
      const shutdown = async (signal: string) => {
        if (stopping) return;
        stopping = true;
        log.info({ signal, drainMs }, 'shutting down: unready, draining listeners');
        await stop();
        keySet.stop();
        filterChecks.close();
        await revocation.stop();
        await dataplane.closeAll(drainMs);
        admin?.close();
        await client.close();
        log.info('stopped');
        await drainLogs(2000); // (a log reader that stopped reading loses what waits)
        process.exit(0);
      };
      process.on('SIGTERM', () => void shutdown('SIGTERM'));
      process.on('SIGINT', () => void shutdown('SIGINT'));
    },
  };
}

/** The apiserver's AuthenticationConfiguration file (its jwt list is what the gateways use). */
export function readAuthenticationConfig(file: string): { jwt?: JwtAuthenticator[] } {
  const doc = parseYaml(readFileSync(file, 'utf8')) as { apiVersion?: string; kind?: string; jwt?: JwtAuthenticator[] } | null;
  if (doc?.kind !== 'AuthenticationConfiguration' || !/^apiserver\.config\.k8s\.io\/v1(beta1|alpha1)?$/.test(doc.apiVersion ?? '')) {
    throw new Error(`--authentication-config ${file}: expected kind AuthenticationConfiguration, apiVersion apiserver.config.k8s.io/v1`);
  }
  if (doc.jwt !== undefined && !Array.isArray(doc.jwt)) throw new Error(`--authentication-config ${file}: jwt must be a list`);
  return { jwt: doc.jwt ?? [] };
}
