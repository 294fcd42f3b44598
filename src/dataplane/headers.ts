// Header hygiene: what never crosses the gateway, and the impersonation headers it adds.
import { isDnsSubdomain } from '../api/names.js';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { serviceAccountOf, toWire, type CallerIdentity } from '../auth/identity.js';
import { gatewayExtraKeys } from '../api/labels.js';

const hopByHop = new Set([
  'connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection',
  'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings',
  // answered by this server (100 Continue), not forwarded
  'expect',
]);

const none: ReadonlySet<string> = new Set();

function connectionTokens(headers: IncomingHttpHeaders): ReadonlySet<string> {
  const c = headers.connection;
  // keep-alive and close name no header: the common case allocates nothing
  if (!c || c === 'keep-alive' || c === 'close') return none;
  return new Set(c.split(',').map((t) => t.trim().toLowerCase()).filter(Boolean));
}

/** What a client may not send, whatever the upstream: identity headers the gateway alone sets,
 * Audit-ID (the apiserver would make it its audit event's ID: the access log records the one
 * the apiserver gave, which a client must not choose or repeat), and, spelt with "_", names that
 * read as a hop-by-hop header or Content-Length. Some upstream
 * frameworks read "_" as "-" (CGI, WSGI): X_Remote_User is X-Remote-User there, and
 * Transfer_Encoding beside a Content-Length smuggles a request on a keep-alive connection that
 * other teams' gateways to the same endpoint share. */
function notForwarded(name: string): boolean {
  const n = name.includes('_') ? name.replace(/_/g, '-') : name;
  if (n.startsWith('impersonate-') || n.startsWith('x-remote-') || n.startsWith('x-forwarded-') || addressHeaders.has(n) || claimHeaders.has(n) || n === 'audit-id') return true;
  return n !== name && (hopByHop.has(n) || n === 'content-length');
}
/** Other headers that claim the client's address, scheme or host (RFC 7239 and common ones). */
const addressHeaders = new Set(['forwarded', 'x-real-ip', 'x-client-ip', 'true-client-ip']);
/** Headers common backends read as the caller (auth proxies' conventions: oauth2-proxy's
 * X-Auth-Request-*, Grafana's X-WEBAUTH-USER, Remote-User). */
const claimHeaders = new Set(['remote-user', 'remote-group', 'remote-email', 'x-webauth-user', 'x-webauth-groups', 'x-webauth-email',
  'x-auth-request-user', 'x-auth-request-email', 'x-auth-request-groups', 'x-auth-request-preferred-username', 'x-auth-request-access-token']);

/** Headers some backends read as the request's method or path instead of the request line's: a
 * route's `methods` and prefix would not hold against them (X-HTTP-Method-Override: DELETE on a
 * POST), and dropping one would change what the request does: refused. */
const overrideHeaders = new Set(['x-http-method-override', 'x-http-method', 'x-method-override', 'x-original-url', 'x-rewrite-url']);

/** The first header of `headers` (also spelt with "_") that overrides the method or path, if any. */
export function overrideHeader(headers: IncomingHttpHeaders): string | undefined {
  for (const name in headers) {
    if (name.charCodeAt(0) !== 120 /* x */) continue;
    if (overrideHeaders.has(name.includes('_') ? name.replace(/_/g, '-') : name)) return name;
  }
  return undefined;
}

/**
 * Request headers to forward: drops hop-by-hop headers, headers named in Connection, names with
 * "_" that read as a hop-by-hop header or Content-Length, every Impersonate-* and X-Remote-* header, client X-Forwarded-* (and Forwarded, X-Real-IP,
 * X-Client-IP, True-Client-IP), other auth proxies' identity headers, Audit-ID, and Authorization unless kept; a WebSocket's bearer-token
 * subprotocol is taken out of Sec-WebSocket-Protocol.
 */
export function forwardRequestHeaders(headers: IncomingHttpHeaders, keepAuthorization: boolean): OutgoingHttpHeaders {
  const named = connectionTokens(headers);
  const out: OutgoingHttpHeaders = {};
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || hopByHop.has(name) || named.has(name)) continue;
    if (notForwarded(name)) continue;
    if (name === 'authorization' && !keepAuthorization) continue;
    if (name === 'host') continue;
    if (name === 'sec-websocket-protocol') {
      const kept = withoutBearerProtocols(value as string);
      if (kept) out[name] = kept;
      continue;
    }
    out[name] = value;
  }
  return out;
}

/** The bearer-token subprotocol Kubernetes reads a WebSocket's token from (browsers cannot set
 * Authorization): a second credential the gateway did not check, never forwarded. */
const bearerProtocol = 'base64url.bearer.authorization.k8s.io.';

/** A Sec-WebSocket-Protocol value without its bearer-token entries ('' when none is left). */
export function withoutBearerProtocols(value: string): string {
  if (!value.toLowerCase().includes(bearerProtocol)) return value;
  return value.split(',').map((p) => p.trim()).filter((p) => p && !p.toLowerCase().startsWith(bearerProtocol)).join(', ');
}

export function forwardResponseHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const named = connectionTokens(headers);
  const out: OutgoingHttpHeaders = {};
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || hopByHop.has(name) || named.has(name)) continue;
    out[name] = value;
  }
  return out;
}

// client-go's headerKeyEscape: characters that are not legal in a header name are %-encoded; and
// upper-case letters too, because the apiserver lower-cases header names before unescaping: the
// key it applies must be the key that was checked.
const legalHeaderKeyChar = /[!#$&'*+\-.^_`|~0-9a-z]/;
export function escapeExtraKey(key: string): string {
  let out = '';
  for (const ch of key) {
    if (ch !== '%' && legalHeaderKeyChar.test(ch)) out += ch;
    else for (const b of Buffer.from(ch, 'utf8')) out += '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

/** Impersonate-* headers for a caller, with the gateway's own extras (gateway, route, caller).
 * `asked`: what a caller asked to act as (kubectl --as), its groups sent as asked and checked: a
 * lone system:authenticated left out would give a service account its own groups instead. */
export function impersonationHeaders(id: CallerIdentity, extras: Record<string, string>, asked = false): OutgoingHttpHeaders {
  const h: OutgoingHttpHeaders = { 'impersonate-user': toWire(id.username) };
  const groups = asked ? id.groups : groupsToSend(id);
  if (groups.length) h['impersonate-group'] = groups.map(toWire);
  if (id.uid) h['impersonate-uid'] = toWire(id.uid);
  for (const [k, v] of Object.entries(id.extra)) {
    // (the gateway's own keys are its to say: an authenticator's answer naming them is not sent)
    if (v.length && !gatewayExtraKeys.has(k.toLowerCase())) h[`impersonate-extra-${escapeExtraKey(k)}`] = v.map(toWire);
  }
  return Object.assign(h, extraHeaders(extras));
}

/** Impersonate-Extra-* headers for `extras` (one value each). */
export function extraHeaders(extras: Record<string, string>): OutgoingHttpHeaders {
  const h: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(extras)) h[`impersonate-extra-${escapeExtraKey(k)}`] = toWire(v);
  return h;
}

/**
 * The Impersonate-Group values that say something the apiserver would not add by itself. It adds
 * system:authenticated to every impersonated user, and a service account's own two groups when
 * none are sent; each group sent costs it one authorization check per request. A service-account
 * name without those groups (an authenticator may answer so) sends system:authenticated alone,
 * so the apiserver adds none.
 */
export function groupsToSend(id: CallerIdentity): string[] {
  const groups = id.groups.filter((g) => g !== 'system:authenticated');
  const sa = serviceAccountOf(id.username);
  if (sa && groups.length === 2 && groups.includes('system:serviceaccounts') && groups.includes(`system:serviceaccounts:${sa.namespace}`)) return [];
  return sa && groups.length === 0 ? ['system:authenticated'] : groups;
}


/**
 * Impersonate-* headers for service account `name` of namespace `namespace` (the gateway's own):
 * the apiserver adds the account's groups. Throws unless both are plain names, so no spec can
 * turn this into any other user.
 */
export function serviceAccountHeaders(namespace: string, name: string, extras: Record<string, string>): OutgoingHttpHeaders {
  if (!isDnsSubdomain(namespace) || !isDnsSubdomain(name)) {
    throw new Error(`refusing to impersonate service account ${JSON.stringify(namespace)}/${JSON.stringify(name)}`);
  }
  return { 'impersonate-user': `system:serviceaccount:${namespace}:${name}`, ...extraHeaders(extras) };
}

/** What a caller's headers are, made once per cached identity (not per request, nor per route or
 * gateway: a namespace's 10,000 callers on 64 routes would hold 27 KiB each). */
interface CallerMemo { impersonate?: OutgoingHttpHeaders; lean?: OutgoingHttpHeaders; remote?: OutgoingHttpHeaders }
const callers = new WeakMap<CallerIdentity, CallerMemo>();
function memo(id: CallerIdentity): CallerMemo {
  let m = callers.get(id);
  if (!m) callers.set(id, (m = {}));
  return m;
}

/** The caller's own Impersonate-* headers (apiserver routes that impersonate it). */
export function callerImpersonation(id: CallerIdentity): OutgoingHttpHeaders {
  const m = memo(id);
  return (m.impersonate ??= impersonationHeaders(id, {}));
}

/** As callerImpersonation, but a service account with exactly its own groups is named alone: the
 * apiserver adds those groups itself, and UID and token extras are only what its audit log
 * would show (--audit-extras none). */
export function leanImpersonation(id: CallerIdentity): OutgoingHttpHeaders {
  const m = memo(id);
  return (m.lean ??= serviceAccountOf(id.username) && groupsToSend(id).length === 0
    ? { 'impersonate-user': toWire(id.username) } : callerImpersonation(id));
}

/** X-Remote-User and -Group (Service routes). */
export function remoteHeaders(id: CallerIdentity): OutgoingHttpHeaders {
  const m = memo(id);
  if (!m.remote) {
    m.remote = { 'x-remote-user': toWire(id.username) };
    if (id.groups.length) m.remote['x-remote-group'] = id.groups.map(toWire);
  }
  return m.remote;
}

/** The caller's username as a header value (the audit extra naming it): its Impersonate-User's. */
export function wireUsername(id: CallerIdentity): string {
  return callerImpersonation(id)['impersonate-user'] as string;
}
