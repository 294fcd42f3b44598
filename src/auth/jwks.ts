// JWKS authentication: service-account tokens verified offline against the apiserver's OIDC
// discovery keys. No HTTP here: a KeySource (the kube layer) fetches; a RevocationCheck (the
// controller's caches) tells whether bound objects still exist. Fails closed.
import { createHash } from 'node:crypto';
import { decodeProtectedHeader, importJWK, jwtVerify } from 'jose';
import type { CryptoKey, JWK, JWTPayload } from 'jose';
import { AuthUnavailableError, UnauthenticatedError } from '../dataplane/errors.js';
import type { Authenticator } from './authenticator.js';
import { serviceAccountOf, type CallerIdentity } from './identity.js';
import { TokenCache } from './token-cache.js';

export interface OidcDiscovery {
  issuer: string;
  jwks_uri: string;
}

/** Implemented by the kube layer over its authenticated client; throws when it cannot answer. */
export interface KeySource {
  fetchDiscovery(): Promise<OidcDiscovery>;
  /** `jwksUri` is the discovered `jwks_uri` (normally .../openid/v1/jwks). */
  fetchJwks(jwksUri: string): Promise<{ keys: JWK[] }>;
}

export interface ObjectRef {
  name: string;
  uid: string;
}

/** The verified `kubernetes.io` claim of a token, plus its `jti`. */
export interface BoundClaims {
  namespace: string;
  serviceaccount: ObjectRef;
  pod?: ObjectRef;
  secret?: ObjectRef;
  node?: ObjectRef;
  jti?: string;
}

/** Why a verified token is revoked, or null; must be cheap (map lookups), it runs on every request. */
export interface RevocationCheck {
  check(claims: BoundClaims): string | null;
}

/** uid of an object; undefined = does not exist, null = unknown (cache not synced yet). */
export type UidLookup = (namespace: string, name: string) => string | undefined | null;

export interface RevocationLookups {
  serviceAccountUid: UidLookup;
  podUid: UidLookup;
  secretUid: UidLookup;
}

/** The apiserver's rules for bound tokens: each bound object must exist with the same uid. */
export function revocationReason(claims: BoundClaims, lookups: RevocationLookups): string | null {
  const ns = claims.namespace;
  const bound: [string, ObjectRef | undefined, UidLookup][] = [
    ['service account', claims.serviceaccount, lookups.serviceAccountUid],
    ['pod', claims.pod, lookups.podUid],
    ['secret', claims.secret, lookups.secretUid],
  ];
  for (const [kind, ref, lookup] of bound) {
    if (!ref) continue;
    const uid = lookup(ns, ref.name);
    if (uid === null) return `${kind} ${ns}/${ref.name} cannot be checked yet (cache not synced)`;
    if (uid === undefined) return `${kind} ${ns}/${ref.name} no longer exists`;
    if (uid !== ref.uid) return `${kind} ${ns}/${ref.name} has been recreated (uid ${uid}, token bound to ${ref.uid})`;
  }
  return null;
}

const signingAlgs = new Set(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519']);
const curveAlgs: Record<string, string> = { 'P-256': 'ES256', 'P-384': 'ES384', 'P-521': 'ES512' };

/** The signing alg a public JWK is used with: its `alg`, else inferred from kty/crv; null if unusable. */
export function algFor(jwk: JWK): string | null {
  if (jwk.use !== undefined && jwk.use !== 'sig') return null;
  if (jwk.d !== undefined || jwk.k !== undefined) return null; // private or symmetric material
  const alg = jwk.alg ?? (jwk.kty === 'RSA' ? 'RS256'
    : jwk.kty === 'EC' ? curveAlgs[jwk.crv ?? '']
    : jwk.kty === 'OKP' && jwk.crv === 'Ed25519' ? 'EdDSA' : undefined);
  return alg !== undefined && signingAlgs.has(alg) ? alg : null;
}

export interface VerificationKey {
  kid: string | undefined;
  alg: string;
  key: CryptoKey;
}

export interface JwksKeySetOptions {
  /** Periodic refresh; default 5 min. */
  refreshIntervalMs?: number;
  /** Minimum gap between on-demand refreshes (unknown kid, nothing loaded); default 10 s. */
  minRefreshIntervalMs?: number;
  now?: () => number;
  /** Called on every refresh attempt (metrics). */
  onRefresh?: () => void;
}

/** The apiserver's signing keys, imported once; one per operator, shared by all gateways. */
export class JwksKeySet {
  /** Refresh attempts (each fetches discovery and the JWKS once). */
  fetches = 0;
  /** Why the last refresh failed, or null after a success. */
  lastError: unknown = null;
  private current: { issuer: string; byKid: Map<string, VerificationKey>; all: VerificationKey[] } | null = null;
  private pending: Promise<void> | null = null;
  private lastAttempt = -Infinity;
  private timer: NodeJS.Timeout | undefined;
  private readonly intervalMs: number;
  private readonly minGapMs: number;
  private readonly now: () => number;

  constructor(private readonly source: KeySource, options: JwksKeySetOptions = {}) {
    this.intervalMs = options.refreshIntervalMs ?? 300_000;
    this.minGapMs = options.minRefreshIntervalMs ?? 10_000;
    this.now = options.now ?? Date.now;
    this.onRefresh = options.onRefresh;
  }

  private readonly onRefresh?: () => void;

  get loaded(): boolean {
    return this.current !== null;
  }

  /** The discovered issuer ('' before the first successful refresh). */
  get issuer(): string {
    return this.current?.issuer ?? '';
  }

  /** Loads now and then every refresh interval (timer unref'd). */
  start(): void {
    if (this.timer) return;
    this.refresh().catch(() => {});
    this.timer = setInterval(() => this.refresh().catch(() => {}), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Fetches and imports the keys; concurrent callers share one fetch. On failure the last good set stays. */
  refresh(): Promise<void> {
    if (!this.pending) {
      this.lastAttempt = this.now();
      this.fetches++;
      this.onRefresh?.();
      this.pending = this.load().then(
        (next) => { this.current = next; this.lastError = null; },
        (err) => { this.lastError = err; throw err; },
      ).finally(() => { this.pending = null; });
    }
    return this.pending;
  }

  /** Refreshes unless one ran within the minimum gap (an in-flight one is joined); never throws. */
  async refreshIfAllowed(): Promise<void> {
    if (this.pending || this.now() - this.lastAttempt >= this.minGapMs) await this.refresh().catch(() => {});
  }

  /** The key with this kid, or every key for `alg` when the token has no kid. */
  keysFor(kid: string | undefined, alg: string): VerificationKey[] {
    if (!this.current) return [];
    if (kid === undefined) return this.current.all.filter((k) => k.alg === alg);
    const k = this.current.byKid.get(kid);
    return k ? [k] : [];
  }

  hasKid(kid: string): boolean {
    return this.current?.byKid.has(kid) ?? false;
  }

  private async load() {
    const discovery = await this.source.fetchDiscovery();
    if (typeof discovery?.issuer !== 'string' || !discovery.issuer) throw new Error('OIDC discovery has no issuer');
    const jwks = await this.source.fetchJwks(discovery.jwks_uri);
    const all: VerificationKey[] = [];
    for (const jwk of Array.isArray(jwks?.keys) ? jwks.keys : []) {
      const alg = algFor(jwk);
      if (!alg) continue;
      try {
        const key = await importJWK(jwk, alg);
        if (key instanceof Uint8Array) continue;
        all.push({ kid: jwk.kid, alg, key });
      } catch {
        // A malformed key is skipped; the others still count.
      }
    }
    if (all.length === 0) throw new Error('the JWKS holds no usable signing key');
    const byKid = new Map<string, VerificationKey>();
    for (const k of all) if (k.kid !== undefined) byKid.set(k.kid, k);
    return { issuer: discovery.issuer, byKid, all };
  }
}

export interface JwksAuthenticatorOptions {
  revocation?: RevocationCheck;
  /** Leeway for exp/nbf; default 0, at most 5 s. */
  clockToleranceSeconds?: number;
  now?: () => number;
  onCacheLookup?: (hit: boolean) => void;
}

export class JwksAuthenticator implements Authenticator {
  /** Signature verifications performed (cache misses that reached a key). */
  verifications = 0;
  private readonly cache: TokenCache<{ identity: CallerIdentity; claims: BoundClaims }>;
  private readonly revocation: RevocationCheck | undefined;
  private readonly tolerance: number;
  private readonly now: () => number;

  constructor(
    private readonly keySet: JwksKeySet,
    private readonly audiences: string[],
    private readonly cacheTTLSeconds: number,
    options: JwksAuthenticatorOptions = {},
  ) {
    this.revocation = options.revocation;
    this.tolerance = Math.min(Math.max(options.clockToleranceSeconds ?? 0, 0), 5);
    this.now = options.now ?? Date.now;
    this.cache = new TokenCache(10_000, this.now, options.onCacheLookup);
  }

  async authenticate(token: string): Promise<CallerIdentity> {
    const key = createHash('sha256').update(token).digest('base64url');
    const { identity, claims } = await this.cache.getOrLoad(key, () => this.verify(token));
    const revoked = this.revocation?.check(claims);
    if (revoked) throw new UnauthenticatedError(`invalid bearer token: revoked: ${revoked}`);
    return identity;
  }

  private async verify(token: string): Promise<{ value: { identity: CallerIdentity; claims: BoundClaims }; ttlMs: number }> {
    if (!this.keySet.loaded) await this.keySet.refreshIfAllowed();
    if (!this.keySet.loaded) {
      throw new AuthUnavailableError('token verification unavailable: the apiserver signing keys could not be loaded', { cause: this.keySet.lastError });
    }
    let header;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw new UnauthenticatedError('invalid bearer token: not a JWS compact token');
    }
    const { kid, alg } = header;
    if (typeof alg !== 'string' || !signingAlgs.has(alg)) throw new UnauthenticatedError(`invalid bearer token: alg ${String(alg)} is not accepted`);
    if (kid !== undefined && typeof kid !== 'string') throw new UnauthenticatedError('invalid bearer token: malformed kid');
    if (kid !== undefined && !this.keySet.hasKid(kid)) await this.keySet.refreshIfAllowed();
    const keys = this.keySet.keysFor(kid, alg);
    if (keys.length === 0) {
      throw new UnauthenticatedError(kid === undefined
        ? `invalid bearer token: no signing key for alg ${alg}`
        : `invalid bearer token: unknown signing key ${kid}`);
    }
    let payload: JWTPayload | undefined;
    let lastErr: unknown;
    for (const k of keys) {
      this.verifications++;
      try {
        ({ payload } = await jwtVerify(token, k.key, {
          algorithms: [k.alg], // pinned to the key: HS256 or none never pass
          issuer: this.keySet.issuer,
          audience: this.audiences,
          clockTolerance: this.tolerance,
          currentDate: new Date(this.now()),
          requiredClaims: ['exp', 'sub'],
        }));
        break;
      } catch (err) {
        lastErr = err;
      }
    }
    if (!payload) throw new UnauthenticatedError(`invalid bearer token: ${(lastErr as Error)?.message ?? 'verification failed'}`, { cause: lastErr });
    const claims = boundClaims(payload);
    const ttlMs = Math.min(this.cacheTTLSeconds * 1000, payload.exp! * 1000 - this.now());
    return { value: { identity: identityOf(claims), claims }, ttlMs };
  }
}

function ref(v: unknown): ObjectRef | undefined {
  if (v === undefined) return undefined;
  const o = v as Partial<ObjectRef> | null;
  if (typeof o?.name !== 'string' || !o.name || typeof o.uid !== 'string' || !o.uid) {
    throw new UnauthenticatedError('invalid bearer token: malformed kubernetes.io claim');
  }
  return { name: o.name, uid: o.uid };
}

function boundClaims(payload: JWTPayload): BoundClaims {
  const k8s = payload['kubernetes.io'] as Record<string, unknown> | undefined;
  if (!k8s || typeof k8s !== 'object' || typeof k8s.namespace !== 'string' || !k8s.namespace) {
    throw new UnauthenticatedError('invalid bearer token: not a service-account token (no kubernetes.io claim)');
  }
  const serviceaccount = ref(k8s.serviceaccount);
  if (!serviceaccount) throw new UnauthenticatedError('invalid bearer token: kubernetes.io claim names no service account');
  const sa = serviceAccountOf(payload.sub ?? '');
  if (!sa || sa.namespace !== k8s.namespace || sa.name !== serviceaccount.name) {
    throw new UnauthenticatedError('invalid bearer token: sub does not match the kubernetes.io service account');
  }
  const claims: BoundClaims = { namespace: k8s.namespace, serviceaccount };
  const pod = ref(k8s.pod), secret = ref(k8s.secret), node = ref(k8s.node);
  if (pod) claims.pod = pod;
  if (secret) claims.secret = secret;
  if (node) claims.node = node;
  if (typeof payload.jti === 'string' && payload.jti) claims.jti = payload.jti;
  return claims;
}

/** What TokenReview answers for the same token. */
export function identityOf(c: BoundClaims): CallerIdentity {
  const extra: Record<string, string[]> = {};
  if (c.jti) extra['authentication.kubernetes.io/credential-id'] = [`JTI=${c.jti}`];
  if (c.pod) {
    extra['authentication.kubernetes.io/pod-name'] = [c.pod.name];
    extra['authentication.kubernetes.io/pod-uid'] = [c.pod.uid];
  }
  if (c.node) {
    extra['authentication.kubernetes.io/node-name'] = [c.node.name];
    extra['authentication.kubernetes.io/node-uid'] = [c.node.uid];
  }
  return {
    username: `system:serviceaccount:${c.namespace}:${c.serviceaccount.name}`,
    uid: c.serviceaccount.uid,
    groups: ['system:serviceaccounts', `system:serviceaccounts:${c.namespace}`, 'system:authenticated'],
    extra,
  };
}
