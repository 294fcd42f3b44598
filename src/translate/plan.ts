// The plan: the plain, validated intermediate representation the data plane serves.
// Built by translate(), compared with equal(), printed with printPlan().

/** Whose identity the apiserver sees: never the operator's own (DESIGN.md §2, tenancy). */
export type Identity = 'Impersonate' | 'ServiceAccount' | 'Passthrough';

export interface ApiserverTarget {
  kind: 'apiserver';
  identity: Identity;
  /** identity ServiceAccount: a service account of the gateway's own namespace; else null. */
  serviceAccountName: string | null;
  acceptPaths: string[];
  rejectPaths: string[];
  rejectMethods: string[];
}

export interface Endpoint {
  ip: string;
  port: number;
}

export interface ServiceTarget {
  kind: 'service';
  namespace: string;
  name: string;
  port: string | number;
  scheme: 'http' | 'https';
  /** Ready, serving, non-terminating endpoints on the route's port, sorted. */
  endpoints: Endpoint[];
  /** CA bundle (PEM) for https upstreams; null: the system roots. */
  ca: string | null;
  /** The name upstream certificates are verified against: NAME.NAMESPACE.svc. */
  serverName: string;
  /** Why the route cannot be served (answered with this status), or null. */
  problem: { status: 403 | 503; message: string } | null;
}

export interface RoutePlan {
  name: string;
  pathPrefix: string;
  rewritePrefix: string | null;
  methods: string[] | null;
  timeoutSeconds: number;
  retries: number;
  target: ApiserverTarget | ServiceTarget;
}

export interface AccessRulePlan {
  serviceAccounts: { namespace: string; name: string }[];
  groups: string[];
  users: string[];
  /** null: every route. */
  routes: string[] | null;
  /** A time-boxed grant: matches only from notBefore (inclusive) to notAfter (exclusive), ms since the epoch; null: unbounded. */
  notBefore: number | null;
  notAfter: number | null;
}

/** spec.listener.tls.clientCA, resolved. */
export interface ClientCAPlan {
  /** Where the bundle comes from, for messages: "ConfigMap NS/NAME key K". */
  ref: string;
  /** PEM bundle of the CAs that may sign client certificates. */
  pem: string;
  /** Every request needs a verified certificate; else a bearer token may be used instead. */
  required: boolean;
  /** Put before the username and every group: team:NAMESPACE: for a team's CA. */
  prefix: string;
  /** When the first of its certificates expires, ms since the epoch. */
  notAfter: number;
}

export interface GatewayPlan {
  namespace: string;
  name: string;
  generation: number;
  port: number;
  /** Listener TLS from a kubernetes.io/tls Secret (PEM), `notAfter` its certificate's (ms since the epoch); null: plain HTTP. */
  tls: { secretName: string; cert: string; key: string; notAfter: number; clientCA: ClientCAPlan | null } | null;
  /** issuers: the platform's OIDC issuers (URLs) whose tokens are accepted too. */
  auth: { mode: 'TokenReview' | 'JWKS'; audiences: string[]; cacheTTLSeconds: number; issuers?: string[] };
  access: AccessRulePlan[];
  routes: RoutePlan[];
  rateLimit: { requestsPerSecond: number; burst: number } | null;
  /** Upgraded connections: at most this many open at once, each ended after this long without data. */
  sessions: { maxConcurrent: number; idleTimeoutSeconds: number };
  /** Access log: every request, errors only (status >= 400), none, or errors plus a sample of the rest (0..1). */
  accessLog: { errors: boolean; sample: number };
}

export function planKey(plan: Pick<GatewayPlan, 'namespace' | 'name'>): string {
  return `${plan.namespace}/${plan.name}`;
}

/** Structural equality, ignoring the generation (a new generation with the same plan is a no-op). */
export function equal(a: GatewayPlan | null, b: GatewayPlan | null): boolean {
  if (a === null || b === null) return a === b;
  return same({ ...a, generation: 0 }, { ...b, generation: 0 });
}

/** JSON's equality (undefined members are absent), walked, not written out: a plan's CA bundles
 * (up to 512 KiB, the same string in each of 64 routes) are compared as strings, by reference
 * first, never copied (a serialised plan was 33 MiB and 180 ms on the event loop). */
export function same(x: unknown, y: unknown): boolean {
  if (x === y) return true;
  if (typeof x !== 'object' || typeof y !== 'object' || x === null || y === null) return false;
  if (Array.isArray(x) || Array.isArray(y)) {
    if (!Array.isArray(x) || !Array.isArray(y) || x.length !== y.length) return false;
    for (let i = 0; i < x.length; i++) if (!same(x[i], y[i])) return false;
    return true;
  }
  const a = x as Record<string, unknown>;
  const b = y as Record<string, unknown>;
  let n = 0;
  for (const k in a) {
    if (a[k] === undefined) continue;
    n++;
    if (!Object.hasOwn(b, k) || !same(a[k], b[k])) return false;
  }
  for (const k in b) if (b[k] !== undefined) n--;
  return n === 0;
}

/** Printable form for logs and golden files: the TLS private key is redacted. */
export function printPlan(plan: GatewayPlan): string {
  const tls = plan.tls && { ...plan.tls, key: '[REDACTED]' };
  return JSON.stringify({ ...plan, tls }, null, 2);
}
