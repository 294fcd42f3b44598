// A gateway's compiled form, built once per plan: the data plane swaps it atomically and never
// compiles anything per request.
import type { OutgoingHttpHeaders } from 'node:http';
import type { Logger } from 'pino';
import { AccessPolicy } from '../auth/access.js';
import { TokenReviewAuthenticator, type Authenticator } from '../auth/authenticator.js';
import { JwksAuthenticator, type JwksKeySet, type RevocationCheck } from '../auth/jwks.js';
import type { CallerIdentity, TokenReviewer } from '../auth/identity.js';
import type { GatewayPlan, RoutePlan, ServiceTarget } from '../translate/plan.js';
import type { ApiserverConnection } from './upstream.js';
import { PathFilter } from './path.js';
import { RateLimiter } from '../auth/rate-limit.js';
import { PoolRegistry, ServiceBackend } from './endpoints.js';
import type { Metrics } from '../observability/metrics.js';
import { GatewayMetrics, RouteMetrics } from './route-metrics.js';
import { impersonationHeaders } from './headers.js';

export interface DataplaneDeps {
  apiserver: ApiserverConnection;
  reviewer: TokenReviewer;
  log: Logger;
  pools: PoolRegistry;
  metrics: Metrics;
  /** For authentication.mode JWKS: the shared key set and revocation check. */
  jwks?: { keySet: JwksKeySet; revocation: RevocationCheck };
  /** Clock skew tolerated on token exp/nbf (--jwks-clock-skew-seconds). */
  clockSkewSeconds?: number;
}

export interface CompiledRoute {
  plan: RoutePlan;
  filter: PathFilter | null;
  methods: ReadonlySet<string> | null;
  backend: ServiceBackend | null;
  m: RouteMetrics;
  /** Impersonate-Extra values naming the gateway and route, for the apiserver's audit log. */
  extras: Record<string, string>;
}

function authenticatorFor(plan: GatewayPlan, deps: DataplaneDeps): Authenticator {
  const { mode, audiences, cacheTTLSeconds } = plan.auth;
  const cache = deps.metrics.tokenCache;
  const hit = cache.labels(plan.namespace, plan.name, 'hit');
  const miss = cache.labels(plan.namespace, plan.name, 'miss');
  const onCacheLookup = (h: boolean) => (h ? hit : miss).inc();
  if (mode === 'TokenReview') {
    return new TokenReviewAuthenticator(deps.reviewer, audiences, cacheTTLSeconds, Date.now, onCacheLookup,
      { namespace: plan.namespace, clockSkewSeconds: deps.clockSkewSeconds });
  }
  if (!deps.jwks) throw new Error('JWKS authentication is not configured in this data plane');
  deps.jwks.keySet.start();
  return new JwksAuthenticator(deps.jwks.keySet, audiences, cacheTTLSeconds,
    { revocation: deps.jwks.revocation, onCacheLookup, clockToleranceSeconds: deps.clockSkewSeconds });
}

export class RouteTable {
  readonly key: string;
  readonly routes: CompiledRoute[];
  readonly policy: AccessPolicy;
  readonly log: Logger;
  readonly limiter: RateLimiter | null;
  readonly m: GatewayMetrics;
  /** Metrics for requests answered before a route was chosen. */
  readonly noRoute: RouteMetrics;
  /** Impersonation headers per cached caller and route: built once, not per request. */
  private readonly impersonation = new WeakMap<CallerIdentity, Map<string, OutgoingHttpHeaders>>();

  private constructor(readonly plan: GatewayPlan, readonly authenticator: Authenticator, limiter: RateLimiter | null,
    private readonly deps: DataplaneDeps) {
    this.limiter = limiter;
    this.m = new GatewayMetrics(deps.metrics, plan.namespace, plan.name);
    this.noRoute = new RouteMetrics(deps.metrics, plan.namespace, plan.name, '');
    this.key = `${plan.namespace}/${plan.name}`;
    this.policy = new AccessPolicy(plan.access);
    this.log = deps.log.child({ gateway: this.key });
    this.routes = plan.routes.map((r) => ({
      plan: r,
      filter: r.target.kind === 'apiserver' ? new PathFilter(r.target) : null,
      methods: r.methods ? new Set(r.methods) : null,
      backend: r.target.kind === 'service'
        ? new ServiceBackend(r.target, r.target.endpoints.map((e) => deps.pools.acquire(r.target as ServiceTarget, e)))
        : null,
      m: new RouteMetrics(deps.metrics, plan.namespace, plan.name, r.name),
      extras: { 'access-gateway.io/gateway': this.key, 'access-gateway.io/route': r.name },
    }));
  }

  /** Builds the table for a plan, keeping the previous authenticator (and its cache) and rate
   * limiter (and its buckets) when their settings are unchanged. */
  static build(plan: GatewayPlan, deps: DataplaneDeps, previous?: RouteTable): RouteTable {
    const sameAuth = previous && JSON.stringify(previous.plan.auth) === JSON.stringify(plan.auth);
    const authn = sameAuth ? previous.authenticator : authenticatorFor(plan, deps);
    const rl = plan.rateLimit;
    const limiter = !rl ? null
      : previous?.limiter && previous.limiter.rate === rl.requestsPerSecond && previous.limiter.burst === rl.burst ? previous.limiter
        : new RateLimiter(rl.requestsPerSecond, rl.burst);
    return new RouteTable(plan, authn, limiter, deps);
  }

  /** Releases the endpoint pools this table holds (after a newer table took over). */
  dispose(): void {
    for (const r of this.routes) for (const p of r.backend?.pools ?? []) this.deps.pools.release(p);
  }

  impersonationFor(id: CallerIdentity, route: CompiledRoute): OutgoingHttpHeaders {
    let byRoute = this.impersonation.get(id);
    if (!byRoute) this.impersonation.set(id, (byRoute = new Map()));
    let h = byRoute.get(route.plan.name);
    if (!h) byRoute.set(route.plan.name, (h = impersonationHeaders(id, route.extras)));
    return h;
  }

  /** The first service route naming Service ns/name (and the scheme and port, when given):
   * the apiserver's services-proxy URL form. */
  serviceRouteFor(ns: string, name: string, scheme?: string, port?: string): CompiledRoute | undefined {
    return this.routes.find((r) => {
      const t = r.plan.target;
      return t.kind === 'service' && t.namespace === ns && t.name === name &&
        (scheme === undefined || t.scheme === scheme) && (port === undefined || String(t.port) === port);
    });
  }

  /** First route whose prefix (and methods, if any) match. `/x` also matches prefix `/x/`. */
  match(path: string, method: string): CompiledRoute | undefined {
    for (const r of this.routes) {
      const prefix = r.plan.pathPrefix;
      const hit = path.startsWith(prefix) || (prefix.endsWith('/') && path === prefix.slice(0, -1));
      if (hit && (!r.methods || r.methods.has(method))) return r;
    }
    return undefined;
  }
}

/** The path sent upstream: the prefix replaced by rewritePrefix, when set. */
export function upstreamPath(route: RoutePlan, path: string): string {
  if (route.rewritePrefix === null) return path;
  const rest = path.length >= route.pathPrefix.length ? path.slice(route.pathPrefix.length) : '';
  const joined = route.rewritePrefix.endsWith('/') && rest.startsWith('/') ? route.rewritePrefix + rest.slice(1) : route.rewritePrefix + rest;
  return joined || '/';
}
