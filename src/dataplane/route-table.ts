// A gateway's compiled form, built once per plan: the data plane swaps it atomically and never
// compiles anything per request.
import type { FilterChecks } from './filter-checks.js';
import { impersonatedIdentity, type ImpersonationChecker, type RequestedImpersonation } from '../auth/impersonation.js';
import type { OutgoingHttpHeaders } from 'node:http';
import type { Logger } from 'pino';
import type { AccessLog } from '../observability/logger.js';
import { AccessPolicy } from '../auth/access.js';
import { TokenReviewAuthenticator, type Authenticator } from '../auth/authenticator.js';
import { ClientCertAuthenticator, isCertificateIdentity } from '../auth/client-cert.js';
import { IssuerAuthenticator } from '../auth/issuer-authenticator.js';
import type { OidcIssuer, OidcIssuers } from '../auth/oidc.js';
import { JwksAuthenticator, type JwksKeySet, type RevocationCheck } from '../auth/jwks.js';
import type { CallerIdentity, TokenReviewer } from '../auth/identity.js';
import { textKey } from '../api/pem.js';
import type { RequestReviewer } from '../auth/request-info.js';
import type { EntryBudget } from '../auth/token-cache.js';
import type { CallerBudgets } from './namespace-budget.js';
import { same, type ApiserverTarget, type GatewayPlan, type RoutePlan, type ServiceTarget } from '../translate/plan.js';
import type { ApiserverConnection } from './upstream.js';
import { normalizePrefix, PathFilter, replacePrefix, underPrefix, withoutParams } from './path.js';
import { RateLimiter } from '../auth/rate-limit.js';
import { PoolRegistry, ServiceBackend, secureContextFor, type EndpointPool } from './endpoints.js';
import type { Metrics } from '../observability/metrics.js';
import { GatewayMetrics, RouteMetrics } from './route-metrics.js';
import { extraCaller, extraGateway, extraRoute } from '../api/labels.js';
import { runSteps } from '../steps.js';
import { callerImpersonation, leanImpersonation, escapeExtraKey, extraHeaders, impersonationHeaders, serviceAccountHeaders, wireUsername } from './headers.js';

export interface DataplaneDeps {
  apiserver: ApiserverConnection;
  reviewer: TokenReviewer;
  log: Logger;
  /** Makes the access log of a gateway; default: lines through `log`. */
  accessLog?: (gateway: string) => AccessLog;
  /** The platform's least access log (--min-access-log): a gateway's annotation may ask for more,
   * never less. Default none. */
  minAccessLog?: 'none' | 'errors' | 'all';
  pools: PoolRegistry;
  metrics: Metrics;
  /** For authentication.mode JWKS: the shared key set and revocation check. */
  jwks?: { keySet: JwksKeySet; revocation: RevocationCheck };
  /** Clock skew tolerated on token exp/nbf (--jwks-clock-skew-seconds). */
  clockSkewSeconds?: number;
  /** false (--audit-extras none): apiserver routes send no audit extras, and a service-account
   * caller with its account's own groups is impersonated by its name alone (the apiserver adds
   * those groups; no UID or token extras): one authorization check a request in the apiserver
   * instead of one per attribute. Default true. */
  auditExtras?: boolean;
  /** Checks a caller's own Impersonate-* headers (kubectl --as) on Impersonate routes; absent: refused. */
  impersonation?: ImpersonationChecker;
  /** Asks the apiserver's RBAC about a request, for can-i; absent: that step is not asked. */
  accessReviewer?: RequestReviewer;
  /** The platform's OIDC issuers, for gateways that name them (spec.authentication.issuers). */
  oidc?: OidcIssuers;
  /** Where routes' path filters run (the event loop or the filter thread); absent: the event loop. */
  filterChecks?: FilterChecks;
}

export interface CompiledRoute {
  plan: RoutePlan;
  /** Where the route is in the spec: spec.routes[N]. */
  field: string;
  /** pathPrefix and rewritePrefix, normalized for element-wise matching ("/" is ""). */
  prefix: string;
  /** prefix as servers that drop `;` parameters read it (the same string when it has none). */
  plainPrefix: string;
  rewrite: string | null;
  filter: PathFilter | null;
  /** What decides its filter's verdict on a path (prefix, rewrite, patterns), made at plan time:
   * the same string later means the same verdict for the same request (held streams). */
  filtered: string | undefined;
  /** Who it acts as (apiserver: identity and service account) or what it reaches (a Service's
   * namespace, name, port and scheme): held sessions end when it changes. */
  acts: string;
  /** How the gateway authenticates a token caller and a client-certificate caller (authnKeys):
   * a held session ends when its caller's changes. */
  authn: { token: string; certificate: string };
  methods: ReadonlySet<string> | null;
  backend: ServiceBackend | null;
  m: RouteMetrics;
  /** Impersonate-Extra values naming the gateway and route, for the apiserver's audit log. */
  extras: Record<string, string>;
  /** An apiserver route's own Impersonate-* headers, made at plan time: its audit extras, or its
   * service account's with them; null for other routes and Passthrough. */
  impersonation: OutgoingHttpHeaders | null;
  /** Its audit extras as Impersonate-Extra-* headers, made at plan time (with a caller's `--as`). */
  extraHeaders: OutgoingHttpHeaders;
}

/**
 * What decides who a request is: for a token caller, spec.authentication and a client CA it must
 * also pass (a required one, by its text); for a client-certificate caller, the client CA (its text
 * by key), whether required, and the prefix. Not the cache's TTL: it admits the same callers. An
 * optional CA renewed does not end the sessions of callers it never checked.
 */
export function authnKeys(plan: GatewayPlan): { token: string; certificate: string } {
  const ca = plan.tls?.clientCA;
  const { mode, audiences, issuers } = plan.auth;
  return {
    token: JSON.stringify([mode, [...audiences].sort(), issuers ?? [], ca?.required ? textKey(ca.pem) : null]),
    certificate: JSON.stringify(ca ? [textKey(ca.pem), ca.required, ca.prefix] : null),
  };
}

/** The key `id` was authenticated under on `route` (authnKeys). */
export function authnOf(id: CallerIdentity, route: CompiledRoute): string {
  return isCertificateIdentity(id) ? route.authn.certificate : route.authn.token;
}

/** The header of the Impersonate-Extra that names the caller. */
const callerExtraHeader = `impersonate-extra-${escapeExtraKey(extraCaller)}`;

function authenticatorFor(plan: GatewayPlan, deps: DataplaneDeps, cacheBudget?: EntryBudget): Authenticator {
  const { mode, audiences, cacheTTLSeconds } = plan.auth;
  const cache = deps.metrics.tokenCache;
  const hit = cache.labels(plan.namespace, plan.name, 'hit');
  const miss = cache.labels(plan.namespace, plan.name, 'miss');
  const onCacheLookup = (h: boolean) => (h ? hit : miss).inc();
  let sa: Authenticator;
  if (mode === 'TokenReview') {
    sa = new TokenReviewAuthenticator(deps.reviewer, audiences, cacheTTLSeconds, Date.now, onCacheLookup,
      { namespace: plan.namespace, clockSkewSeconds: deps.clockSkewSeconds, cacheBudget });
  } else {
    if (!deps.jwks) throw new Error('JWKS authentication is not configured in this data plane');
    deps.jwks.keySet.start();
    sa = new JwksAuthenticator(deps.jwks.keySet, audiences, cacheTTLSeconds,
      { revocation: deps.jwks.revocation, onCacheLookup, clockToleranceSeconds: deps.clockSkewSeconds, cacheBudget });
  }
  if (!plan.auth.issuers?.length) return sa;
  // translate refuses a plan naming an issuer that is not usable: each is one here
  const issuers = new Map(plan.auth.issuers.map((u) => [u, deps.oidc?.get(u)] as const)
    .filter((e): e is [string, OidcIssuer] => e[1] !== undefined && !('problem' in e[1])));
  return new IssuerAuthenticator(sa, issuers, cacheTTLSeconds, Date.now, onCacheLookup, cacheBudget);
}

/** `asked`, raised to the platform's least access log. */
function atLeast(asked: GatewayPlan['accessLog'], least: 'none' | 'errors' | 'all'): GatewayPlan['accessLog'] {
  if (least === 'all') return { errors: true, sample: 1 };
  if (least === 'errors' && !asked.errors) return { errors: true, sample: asked.sample };
  return asked;
}

/** A table's key: the gateway's namespace/name. */
function keyOf(plan: GatewayPlan): string {
  return `${plan.namespace}/${plan.name}`;
}

/** What takes a route's endpoint pools for a table: routes to the same Service (port, scheme, CA)
 * share its endpoints' pools, found once, each route holding its own references (a Service of
 * 5,000 endpoints named by 64 routes); every reference taken is added to `acquired`. */
function acquirer(plan: GatewayPlan, deps: DataplaneDeps, acquired: EndpointPool[]): (t: ServiceTarget) => EndpointPool[] {
  const byTarget = new Map<string, EndpointPool[]>();
  return (t) => {
    // a target with a problem (a caRef not found) has no endpoints, and may have the key of a
    // sound one (the same Service without caRef): shared with none
    if (t.problem !== null || !t.endpoints.length) return [];
    const key = `${t.scheme} ${t.namespace}/${t.name}:${t.port} ${t.serverName} ${t.ca === null ? '-' : textKey(t.ca)}`;
    let pools = byTarget.get(key);
    if (pools) for (const p of pools) deps.pools.hold(p);
    else {
      // made here, once: a CA OpenSSL refuses fails the build, not a request (pools connect at
      // their first); its time is the build's, charged with it
      if (t.scheme === 'https' && t.ca !== null) secureContextFor(t.ca, plan.namespace);
      byTarget.set(key, (pools = t.endpoints.map((e) => deps.pools.acquire(t, e, plan.namespace))));
    }
    for (const p of pools) acquired.push(p); // (a spread of 150,000 overflows the stack)
    return pools;
  };
}

/** A table's routes, one step each (a route compiled anew makes its metrics and path filters);
 * a route unchanged but for its endpoints is the previous table's, with its new endpoints. */
function* compileRoutes(plan: GatewayPlan, deps: DataplaneDeps, acquire: (t: ServiceTarget) => EndpointPool[], previous?: CompiledRoute[]): Generator<void, CompiledRoute[], void> {
  const authn = authnKeys(plan);
  const routes: CompiledRoute[] = [];
  for (const [i, r] of plan.routes.entries()) {
    yield;
    const old = previous?.[i];
    if (old && same(old.authn, authn) && same(withoutEndpoints(old.plan), withoutEndpoints(r))) {
      routes.push({ ...old, plan: r, backend: r.target.kind === 'service' ? new ServiceBackend(r.target, acquire(r.target)) : null });
      continue;
    }
    const prefix = normalizePrefix(r.pathPrefix);
    const rewrite = r.rewritePrefix === null ? null : normalizePrefix(r.rewritePrefix);
    const filter = r.target.kind === 'apiserver' ? new PathFilter(r.target, plan.namespace, `spec.routes[${i}].apiserver`) : null;
    const extras: Record<string, string> = deps.auditExtras === false ? {} : { [extraGateway]: keyOf(plan), [extraRoute]: r.name };
    routes.push({
      plan: r,
      field: `spec.routes[${i}]`,
      prefix,
      plainPrefix: withoutParams(prefix),
      rewrite,
      filter,
      filtered: filter ? `${prefix}\n${rewrite}\n${filter.key}` : undefined,
      acts: r.target.kind === 'apiserver' ? `apiserver ${r.target.identity} ${r.target.serviceAccountName ?? ''}`
        : `service ${r.target.scheme}://${r.target.namespace}/${r.target.name}:${r.target.port}`,
      authn,
      methods: r.methods ? new Set(r.methods) : null,
      backend: r.target.kind === 'service' ? new ServiceBackend(r.target, acquire(r.target)) : null,
      m: new RouteMetrics(deps.metrics, plan.namespace, plan.name, r.name),
      extras,
      extraHeaders: extraHeaders(extras),
      impersonation: r.target.kind !== 'apiserver' || r.target.identity === 'Passthrough' ? null
        : r.target.identity === 'ServiceAccount' ? serviceAccountHeaders(plan.namespace, r.target.serviceAccountName!, extras)
          : extraHeaders(extras),
    });
  }
  return routes;
}

/** Route tables made so far (`RouteTable.seq`). */
let tablesMade = 0;

export class RouteTable {
  /** The order tables are made in. */
  readonly seq = ++tablesMade;
  /** The `seq` of the first table that admitted the same as this one (a Service's endpoints
   * aside): its predecessor's epoch when this one kept its access policy and every route it
   * compiled, else its own `seq`. */
  readonly epoch: number;
  readonly key: string;
  /** The username prefix of this namespace's service accounts (the only ones an Impersonate route impersonates). */
  readonly ownAccounts: string;
  /** --audit-extras none (DataplaneDeps.auditExtras). */
  private readonly lean: boolean;
  readonly routes: CompiledRoute[];
  readonly policy: AccessPolicy;
  readonly log: Logger;
  readonly accessLog: AccessLog;
  /** What the access log takes: the gateway's annotation, raised to the platform's least. */
  readonly logged: GatewayPlan['accessLog'];
  readonly limiter: RateLimiter | null;
  readonly m: GatewayMetrics;
  /** Metrics for requests answered before a route was chosen. */
  readonly noRoute: RouteMetrics;
  private canI: RateLimiter | undefined;
  /** Client certificates as identities (spec.listener.tls.clientCA), else null. */
  readonly clientCerts: ClientCertAuthenticator | null;

  private constructor(readonly plan: GatewayPlan, readonly authenticator: Authenticator, limiter: RateLimiter | null,
    private readonly deps: DataplaneDeps, clientCerts: ClientCertAuthenticator | null, kept: RouteTable | undefined,
    made: { m: GatewayMetrics; noRoute: RouteMetrics; policy: AccessPolicy; routes: CompiledRoute[] }) {
    this.limiter = limiter;
    this.clientCerts = clientCerts;
    this.m = made.m;
    this.noRoute = made.noRoute;
    this.key = keyOf(plan);
    this.ownAccounts = `system:serviceaccount:${plan.namespace}:`;
    this.policy = made.policy;
    this.log = deps.log.child({ gateway: this.key });
    this.accessLog = deps.accessLog ? deps.accessLog(this.key) : { write: (e) => this.log.info(e, 'request') };
    this.logged = atLeast(plan.accessLog, deps.minAccessLog ?? 'none');
    this.lean = deps.auditExtras === false;
    this.routes = made.routes;
    this.before = this.routes.map((r, i) => earlierMatching(this.routes.slice(0, i), r.prefix));
    const reused = kept && this.policy === kept.policy && this.routes.length > 0 && this.routes.length === kept.routes.length
      && this.routes.every((r, i) => r.m === kept.routes[i]!.m); // (a route compiled anew has metrics of its own)
    this.epoch = reused ? kept.epoch : this.seq;
  }

  /** By route, the earlier routes that can take a path under its prefix: `tail` null, every such
   * path; else only one that goes on with `tail` (their prefix is its prefix and more). */
  private readonly before: { route: CompiledRoute; tail: string | null }[][];

  /** Builds the table for a plan, keeping the previous authenticator (and its cache) and rate
   * limiter (and its buckets) when their settings are unchanged. `callers`: the namespace's bounds
   * on cached callers and rate-limit buckets, shared with its other gateways. */
  static build(plan: GatewayPlan, deps: DataplaneDeps, previous?: RouteTable, callers?: CallerBudgets): RouteTable {
    return runSteps(RouteTable.steps(plan, deps, previous, callers));
  }

  /** build() in steps, for a caller that lets other work run between them (the reconciler: the
   * event loop is every team's): the access policy, then each route (its metrics, its filters). */
  static *steps(plan: GatewayPlan, deps: DataplaneDeps, previous?: RouteTable, callers?: CallerBudgets): Generator<void, RouteTable, void> {
    const sameAuth = previous && JSON.stringify(previous.plan.auth) === JSON.stringify(plan.auth);
    const authn = sameAuth ? previous.authenticator : authenticatorFor(plan, deps, callers?.tokens);
    const rl = plan.rateLimit;
    const limiter = !rl ? null
      : previous?.limiter && previous.limiter.rate === rl.requestsPerSecond && previous.limiter.burst === rl.burst ? previous.limiter
        : new RateLimiter(rl.requestsPerSecond, rl.burst, undefined, undefined, callers?.buckets);
    const ca = plan.tls?.clientCA ?? null;
    const acquired: EndpointPool[] = []; // given back if a later route cannot be compiled
    try {
      const certs = !ca ? null
        : previous?.clientCerts && JSON.stringify(previous.clientCerts.plan) === JSON.stringify(ca) ? previous.clientCerts
          : new ClientCertAuthenticator(ca, plan.namespace);
      // what an unchanged spec.access or route compiled is the previous table's (a stream open on an
      // older table keeps it: a Service's endpoints changing made a whole new one each time)
      const kept = previous?.key === keyOf(plan) ? previous : undefined;
      const policy = kept && same(kept.plan.access, plan.access) ? kept.policy : new AccessPolicy(plan.access);
      // the gateway's own series first: a namespace near its series bound spends it on them before its routes'
      const m = new GatewayMetrics(deps.metrics, plan.namespace, plan.name);
      const noRoute = new RouteMetrics(deps.metrics, plan.namespace, plan.name, '');
      const routes = yield* compileRoutes(plan, deps, acquirer(plan, deps, acquired), kept?.routes);
      const table = new RouteTable(plan, authn, limiter, deps, certs, kept, { m, noRoute, policy, routes });
      // the namespace's cache budget pays for callers spec.access admits now, and only those vouch
      // for their address (a rule whose window closed, or is still to open, admits no one: a red
      // team's ended rule naming every service account had another team's tokens fill both)
      authn.setCharged?.((id) => policy.allowed(id) !== null);
      return table;
    } catch (err) {
      for (const p of acquired) deps.pools.release(p);
      if (!sameAuth) authn.close?.(); // its cache joined the namespace's budget
      if (limiter && limiter !== previous?.limiter) limiter.close(); // and its limiter
      throw err;
    }
  }

  /** can-i questions per caller: 1 a second, bursts of 5 (each may cost a SubjectAccessReview);
   * made on the first question (most gateways are never asked). */
  get canILimiter(): RateLimiter {
    return (this.canI ??= new RateLimiter(1, 5, 1_000));
  }

  /** Releases the endpoint pools this table holds, its rate limits' buckets, and its
   * authenticator's caches and its rate limiter unless `next` (the table that took over) keeps them. */
  dispose(next?: RouteTable): void {
    for (const r of this.routes) for (const p of r.backend?.pools ?? []) this.deps.pools.release(p);
    if (next?.authenticator !== this.authenticator) this.authenticator.close?.();
    if (next?.limiter !== this.limiter) this.limiter?.close();
    this.canI?.close();
  }

  /** Adds to `headers` the Impersonate-* headers of an apiserver route for this caller: the
   * caller itself, or the route's service account of this gateway's namespace; never anyone else.
   * The gateway's audit extras come last: a caller's extra of the same key does not replace them. */
  impersonate(headers: OutgoingHttpHeaders, id: CallerIdentity, route: CompiledRoute): void {
    if ((route.plan.target as ApiserverTarget).identity !== 'ServiceAccount') {
      Object.assign(headers, this.lean ? leanImpersonation(id) : callerImpersonation(id));
    }
    Object.assign(headers, route.impersonation);
    if (!this.lean) headers[callerExtraHeader] = wireUsername(id);
  }

  /** Where this table's path filters run, if the process decides (else on the event loop). */
  get filterChecks(): FilterChecks | undefined {
    return this.deps.filterChecks;
  }

  /** The checker of callers' own Impersonate-* headers, if the process has one. */
  get impersonationChecker(): ImpersonationChecker | undefined {
    return this.deps.impersonation;
  }

  /** The Impersonate-* headers for what a caller asked to act as (checked already), with the
   * route's audit extras and the caller (unless --audit-extras none). */
  impersonationAs(caller: CallerIdentity, as: RequestedImpersonation, route: CompiledRoute): OutgoingHttpHeaders {
    const h = Object.assign(impersonationHeaders(impersonatedIdentity(as), {}, true), route.extraHeaders);
    if (!this.lean) h[callerExtraHeader] = wireUsername(caller);
    return h;
  }

  /** First route whose prefix (element-wise) and methods (if any) match the decoded path. */
  match(path: string, method: string): CompiledRoute | undefined {
    for (const r of this.routes) {
      if (underPrefix(path, r.prefix) && takes(r, method)) return r;
    }
    return undefined;
  }

  /** As match, for the path as servers that drop `;` parameters read it: the routes' prefixes
   * read so too (a prefix /app;v=2 is their /app). */
  matchWithoutParams(path: string, method: string): CompiledRoute | undefined {
    const plain = withoutParams(path);
    for (const r of this.routes) {
      if (underPrefix(plain, r.plainPrefix) && takes(r, method)) return r;
    }
    return undefined;
  }

  /**
   * The apiserver's services-proxy URL form, /api/v1/namespaces/NS/services/[SCHEME:]NAME[:PORT]/proxy/PATH,
   * read as the path form of the same request: among the routes to that Service, the first the
   * caller may use whose upstream paths include PATH and that the path form would choose for it.
   * Returns that path-form path (routing it gives the route, rewriting it gives PATH; when no
   * such route is granted, the first one that is not, so the caller gets the path form's 403).
   */
  servicesProxy(svc: { namespace: string; name: string; scheme?: string; port?: string }, path: string, method: string,
    mayUse: (r: CompiledRoute) => boolean): { path: string } | { status: 403 | 404; message: string } {
    let named = false;
    let denied: string | undefined;
    for (const [i, r] of this.routes.entries()) {
      const t = r.plan.target;
      if (t.kind !== 'service' || t.namespace !== svc.namespace || t.name !== svc.name) continue;
      if ((svc.scheme !== undefined && t.scheme !== svc.scheme) || (svc.port !== undefined && String(t.port) !== svc.port)) continue;
      named = true;
      const upstream = r.rewrite ?? r.prefix;
      if (!underPrefix(path, upstream) || !takes(r, method)) continue;
      // would the path form (its prefix, then `rest`) come to r? Only the earlier routes that can
      // take a path under r's prefix are asked, and no path is built for them (a request per
      // route asked every route with a path built: routes² long prefixes, ms a request)
      const rest = path.slice(upstream.length);
      if (this.before[i]!.some((b) => takes(b.route, method) && (b.tail === null || underPrefix(rest, b.tail)))) continue;
      const pathForm = replacePrefix(path, upstream, r.prefix);
      if (mayUse(r)) return { path: pathForm };
      denied ??= pathForm;
    }
    if (denied !== undefined) return { path: denied };
    const service = `Service ${svc.namespace}/${svc.name}${svc.port ? `:${svc.port}` : ''}`;
    if (!named) return { status: 403, message: `no route of gateway ${this.key} names ${service}` };
    return { status: 404, message: `no route of gateway ${this.key} serves ${method} ${path} on ${service}` };
  }
}

/** Whether a route takes requests of `method` (no methods: all). */
function takes(r: CompiledRoute, method: string): boolean {
  return !r.methods || r.methods.has(method);
}

/** Of `earlier`, those that can take a path under `prefix` (both normalized): a prefix of it (every
 * such path: tail null), or it and more (a path that goes on with the rest: that tail). */
function earlierMatching(earlier: CompiledRoute[], prefix: string): { route: CompiledRoute; tail: string | null }[] {
  const out: { route: CompiledRoute; tail: string | null }[] = [];
  for (const q of earlier) {
    if (underPrefix(prefix, q.prefix)) out.push({ route: q, tail: null });
    else if (underPrefix(q.prefix, prefix)) out.push({ route: q, tail: q.prefix.slice(prefix.length) });
  }
  return out;
}

/** The decoded path sent upstream: the matched prefix replaced by rewritePrefix, when set. */
export function upstreamPath(route: CompiledRoute, path: string): string {
  return route.rewrite === null ? path : replacePrefix(path, route.prefix, route.rewrite);
}

/** A route as planned, its Service's endpoints aside (they change often). */
export function withoutEndpoints(r: RoutePlan): RoutePlan {
  return r.target.kind === 'service' ? { ...r, target: { ...r.target, endpoints: [] } } : r;
}
