// Pure translation: AccessGateway (defaulted) + cluster snapshot -> plan + conditions.
// No I/O, no clock: golden-tested.
import { gatewayNameProblem, isDnsSubdomain, isGatewayName, teamPrefix } from '../api/names.js';
import { decodedPathProblem, parseDateTime } from '../api/validate.js';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import { NamespacedRecent } from '../recent.js';
import type { AccessGateway, ListenerTLSClientCA, Route } from '../api/types.js';
import { describePatternProblem, patternTotals, routePatterns, type PatternTotals } from '../api/regex.js';
import { ConditionType, mergeReasons, Reason } from '../api/conditions.js';
import { accessLogAnnotation, listenerTLSLabel } from '../api/labels.js';
import { certificateBlocks, GatewayBundles, keyTypeProblem, textKey } from '../api/pem.js';
import { runSteps } from '../steps.js';
import { cond, type ConditionDraft } from './conditions.js';
import { caBundleMissing, caBundleText, resolveService, type ServiceProblem, type ServiceSnapshot } from './services.js';
import type { AccessRulePlan, ApiserverTarget, ClientCAPlan, GatewayPlan, RoutePlan } from './plan.js';

/** What the controller knows about the cluster that the spec alone does not say. */
export interface Snapshot extends ServiceSnapshot {
  /** The port the allocator gave this gateway, or why it could not (PortConflict, TooManyGateways). */
  port: { port: number } | { conflict: string; reason?: Reason };
  /** Secrets labelled access-gateway.io/listener-tls=true, by namespace/name. */
  secrets?: Record<string, SecretLike>;
  /** The platform's OIDC issuers by URL: null when usable, else why not. */
  issuers?: Record<string, string | null>;
  /** Why the labelled Secrets and ConfigMaps the gateway names are not read (its namespace holds too many bytes of them). */
  setAside?: string;
}

export interface SecretLike {
  type?: string;
  data?: Record<string, string>;
  metadata?: { labels?: Record<string, string> };
}


/** The access-log annotation: all (default) | errors | none | sample:PERCENT (errors always logged). */
export function accessLog(v: string | undefined): GatewayPlan['accessLog'] {
  if (v === 'none') return { errors: false, sample: 0 };
  if (v === 'errors') return { errors: true, sample: 0 };
  const m = /^sample:(\d+(?:\.\d+)?)$/.exec(v ?? '');
  if (m) return { errors: true, sample: Math.min(100, Number(m[1])) / 100 };
  return { errors: true, sample: 1 };
}

/** Largest RSA key a listener may sign handshakes with, and the smallest it may have. */
export const maxRSABits = 4096;
export const minRSABits = 2048;

/** What a listener's tls.crt may hold (certificates, their DER bytes): every handshake sends them,
 * and each connection waiting on its handshake holds a copy (600 certificates: +0.9 MiB a
 * connection, and 2.4× the loop time a handshake was charged). A chain of leaf, intermediates and
 * root is ~2–10 KiB. */
export const maxListenerChainCertificates = 10;
export const maxListenerChainBytes = 32 * 1024;
/** And its text whatever it holds (comments, `openssl x509 -text` output: ~8 KiB a certificate). */
export const maxListenerCertText = 256 * 1024;

/** Whether OpenSSL refuses a listener's pair (its message), for the last pairs asked about (at most
 * 16 a namespace: one team's pairs cannot push out another's). */
const openSSLRefuses = new NamespacedRecent<string, string | null>(64, 16);

/** The PEM pair of a listener TLS Secret, or why it cannot be used. */
export function listenerTLS(ns: string, name: string, secrets: Record<string, SecretLike> | undefined):
  { cert: string; key: string; notAfter: number } | { problem: string } {
  const s = secrets?.[`${ns}/${name}`];
  if (!s) return { problem: `Secret ${ns}/${name} not found (it must be labelled ${listenerTLSLabel}=true)` };
  if (s.type !== 'kubernetes.io/tls') return { problem: `Secret ${ns}/${name} has type ${s.type ?? 'Opaque'}, not kubernetes.io/tls` };
  let pair = listenerPairs.get(s);
  if (!pair) listenerPairs.set(s, (pair = checkPair(ns, name, s)));
  return pair;
}

/** A listener Secret's pair by the Secret as cached (a new object for each version it has): decoded
 * and checked once, the same strings in each plan (a plan an open request holds keeps its own
 * copy otherwise: 700 KB of PEM each). */
const listenerPairs = new WeakMap<SecretLike, { cert: string; key: string; notAfter: number } | { problem: string }>();

function checkPair(ns: string, name: string, s: SecretLike): { cert: string; key: string; notAfter: number } | { problem: string } {
  const written = Buffer.from(s.data?.['tls.crt'] ?? '', 'base64').toString('utf8');
  const key = Buffer.from(s.data?.['tls.key'] ?? '', 'base64').toString('utf8');
  if (written.length > maxListenerCertText) return { problem: `Secret ${ns}/${name}: tls.crt is ${Math.ceil(written.length / 1024)} KiB of text; at most ${maxListenerCertText / 1024} KiB` };
  const chain = certificateBlocks(written);
  const cert = chain.blocks.join(''); // what is served: the blocks counted, nothing else
  const certificates = chain.blocks.length + (chain.unended ? 1 : 0);
  if (certificates > maxListenerChainCertificates) {
    return { problem: `Secret ${ns}/${name}: tls.crt holds ${certificates} certificates; at most ${maxListenerChainCertificates} (each TLS handshake sends them)` };
  }
  if (chain.bytes > maxListenerChainBytes) {
    return { problem: `Secret ${ns}/${name}: tls.crt's certificates are ${Math.ceil(chain.bytes / 1024)} KiB; at most ${maxListenerChainBytes / 1024} KiB (each TLS handshake sends them)` };
  }
  try {
    const x = new X509Certificate(cert);
    const k = createPrivateKey(key);
    // a handshake signs with the key on the event loop every team shares: RSA-16384 takes seconds
    const bits = k.asymmetricKeyDetails?.modulusLength;
    if (bits !== undefined && bits > maxRSABits) return { problem: `Secret ${ns}/${name}: tls.key is a ${bits}-bit ${k.asymmetricKeyType} key; at most ${maxRSABits} bits (each TLS handshake signs with it)` };
    // OpenSSL refuses small ones only once the listener is built (after its routes' filters are)
    if (bits !== undefined && bits < minRSABits) return { problem: `Secret ${ns}/${name}: tls.key is a ${bits}-bit ${k.asymmetricKeyType} key; at least ${minRSABits} bits` };
    // as a CA key: a huge RSA exponent makes each signature cost more; other curves and DSA no client takes
    const why = keyTypeProblem(k.asymmetricKeyType, k.asymmetricKeyDetails);
    if (why) return { problem: `Secret ${ns}/${name}: tls.key ${why}` };
    if (!x.checkPrivateKey(k)) return { problem: `Secret ${ns}/${name}: tls.key does not match tls.crt` };
    // what OpenSSL refuses of the chain (a 1024-bit intermediate) is said here, not thrown once
    // the listener is being built
    const refused = openSSLRefuses.get(ns, `${textKey(cert)}\u0000${textKey(key)}`, () => {
      try {
        createSecureContext({ cert, key });
        return null;
      } catch (err) {
        return (err as Error).message;
      }
    });
    if (refused) return { problem: `Secret ${ns}/${name}: OpenSSL refuses tls.crt/tls.key: ${refused}` };
    return { cert, key, notAfter: x.validToDate.getTime() };
  } catch (err) {
    return { problem: `Secret ${ns}/${name}: tls.crt/tls.key are not a valid PEM certificate and key: ${(err as Error).message}` };
  }
}

/** spec.listener.tls.clientCA resolved: a team's CA, so every name it yields is prefixed team:NS:. */
export function clientCA(ns: string, ref: ListenerTLSClientCA | undefined, snap: Pick<ServiceSnapshot, 'caBundles'>, bundles: GatewayBundles): ClientCAPlan | null | { problem: string } {
  if (!ref) return null;
  const where = `${ref.kind} ${ns}/${ref.name} key ${ref.key}`;
  const pem = caBundleText(snap, ref.kind, ns, ref.name, ref.key);
  if (pem === undefined) return { problem: `client CA ${where}: ${caBundleMissing(snap, ref.kind, ns, ref.name, ref.key)}` };
  const bundle = bundles.parse(pem);
  if ('problem' in bundle) return { problem: `client CA ${where}: ${bundle.problem}` };
  const notAfter = Math.min(...bundle.certificates.map((c) => c.validToDate.getTime()));
  return { ref: where, pem: bundle.pem, required: ref.mode === 'Required', prefix: teamPrefix(ns), notAfter };
}

export interface Translation {
  plan: GatewayPlan | null;
  /** Accepted and ResolvedRefs; Programmed and Ready come from applying the plan. */
  conditions: ConditionDraft[];
  /** status.routes: ready endpoints per service route. */
  routes: { name: string; endpoints: number }[];
}

/** The apiserver identity of a route, or why it is refused. The CRD refuses the same; this
 * guards objects stored before it did (the removed identity Gateway). */
function identityOf(a: NonNullable<Route['apiserver']>, field: string): Pick<ApiserverTarget, 'identity' | 'serviceAccountName'> | { invalid: string } {
  const identity = (a.identity ?? 'Impersonate') as string;
  if (identity === 'ServiceAccount') {
    const name = a.serviceAccountName ?? '';
    if (!isDnsSubdomain(name)) return { invalid: `${field}.serviceAccountName ${JSON.stringify(name)}: must be the name of a service account of this namespace` };
    return { identity, serviceAccountName: name };
  }
  if (identity !== 'Impersonate' && identity !== 'Passthrough') {
    return { invalid: identity === 'Gateway'
      ? `${field}.identity: identity Gateway was removed: it sent requests with the operator's own credentials; use identity ServiceAccount with serviceAccountName, or Impersonate`
      : `${field}.identity: ${JSON.stringify(identity)} is not one of Impersonate, ServiceAccount, Passthrough` };
  }
  if (a.serviceAccountName !== undefined) return { invalid: `${field}.serviceAccountName: only allowed with identity ServiceAccount` };
  return { identity, serviceAccountName: null };
}

/** `programs`: the RE2 instructions of the routes' filters so far, and their patterns, added to. */
function routePlan(r: Route, i: number, ns: string, snap: Snapshot, problems: ServiceProblem[], programs: PatternTotals, bundles: GatewayBundles): RoutePlan | { invalid: string; reason: string } {
  const base = {
    name: r.name,
    pathPrefix: r.pathPrefix,
    rewritePrefix: r.rewritePrefix ?? null,
    methods: r.methods?.length ? [...r.methods] : null,
    timeoutSeconds: r.timeoutSeconds ?? 30,
    retries: r.retries ?? 0,
  };
  // stored before the CRD refused it: never matched, or forwarded a path the filters did not read
  for (const [field, p] of [['pathPrefix', r.pathPrefix], ['rewritePrefix', r.rewritePrefix]] as const) {
    const why = p === undefined ? null : decodedPathProblem(p);
    if (why) return { invalid: `spec.routes[${i}].${field} ${JSON.stringify(p)}: ${why}`, reason: Reason.InvalidPath };
  }
  if (r.apiserver) {
    const a = r.apiserver;
    const acceptPaths = a.acceptPaths ?? ['^.*'];
    const rejectPaths = a.rejectPaths ?? [];
    const rejectMethods = a.rejectMethods ?? [];
    const at = `spec.routes[${i}].apiserver`;
    const patterns = routePatterns([[`${at}.acceptPaths`, acceptPaths], [`${at}.rejectPaths`, rejectPaths], [`${at}.rejectMethods`, rejectMethods]], at, programs);
    if ('why' in patterns) return { invalid: describePatternProblem(patterns), reason: Reason.InvalidRegex };
    const who = identityOf(a, `spec.routes[${i}].apiserver`);
    if ('invalid' in who) return { invalid: who.invalid, reason: Reason.InvalidIdentity };
    return { ...base, target: { kind: 'apiserver', ...who, acceptPaths, rejectPaths, rejectMethods } };
  }
  const { target, problem } = resolveService(ns, r, snap, bundles);
  if (problem) problems.push(problem);
  return { ...base, target };
}

/** The CA bundles the gateway names, admitted in the spec's order: the listener's client CA first. */
function gatewayBundles(gw: AccessGateway, snap: Snapshot): GatewayBundles {
  const ns = gw.metadata.namespace;
  const pem = (ref: { kind: string; name: string; key: string } | undefined) => ref && caBundleText(snap, ref.kind, ns, ref.name, ref.key);
  return new GatewayBundles(ns, [pem(gw.spec.listener?.tls?.clientCA), ...gw.spec.routes.map((r) => pem(r.service?.caRef))]);
}

/** Not accepted, for a reason found before any reference was read: nothing served. */
export function notAccepted(reason: string, message: string): Translation {
  return { plan: null, routes: [], conditions: [cond(ConditionType.Accepted, false, reason, message), cond(ConditionType.ResolvedRefs, true, Reason.ResolvedRefs, 'no references checked')] };
}

export function translate(gw: AccessGateway, snap: Snapshot): Translation {
  return runSteps(translateSteps(gw, snap));
}

/**
 * translate() in steps, for a caller that lets other work run between them (the reconciler: the
 * event loop is every team's): each route is one (compiling its patterns, up to a route's
 * 2,048 RE2 instructions, is what costs), and the listener's certificates another.
 */
export function* translateSteps(gw: AccessGateway, snap: Snapshot): Generator<void, Translation, void> {
  // stored before the CRD refused such names: its Service could not be made
  if (!isGatewayName(gw.metadata.name)) return notAccepted(Reason.InvalidName, `${gatewayNameProblem}; make it again under such a name`);
  const ns = gw.metadata.namespace;
  const spec = gw.spec;
  const routes: RoutePlan[] = [];
  const problems: ServiceProblem[] = [];
  const programs = patternTotals();
  const bundles = gatewayBundles(gw, snap);
  for (const [i, r] of spec.routes.entries()) {
    if (i > 0) yield;
    const p = routePlan(r, i, ns, snap, problems, programs, bundles);
    if ('invalid' in p) return notAccepted(p.reason, p.invalid);
    routes.push(p);
  }
  const routeStatus = routes.flatMap((r) => (r.target.kind === 'service' ? [{ name: r.name, endpoints: r.target.endpoints.length }] : []));
  if (snap.setAside) {
    return { plan: null, routes: routeStatus, conditions: [cond(ConditionType.Accepted, true, Reason.Accepted, 'spec is valid'),
      cond(ConditionType.ResolvedRefs, false, Reason.InvalidCertificateRef, snap.setAside)] };
  }
  yield;
  let tls: GatewayPlan['tls'] = null;
  let unservable = false; // a reference the listener cannot do without: not served
  if (spec.listener?.tls) {
    const pair = listenerTLS(ns, spec.listener.tls.secretName, snap.secrets);
    if ('problem' in pair) {
      problems.push({ reason: Reason.InvalidCertificateRef, message: `${pair.problem}; the listener is not served in plain HTTP instead` });
      unservable = true;
    } else {
      tls = { secretName: spec.listener.tls.secretName, ...pair, clientCA: null };
    }
    const c = clientCA(ns, spec.listener.tls.clientCA, snap, bundles);
    if (c && 'problem' in c) {
      problems.push({ reason: Reason.InvalidCertificateRef, message: `${c.problem}; the listener is not served without it` });
      unservable = true;
    } else if (tls) {
      tls.clientCA = c;
    }
  }
  const issuers = spec.authentication.issuers ?? [];
  for (const url of issuers) {
    if (!snap.issuers || !(url in snap.issuers)) {
      problems.push({ reason: Reason.IssuerNotFound, message: `issuer ${url} is not configured by the platform (the operator's --authentication-config)` });
      unservable = true; // not served: a gateway never runs with less authentication than it says
    }
  }
  const badIssuer = issuers.map((u) => snap.issuers?.[u]).find((p) => typeof p === 'string');
  if (badIssuer) return notAccepted(Reason.InvalidIssuer, badIssuer);
  // every unresolved reference counts, each with its reason
  const resolved = problems.length
    ? cond(ConditionType.ResolvedRefs, false, mergeReasons(problems.map((p) => p.reason)), problems.map((p) => p.message).join('; '))
    : cond(ConditionType.ResolvedRefs, true, Reason.ResolvedRefs, 'all references resolved');
  if ('conflict' in snap.port) {
    return { plan: null, routes: routeStatus, conditions: [cond(ConditionType.Accepted, false, snap.port.reason ?? Reason.PortConflict, snap.port.conflict), resolved] };
  }
  if (unservable) return { plan: null, routes: routeStatus, conditions: [cond(ConditionType.Accepted, true, Reason.Accepted, 'spec is valid'), resolved] };
  // a time the window cannot be read from is never read as "no limit": the gateway is not accepted
  const badTime = (spec.access ?? []).flatMap((a, i) => (['notBefore', 'notAfter'] as const)
    .filter((k) => a[k] !== undefined && parseDateTime(a[k]!) === null).map((k) => `spec.access[${i}].${k} ${JSON.stringify(a[k])}`));
  if (badTime.length) {
    return { plan: null, routes: routeStatus, conditions: [cond(ConditionType.Accepted, false, Reason.InvalidAccessRule,
      `${badTime.join(', ')}: not an RFC 3339 date-time (e.g. 2026-12-01T09:00:00Z)`), resolved] };
  }
  const access: AccessRulePlan[] = (spec.access ?? []).map((a) => ({
    serviceAccounts: (a.serviceAccounts ?? []).map((s) => ({ namespace: s.namespace, name: s.name })),
    groups: [...(a.groups ?? [])],
    users: [...(a.users ?? [])],
    routes: a.routes?.length ? [...a.routes] : null,
    notBefore: a.notBefore === undefined ? null : parseDateTime(a.notBefore),
    notAfter: a.notAfter === undefined ? null : parseDateTime(a.notAfter),
  }));
  const plan: GatewayPlan = {
    namespace: ns,
    name: gw.metadata.name,
    generation: gw.metadata.generation ?? 0,
    port: snap.port.port,
    tls,
    auth: {
      mode: spec.authentication.mode ?? 'TokenReview',
      audiences: [...spec.authentication.audiences],
      cacheTTLSeconds: spec.authentication.cacheTTLSeconds ?? 10,
      ...(issuers.length ? { issuers: [...issuers] } : {}),
    },
    access,
    routes,
    accessLog: accessLog(gw.metadata.annotations?.[accessLogAnnotation]),
    sessions: { maxConcurrent: spec.sessions?.maxConcurrent ?? 32, idleTimeoutSeconds: spec.sessions?.idleTimeoutSeconds ?? 900 },
    rateLimit: spec.rateLimit ? { requestsPerSecond: spec.rateLimit.requestsPerSecond, burst: spec.rateLimit.burst ?? spec.rateLimit.requestsPerSecond } : null,
  };
  return { plan, routes: routeStatus, conditions: [cond(ConditionType.Accepted, true, Reason.Accepted, 'spec is valid and the port is free'), resolved] };
}
