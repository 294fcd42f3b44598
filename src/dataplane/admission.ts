// Admission of one request, as a chain of small steps that all read the same canonical request
// (kube-rbac-proxy's filters, the apiserver's handler chain): target -> credentials ->
// authentication -> access rules -> rate limit -> route -> route checks. Each step throws the
// AgwError it answers with; none touches a socket.
import type { IncomingHttpHeaders } from 'node:http';
import type { Allowed } from '../auth/access.js';
import { bearerToken } from '../auth/bearer.js';
import type { TLSSocket } from 'node:tls';
import { isCertificateIdentity } from '../auth/client-cert.js';
import { hasServiceAccountPrefix, type CallerIdentity } from '../auth/identity.js';
import { requestedImpersonation, type RequestedImpersonation } from '../auth/impersonation.js';
import {
  AgwError, AuthUnavailableError, BadPathError, refusedAt, BadRequestError, ForbiddenError, NoEndpointsError, RateLimitedError, RouteNotFoundError, TooManyHeadersError, UnauthenticatedError, UriTooLongError, toAgwError,
} from '../errors.js';
import type { FilterClient } from './filter-checks.js';
import { overrideHeader } from './headers.js';
import { canonicalPath, encodePath, type FilterPass, type FilterRefusal } from './path.js';
import { upstreamPath, type CompiledRoute, type RouteTable } from './route-table.js';

export const wellKnownPath = '/.well-known/access-gateway';
/** "Why was I denied?" for the caller itself: ?method=METHOD&path=URL (see explain.ts). */
export const canIPath = '/.well-known/access-gateway/can-i';

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
/** `can-i`: the caller asks about METHOD URL (query parameters of the well-known can-i path). */
export type Admitted = { kind: 'discovery'; id: CallerIdentity } | { kind: 'can-i'; id: CallerIdentity; method: string; url: string } | RouteAdmitted;

/** What admission learnt, for the access log (filled as the steps pass). */
export interface Seen {
  caller: string; as?: string; route?: CompiledRoute; upstream?: string; error?: string;
  /** The apiserver's audit event's ID. */
  auditId?: string;
  /** What spec.access allowed the caller when it was admitted (the policy's decision object: the
   * same one while no window boundary has passed). */
  allowed?: Allowed;
}

/** A request's Seen, every field in place (one object shape for every line). */
export function newSeen(): Seen {
  return { caller: '-', as: undefined, route: undefined, upstream: undefined, error: undefined, auditId: undefined, allowed: undefined };
}

/** The target's path decoded once (canonical) and its query, untouched; or the refusal. */
export function targetOf(url: string): { path: string; query: string } | AgwError {
  const q = url.indexOf('?');
  const c = canonicalPath(q < 0 ? url : url.slice(0, q));
  if ('problem' in c) {
    return c.tooLong ? new UriTooLongError(`refused: ${c.problem}`, { step: 'request' }) : new BadPathError(`refused: ${c.problem}`, { step: 'request' });
  }
  return { path: c.path, query: q < 0 ? '' : url.slice(q) };
}

/** targetOf, counted and thrown. */
/** Header lines Node reads of a request (listener.ts maxHeadersCount; past them it answers 431
 * itself); one that has exactly as many is refused 431 here: 256 at most, as the message says. */
export const maxHeaderFields = 257;

export function requestTarget(t: RouteTable, url: string, rawHeaders: string[] = []): { path: string; query: string } {
  if (rawHeaders.length >= 2 * maxHeaderFields) {
    throw new TooManyHeadersError(`refused: more than ${maxHeaderFields - 1} header lines`, { step: 'request' });
  }
  const target = targetOf(url);
  if (target instanceof AgwError) {
    t.m.denied.path.inc();
    throw target;
  }
  return target;
}

/** The one Authorization header; several are refused as a malformed one is, 401 (which one
 * would the upstream read?). */
export function authorizationHeader(h: RequestHead): string | undefined {
  let n = 0;
  for (let i = 0; i < h.rawHeaders.length; i += 2) {
    const name = h.rawHeaders[i]!;
    if (name.length === 13 && name.toLowerCase() === 'authorization') n++;
  }
  if (n > 1) throw new UnauthenticatedError('malformed Authorization: more than one Authorization header');
  return h.headers.authorization;
}

/**
 * The caller: a verified client certificate when the listener takes them (as the apiserver, it
 * wins over a token), else the bearer token: at once when cached (the hot path has no promise),
 * else when checked. `conn`: the client connection. `counted`: false for a request admitted
 * again (its first admission counted it).
 */
export function authenticate(t: RouteTable, h: RequestHead, conn?: object, counted = true): CallerIdentity | Promise<CallerIdentity> {
  const refused = (err: unknown): never => {
    (err instanceof AuthUnavailableError ? t.m.auth.unavailable : t.m.auth.unauthenticated).inc();
    throw err;
  };
  let authorization: string | undefined;
  try {
    authorization = authorizationHeader(h);
  } catch (err) {
    return refused(refusedAt(err, 'authentication', 'spec.authentication'));
  }
  let id: CallerIdentity | Promise<CallerIdentity> | null = null;
  try {
    if (t.clientCerts && conn) id = t.clientCerts.identify(conn as TLSSocket, authorization !== undefined);
  } catch (err) {
    return refused(refusedAt(err, 'authentication', 'spec.listener.tls.clientCA'));
  }
  try {
    id ??= t.authenticator.authenticate(bearerToken(authorization, conn), conn);
  } catch (err) {
    return refused(refusedAt(err, 'authentication', 'spec.authentication'));
  }
  if (id instanceof Promise) return id.then((x) => { if (counted) t.m.auth.allowed.inc(); return x; }, (err) => refused(refusedAt(err, 'authentication', 'spec.authentication')));
  if (counted) t.m.auth.allowed.inc();
  return id;
}

/** spec.access: why no rule lets the caller use the gateway (naming a rule that would but for
 * its time window), or null. */
export function accessRefusal(t: RouteTable, id: CallerIdentity): AgwError | null {
  return t.policy.allowed(id) !== null ? null : accessDenial(t, id);
}

/** The refusal of a caller spec.access does not allow (the decision is the caller's to have made). */
function accessDenial(t: RouteTable, id: CallerIdentity): AgwError {
  const out = t.policy.explain(id).outsideWindow[0];
  if (out) {
    const r = t.policy.rule(out.index)!;
    const when = out.ended ? `its notAfter ${new Date(r.notAfter!).toISOString()} has passed` : `its notBefore ${new Date(r.notBefore!).toISOString()} has not come`;
    return new ForbiddenError(`${id.username} is not allowed to use gateway ${t.key}: spec.access[${out.index}] names it, but ${when}`,
      { step: 'access', field: `spec.access[${out.index}]` });
  }
  // not named: a caller no rule names learns nothing of whose gateway is on the port
  return new ForbiddenError(`${id.username} is not allowed to use this gateway: no rule of spec.access names it`, { step: 'access', field: 'spec.access' });
}

/** spec.access's decision for the caller (read once), or its refusal counted and thrown. */
export function authorize(t: RouteTable, id: CallerIdentity): Allowed {
  const allowed = t.policy.allowed(id);
  if (allowed !== null) return allowed;
  t.m.denied.access.inc();
  throw accessDenial(t, id);
}

export function rateLimit(t: RouteTable, id: CallerIdentity): void {
  if (!t.limiter) return;
  const wait = t.limiter.take(id.username);
  if (wait > 0) {
    t.m.rateLimited.inc();
    throw new RateLimitedError(`rate limit of this gateway exceeded for ${id.username}`, Math.ceil(wait));
  }
}

/** The apiserver's services-proxy form: /api/v1/namespaces/NS/services/[SCHEME:]NAME[:PORT]/proxy[/PATH] (decoded). */
const servicesProxyPath = /^\/api\/v1\/namespaces\/([^/]+)\/services\/(https?:)?([^/:]+)(:[^/]+)?\/proxy(\/.*)?$/;

/** Why the caller may not use a route: the rules that name it grant other routes. */
function routeRefusal(t: RouteTable, id: CallerIdentity, route: CompiledRoute): AgwError {
  const matching = t.policy.explain(id).matching;
  const granted = [...new Set(matching.flatMap((i) => t.policy.rule(i)!.routes ?? []))];
  return new ForbiddenError(`${id.username} may not use route ${route.plan.name} of gateway ${t.key}: ` +
    `${matching.map((i) => `spec.access[${i}]`).join(', ')} grant${matching.length === 1 ? 's' : ''} only ${granted.join(', ')}`,
  { step: 'route', field: `spec.access[${matching[0] ?? 0}].routes` });
}

/** The route for a decoded path (the services-proxy form read as its path form), granted to the
 * caller, or the refusal (not counted: for explanations too). */
export function findRoute(t: RouteTable, id: CallerIdentity, method: string, path: string): { route: CompiledRoute; path: string } | AgwError {
  const sp = servicesProxyPath.exec(path);
  if (sp) {
    const found = t.servicesProxy({ namespace: sp[1]!, name: sp[3]!, scheme: sp[2]?.slice(0, -1), port: sp[4]?.slice(1) },
      sp[5] ?? '/', method, (r) => t.policy.mayUse(id, r.plan.name));
    if ('status' in found) {
      return found.status === 403 ? new ForbiddenError(found.message, { step: 'route', field: 'spec.routes' }) : new RouteNotFoundError(found.message, { step: 'route', field: 'spec.routes' });
    }
    path = found.path;
  }
  const route = t.match(path, method);
  // a team's backend may drop `;` parameters: the route (and so the grant) must be the one it serves
  if (path.includes(';') && t.matchWithoutParams(path, method) !== route) {
    return new BadPathError(`refused: ${path} chooses another route of gateway ${t.key} than its form without ';' parameters (which Tomcat, Jetty and Spring serve)`, { step: 'route', field: 'spec.routes' });
  }
  if (!route) return new RouteNotFoundError(`no route of gateway ${t.key} matches ${method} ${path}`, { step: 'route', field: 'spec.routes' });
  if (!t.policy.mayUse(id, route.plan.name)) return routeRefusal(t, id, route);
  return { route, path };
}

/** findRoute, counted and thrown. */
export function selectRoute(t: RouteTable, id: CallerIdentity, method: string, path: string): { route: CompiledRoute; path: string } {
  const found = findRoute(t, id, method, path);
  if (found instanceof AgwError) {
    if (found.status === 403) t.m.denied.route.inc();
    else if (found.status === 400) t.m.denied.path.inc();
    throw found;
  }
  return found;
}

/** A service account of another namespace than the gateway's: its token may have been replayed
 * by whoever runs the gateway, so the gateway neither impersonates it nor vouches for it to
 * another namespace. */
function foreignAccount(t: RouteTable, id: CallerIdentity): boolean {
  return hasServiceAccountPrefix(id.username) && !id.username.startsWith(t.ownAccounts);
}

/** Why `route` refuses this caller whatever it asks (also leaving the route out of what discovery
 * lists), or null. */
export function callerRefusal(t: RouteTable, id: CallerIdentity, route: CompiledRoute): AgwError | null {
  const target = route.plan.target;
  if (target.kind === 'service') {
    if (target.namespace === t.plan.namespace || !foreignAccount(t, id)) return null;
    // another team's Service trusts X-Remote-User from its granted gateways: a token of another
    // namespace's account replayed here by whoever runs the gateway would reach it as that account
    return new ForbiddenError(`route ${route.plan.name} of gateway ${t.key} forwards to namespace ${target.namespace}, and only service accounts of namespace ${t.plan.namespace} are forwarded to another namespace's Service (the caller is ${id.username})`,
      { step: 'route', field: `${route.field}.service` });
  }
  if (target.identity === 'Passthrough' && isCertificateIdentity(id)) {
    // a token sent beside the certificate names someone else: the apiserver would act for them
    return new ForbiddenError(`route ${route.plan.name} of gateway ${t.key} passes the caller's own token to the apiserver; a client-certificate caller has none`,
      { step: 'route', field: `${route.field}.apiserver.identity` });
  }
  if (target.identity === 'Impersonate' && foreignAccount(t, id)) {
    // a token of another namespace's account that reached this gateway could be replayed here by
    // whoever runs it: impersonating it would turn an audience-bound token into the account itself
    return new ForbiddenError(`route ${route.plan.name} of gateway ${t.key} impersonates its callers, and only service accounts of namespace ${t.plan.namespace} are impersonated here (the caller is ${id.username})`,
      { step: 'route', field: `${route.field}.apiserver.identity` });
  }
  return null;
}

/** The upstream path of a request a route lets through, or why it refuses it. */
export type Checked = { upstream: string; accepted?: FilterPass['accepted'] } | AgwError;

/** How routeCheck runs a route's path filters: at once on the event loop (charged to the
 * namespace), maybe later on the filter thread (filter-checks.ts), or not at all (a held stream
 * whose filters, prefix and rewrite are those that admitted it: the same verdict). */
export type FilterMode = 'now' | 'later' | 'skip';

/** What the route itself refuses, or the (decoded) path the upstream will see: a Service it
 * cannot reach, a certificate caller on a route that passes the caller's token on, or kubectl
 * proxy's filters on that path (as `filters` says). Not counted: for explanations too.
 * `client`: the request's connection (a check waiting for the thread is dropped when it closes). */
export function routeCheck(t: RouteTable, id: CallerIdentity, route: CompiledRoute, method: string, path: string, filters?: 'now' | 'skip'): Checked;
export function routeCheck(t: RouteTable, id: CallerIdentity, route: CompiledRoute, method: string, path: string, filters: FilterMode, client?: FilterClient): Checked | Promise<Checked>;
export function routeCheck(t: RouteTable, id: CallerIdentity, route: CompiledRoute, method: string, path: string, filters: FilterMode = 'now', client?: FilterClient): Checked | Promise<Checked> {
  const up = upstreamPath(route, path);
  const target = route.plan.target;
  if (target.kind === 'service' && target.problem) {
    const p = target.problem;
    return p.status === 403 ? new ForbiddenError(p.message, { step: 'route', field: `${route.field}.service` }) : new NoEndpointsError(p.message);
  }
  const refused = callerRefusal(t, id, route);
  if (refused) return refused;
  if (target.kind === 'service') return { upstream: up };
  if (filters === 'skip') return { upstream: up };
  const filter = route.filter!;
  const checks = t.filterChecks;
  if (!checks) return verdict(route, up, filter.check(method, up));
  if (filters === 'now') return verdict(route, up, checks.checkNow(filter, method, up));
  let v: FilterRefusal | FilterPass | Promise<FilterRefusal | FilterPass>;
  try {
    v = checks.check(filter, method, up, client);
  } catch (err) {
    return toAgwError(err);
  }
  // (a closure only for the rare check that waits for the filter thread)
  return v instanceof Promise ? v.then((x) => verdict(route, up, x), toAgwError) : verdict(route, up, v);
}

/** A filter's verdict on `up` as routeCheck answers it. */
function verdict(route: CompiledRoute, up: string, v: FilterRefusal | FilterPass): Checked {
  return 'why' in v ? new ForbiddenError(`${v.why} of route ${route.plan.name}`, { step: 'filter', field: v.field }) : { upstream: up, accepted: v.accepted };
}

/** routeCheck, counted and thrown; returns the upstream path (or a promise of it). */
export function checkRoute(t: RouteTable, id: CallerIdentity, route: CompiledRoute, method: string, path: string, client?: FilterClient): string | Promise<string> {
  const checked = routeCheck(t, id, route, method, path, 'later', client);
  return checked instanceof Promise ? checked.then((c) => counted(t, route, c)) : counted(t, route, checked);
}

/** A route check's upstream path, or its refusal counted and thrown. */
function counted(t: RouteTable, route: CompiledRoute, checked: Checked): string {
  if (checked instanceof AgwError) {
    // a Service the route may not reach is the gateway's problem (a condition), not a denial
    const target = route.plan.target;
    if (checked.status === 403 && (target.kind === 'apiserver' || !target.problem)) (checked.step === 'filter' ? t.m.denied.filter : t.m.denied.route).inc();
    throw checked;
  }
  return checked.upstream;
}

/**
 * A caller's own Impersonate-* headers on an Impersonate route: honoured only when the apiserver
 * says the caller may impersonate exactly that. Elsewhere they are stripped, never forwarded.
 */
export function checkImpersonation(t: RouteTable, a: RouteAdmitted, h: RequestHead, seen: Seen): RouteAdmitted | Promise<RouteAdmitted> {
  seen.as = undefined; // (admitted again after a spec change: by this route's rules alone)
  const target = a.route.plan.target;
  if (target.kind !== 'apiserver' || target.identity !== 'Impersonate') return a;
  let as: RequestedImpersonation | null;
  try {
    as = requestedImpersonation(h.rawHeaders);
  } catch (err) {
    throw refusedAt(err, 'impersonation');
  }
  if (!as) return a;
  seen.as = as.user;
  const checker = t.impersonationChecker;
  if (!checker) {
    t.m.denied.impersonate.inc();
    throw new ForbiddenError(`gateway ${t.key} cannot check impersonation requests`, { step: 'impersonation' });
  }
  return checker.check(a.id, as, t.plan.namespace).then(() => ({ ...a, as }), (err) => {
    if (err instanceof ForbiddenError) t.m.denied.impersonate.inc();
    throw refusedAt(err, 'impersonation');
  });
}

/**
 * Every step in order; the upstream path is the canonical encoding of the decoded path. Returns
 * at once when the caller's token is cached, else a promise; throws (or rejects) the refusal.
 * `conn`: the client connection (it remembers its token's cache key). `again`: the request was
 * admitted by a table swapped since: every step is asked again, but its authentication is not
 * counted twice, nor a second rate-limit token taken (a limiter kept across the swap would
 * refuse it).
 */
export function admit(t: RouteTable, h: RequestHead, seen: Seen, conn?: FilterClient, again = false, before?: Before): Admitted | Promise<Admitted> {
  let id: CallerIdentity | Promise<CallerIdentity> | undefined;
  if (before && before.t === t && before.a.as === undefined && seen.allowed !== undefined) {
    // admitted by this table before: the same caller object (its token's cached answer), with
    // spec.access's decision for it unchanged (no window boundary passed), is admitted to the same
    // route and path (every other step depends on the table and the request alone)
    id = authenticate(t, h, conn, false);
    if (id === before.a.id && t.policy.allowed(id) === seen.allowed) return before.a;
  }
  const { path, query } = requestTarget(t, h.url, h.rawHeaders);
  const override = overrideHeader(h.headers);
  if (override !== undefined) {
    t.m.denied.path.inc();
    throw new BadRequestError(`refused: ${override} would make some upstreams read another method or path than the request's; send those themselves`, { step: 'request' });
  }
  id ??= authenticate(t, h, conn, !again);
  const rest = (caller: CallerIdentity): Admitted | Promise<Admitted> => {
    seen.caller = caller.username;
    if (path === canIPath && (h.method === 'GET' || h.method === 'HEAD')) {
      // answered whether or not spec.access admits the caller: it says no more than a 403 would;
      // a caller it does not admit gets no place in the gateway's rate limiter (10,000 callers)
      if (t.policy.allowed(caller) !== null) rateLimit(t, caller);
      const wait = t.canILimiter.take(caller.username);
      if (wait > 0) throw new RateLimitedError('can-i questions to this gateway are limited to one a second per caller', Math.ceil(wait));
      return canIQuestion(caller, query);
    }
    seen.allowed = authorize(t, caller);
    if (!again) rateLimit(t, caller);
    if (path === wellKnownPath && (h.method === 'GET' || h.method === 'HEAD')) return { kind: 'discovery', id: caller };
    const selected = selectRoute(t, caller, h.method, path);
    seen.route = selected.route;
    const up = checkRoute(t, caller, selected.route, h.method, selected.path, conn);
    if (up instanceof Promise) return up.then((u) => checkImpersonation(t, { kind: 'route', id: caller, route: selected.route, path: encodePath(u) + query }, h, seen));
    return checkImpersonation(t, { kind: 'route', id: caller, route: selected.route, path: encodePath(up) + query }, h, seen);
  };
  return id instanceof Promise ? id.then(rest) : rest(id);
}

/** A request's admission by `t` (`admit`'s `before`), asked again after a wait. */
export interface Before { t: RouteTable; a: RouteAdmitted }

const methods = /^[A-Z]{1,16}$/;

/** The question of a can-i request: ?path=URL (required, absolute) and ?method= (default GET). */
function canIQuestion(id: CallerIdentity, query: string): Admitted {
  const q = new URLSearchParams(query.slice(1));
  const url = q.get('path');
  const method = (q.get('method') ?? 'GET').toUpperCase();
  if (!url || !url.startsWith('/')) throw new BadRequestError(`can-i needs ?path=/… (the request target to ask about) and optionally ?method=`, { step: 'request' });
  if (!methods.test(method)) throw new BadRequestError(`can-i: ${JSON.stringify(method)} is not an HTTP method`, { step: 'request' });
  return { kind: 'can-i', id, method, url };
}
