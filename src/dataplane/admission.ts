// Admission of one request, as a chain of small steps that all read the same canonical request
// (kube-rbac-proxy's filters, the apiserver's handler chain): target -> credentials ->
// authentication -> access rules -> rate limit -> route -> route checks. Each step throws the
// AgwError it answers with; none touches a socket.
import type { IncomingHttpHeaders } from 'node:http';
import { bearerToken } from '../auth/bearer.js';
import type { TLSSocket } from 'node:tls';
import { isCertificateIdentity } from '../auth/client-cert.js';
import type { CallerIdentity } from '../auth/identity.js';
import { requestedImpersonation, type RequestedImpersonation } from '../auth/impersonation.js';
import {
  AuthUnavailableError, BadPathError, BadRequestError, ForbiddenError, NoEndpointsError, RateLimitedError, RouteNotFoundError, UriTooLongError,
} from '../errors.js';
import { canonicalPath, encodePath } from './path.js';
import { upstreamPath, type CompiledRoute, type RouteTable } from './route-table.js';

export const wellKnownPath = '/.well-known/access-gateway';

export interface RequestHead {
  method: string;
  /** The request target as received. */
  url: string;
  headers: IncomingHttpHeaders;
  /** Header names and values as received, names at even indexes. */
  rawHeaders: string[];
}

/** `as`: what the caller asked to act as on an Impersonate route (kubectl --as), checked. */
export type RouteAdmitted = { kind: 'route'; id: CallerIdentity; route: CompiledRoute; path: string; as?: RequestedImpersonation };
export type Admitted = { kind: 'discovery'; id: CallerIdentity } | RouteAdmitted;

/** What admission learnt, for the access log (filled as the steps pass). */
export interface Seen { caller: string; as?: string; route?: CompiledRoute; upstream?: string; error?: string }

/** The target's path decoded once (canonical) and its query, untouched. */
export function requestTarget(t: RouteTable, url: string): { path: string; query: string } {
  const q = url.indexOf('?');
  const c = canonicalPath(q < 0 ? url : url.slice(0, q));
  if ('problem' in c) {
    t.m.denied.path.inc();
    throw c.tooLong ? new UriTooLongError(`refused: ${c.problem}`) : new BadPathError(`refused: ${c.problem}`);
  }
  return { path: c.path, query: q < 0 ? '' : url.slice(q) };
}

/** The one Authorization header; several are refused (which one would the upstream read?). */
export function authorizationHeader(h: RequestHead): string | undefined {
  let n = 0;
  for (let i = 0; i < h.rawHeaders.length; i += 2) {
    const name = h.rawHeaders[i]!;
    if (name.length === 13 && name.toLowerCase() === 'authorization') n++;
  }
  if (n > 1) throw new BadRequestError('more than one Authorization header');
  return h.headers.authorization;
}

/**
 * The caller: a verified client certificate when the listener takes them (as the apiserver, it
 * wins over a token), else the bearer token: at once when cached (the hot path has no promise),
 * else when checked. `conn`: the client connection.
 */
export function authenticate(t: RouteTable, authorization: string | undefined, conn?: object): CallerIdentity | Promise<CallerIdentity> {
  const refused = (err: unknown): never => {
    (err instanceof AuthUnavailableError ? t.m.auth.unavailable : t.m.auth.unauthenticated).inc();
    throw err;
  };
  let id: CallerIdentity | Promise<CallerIdentity> | null = null;
  try {
    if (t.clientCerts && conn) id = t.clientCerts.identify(conn as TLSSocket, authorization !== undefined);
    id ??= t.authenticator.authenticate(bearerToken(authorization), conn);
  } catch (err) {
    return refused(err);
  }
  if (id instanceof Promise) return id.then((x) => { t.m.auth.allowed.inc(); return x; }, refused);
  t.m.auth.allowed.inc();
  return id;
}

/** spec.access: some rule must match the caller. */
export function authorize(t: RouteTable, id: CallerIdentity): void {
  if (t.policy.allowed(id) === null) {
    t.m.denied.access.inc();
    throw new ForbiddenError(`${id.username} is not allowed to use gateway ${t.key}`);
  }
}

export function rateLimit(t: RouteTable, id: CallerIdentity): void {
  if (!t.limiter) return;
  const wait = t.limiter.take(id.username);
  if (wait > 0) {
    t.m.rateLimited.inc();
    throw new RateLimitedError(`rate limit of gateway ${t.key} exceeded for ${id.username}`, Math.ceil(wait));
  }
}

/** The apiserver's services-proxy form: /api/v1/namespaces/NS/services/[SCHEME:]NAME[:PORT]/proxy[/PATH] (decoded). */
const servicesProxyPath = /^\/api\/v1\/namespaces\/([^/]+)\/services\/(https?:)?([^/:]+)(:[^/]+)?\/proxy(\/.*)?$/;

/** The route for a decoded path (the services-proxy form read as its path form), granted to the caller. */
export function selectRoute(t: RouteTable, id: CallerIdentity, method: string, path: string): { route: CompiledRoute; path: string } {
  const sp = servicesProxyPath.exec(path);
  if (sp) {
    const found = t.servicesProxy({ namespace: sp[1]!, name: sp[3]!, scheme: sp[2]?.slice(0, -1), port: sp[4]?.slice(1) },
      sp[5] ?? '/', method, (r) => t.policy.mayUse(id, r.plan.name));
    if ('status' in found) {
      if (found.status === 403) t.m.denied.route.inc();
      throw found.status === 403 ? new ForbiddenError(found.message) : new RouteNotFoundError(found.message);
    }
    path = found.path;
  }
  const route = t.match(path, method);
  if (!route) throw new RouteNotFoundError(`no route of gateway ${t.key} matches ${method} ${path}`);
  if (!t.policy.mayUse(id, route.plan.name)) {
    t.m.denied.route.inc();
    throw new ForbiddenError(`${id.username} may not use route ${route.plan.name} of gateway ${t.key}`);
  }
  return { route, path };
}

/** What the route itself refuses: a Service it cannot reach, a certificate caller on a route that
 * passes the caller's token on, or kubectl proxy's filters on the (decoded) path the apiserver
 * will see. Returns that path. */
export function checkRoute(t: RouteTable, id: CallerIdentity, route: CompiledRoute, method: string, path: string): string {
  const up = upstreamPath(route, path);
  const target = route.plan.target;
  if (target.kind === 'apiserver' && target.identity === 'Passthrough' && isCertificateIdentity(id)) {
    // a token sent beside the certificate names someone else: the apiserver would act for them
    t.m.denied.route.inc();
    throw new ForbiddenError(`route ${route.plan.name} of gateway ${t.key} passes the caller's own token to the apiserver; a client-certificate caller has none`);
  }
  if (target.kind === 'service') {
    if (target.problem) throw target.problem.status === 403 ? new ForbiddenError(target.problem.message) : new NoEndpointsError(target.problem.message);
    return up;
  }
  const why = route.filter!.check(method, up);
  if (why) {
    t.m.denied.filter.inc();
    throw new ForbiddenError(why);
  }
  return up;
}

/**
 * A caller's own Impersonate-* headers on an Impersonate route: honoured only when the apiserver
 * says the caller may impersonate exactly that. Elsewhere they are stripped, never forwarded.
 */
export function checkImpersonation(t: RouteTable, a: RouteAdmitted, h: RequestHead, seen: Seen): RouteAdmitted | Promise<RouteAdmitted> {
  const target = a.route.plan.target;
  if (target.kind !== 'apiserver' || target.identity !== 'Impersonate') return a;
  const as = requestedImpersonation(h.rawHeaders);
  if (!as) return a;
  seen.as = as.user;
  const checker = t.impersonationChecker;
  if (!checker) {
    t.m.denied.impersonate.inc();
    throw new ForbiddenError(`gateway ${t.key} cannot check impersonation requests`);
  }
  return checker.check(a.id, as, t.plan.namespace).then(() => ({ ...a, as }), (err) => {
    if (err instanceof ForbiddenError) t.m.denied.impersonate.inc();
    throw err;
  });
}

/**
 * Every step in order; the upstream path is the canonical encoding of the decoded path. Returns
 * at once when the caller's token is cached, else a promise; throws (or rejects) the refusal.
 * `conn`: the client connection (it remembers its token's cache key).
 */
export function admit(t: RouteTable, h: RequestHead, seen: Seen, conn?: object): Admitted | Promise<Admitted> {
  const { path, query } = requestTarget(t, h.url);
  const id = authenticate(t, authorizationHeader(h), conn);
  const rest = (caller: CallerIdentity): Admitted | Promise<Admitted> => {
    seen.caller = caller.username;
    authorize(t, caller);
    rateLimit(t, caller);
    if (path === wellKnownPath && (h.method === 'GET' || h.method === 'HEAD')) return { kind: 'discovery', id: caller };
    const selected = selectRoute(t, caller, h.method, path);
    seen.route = selected.route;
    const up = checkRoute(t, caller, selected.route, h.method, selected.path);
    return checkImpersonation(t, { kind: 'route', id: caller, route: selected.route, path: encodePath(up) + query }, h, seen);
  };
  return id instanceof Promise ? id.then(rest) : rest(id);
}
