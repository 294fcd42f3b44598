// JWKS authentication: service-account tokens verified offline against the apiserver's OIDC
// discovery keys. No HTTP here: a KeySource (the kube layer) fetches; a RevocationCheck (the
// controller's caches) tells whether bound objects still exist. Fails closed.
import { importJWK, jwtVerify } from 'jose';
import type { CryptoKey, JWK, JWTPayload } from 'jose';
import { realClock, type Clock, type Timer } from '../clock.js';
import { AuthUnavailableError, UnauthenticatedError } from '../errors.js';
import { negativeCacheTtlMs, type Authenticator } from './authenticator.js';
import { serviceAccountOf, type CallerIdentity } from './identity.js';
import { apiserverLeewaySeconds, defaultClockSkewSeconds, parseUnverified, precheckClaims, signingAlgs, type UnverifiedJwt } from './jwt-precheck.js';
import { TokenCache, type EntryBudget } from './token-cache.js';
import { tokenKey } from './token-key.js';

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

/** The verified `kubernetes.io` claim of a token, plus its `jti` and `iat` (seconds). */
export interface BoundClaims {
  namespace: string;
  serviceaccount: ObjectRef;
  pod?: ObjectRef;
  secret?: ObjectRef;
  node?: ObjectRef;
  jti?: string;
  iat?: number;
}

/** A verified token's bound objects: all live (null), one gone (revoked), or not known yet. */
export type Revocation = null | { revoked: string } | { unknown: string };

/** Whether a verified token is revoked; must be cheap (map lookups), it runs on every request. */
export interface RevocationCheck {
  check(claims: BoundClaims): Revocation;
}

/** A RevocationCheck fed by caches that load in the background. */
export interface RevocationSource extends RevocationCheck {
  /** Starts the caches (once). */
  start(): void;
  /** Every cache has synced once. */
  readonly synced: boolean;
  /** Resolves when every cache has synced once (does not start them). */
  whenSynced(): Promise<void>;
}

/** What a cache knows of a live object. */
export interface LiveObject {
  uid: string;
  deletionTimestamp?: string;
}

/** An object by namespace ('' when cluster-scoped) and name; undefined = does not exist, null =
 * unknown (cache not synced yet). */
export type ObjectLookup = (namespace: string, name: string) => LiveObject | undefined | null;

export interface RevocationLookups {
  serviceAccount: ObjectLookup;
  pod: ObjectLookup;
  secret: ObjectLookup;
  node: ObjectLookup;
  /** Whether the watch delivered the deletion (or replacement) of an object with this uid lately. */
  gone?: (uid: string) => boolean;
}

/** Deletion pending longer than this counts as deleted (the apiserver's jwt.DefaultLeeway). */
export const deletionGraceMs = apiserverLeewaySeconds * 1000;
/** A token issued this recently may name an object the watch has not delivered yet; its object
 * missing (or another uid) then is unknown (503), unless the watch delivered its deletion. */
export const watchLagMs = 15_000;

/** The apiserver's rules for bound tokens: each bound object must exist with the same uid and not
 * have been marked for deletion more than 60 s ago. A node binding is checked for every token that
 * carries one (the apiserver checks it only for tokens bound to the node itself). */
export function revocationReason(claims: BoundClaims, lookups: RevocationLookups, nowMs: number): Revocation {
  const ns = claims.namespace;
  const bound: [string, string, ObjectRef | undefined, ObjectLookup][] = [
    ['service account', ns, claims.serviceaccount, lookups.serviceAccount],
    ['pod', ns, claims.pod, lookups.pod],
    ['secret', ns, claims.secret, lookups.secret],
    ['node', '', claims.node, lookups.node],
  ];
  for (const [kind, namespace, ref, lookup] of bound) {
    if (!ref) continue;
    const what = `${kind} ${namespace ? `${namespace}/` : ''}${ref.name}`;
    const o = lookup(namespace, ref.name);
    if (o === null) return { unknown: `${what} cannot be checked yet (cache not synced)` };
    if ((o === undefined || o.uid !== ref.uid) && claims.iat !== undefined && claims.iat * 1000 > nowMs - watchLagMs && !lookups.gone?.(ref.uid)) {
      // the apiserver issued it for a live object: a new pod or a recreated account not watched yet
      return { unknown: `${what} (uid ${ref.uid}) is not in the cache yet` };
    }
    if (o === undefined) return { revoked: `${what} no longer exists` };
    if (o.uid !== ref.uid) return { revoked: `${what} has been recreated (uid ${o.uid}, token bound to ${ref.uid})` };
    const deleted = o.deletionTimestamp ? Date.parse(o.deletionTimestamp) : NaN;
    if (deleted < nowMs - deletionGraceMs) return { revoked: `${what} is being deleted (since ${o.deletionTimestamp})` };
  }
  return null;
}

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
  /** Minimum gap between on-demand refreshes (unknown kid, nothing loaded); default 10 s. Also the
   * retry interval while nothing is loaded. */
  minRefreshIntervalMs?: number;
  /** Time and timers (the periodic refresh and the retries); default the real clock. */
  clock?: Clock;
  /** Called on every refresh attempt (metrics). */
  onRefresh?: () => void;
}

/** The apiserver's signing keys, imported once; one per operator, shared by all gateways.
 * Fetches are never concurrent (callers share one) and on-demand ones at most one per minimum gap. */
export class JwksKeySet {
  /** Refresh attempts (each fetches discovery and the JWKS once). */
  fetches = 0;
  /** Why the last refresh failed, or null after a success. */
  lastError: unknown = null;
  /** When the current keys were fetched (this process's clock); -Infinity before the first load. */
  loadedAt = -Infinity;
  private current: { issuer: string; byKid: Map<string, VerificationKey>; all: VerificationKey[] } | null = null;
  private pending: Promise<void> | null = null;
  private lastAttempt = -Infinity;
  private running = false;
  private timer: Timer | undefined;
  private retryTimer: Timer | undefined;
  private readonly intervalMs: number;
  private readonly minGapMs: number;
  private readonly clock: Clock;
  private readonly onRefresh?: () => void;
  private markLoaded!: () => void;
  private readonly loadedOnce = new Promise<void>((r) => { this.markLoaded = r; });

  constructor(private readonly source: KeySource, options: JwksKeySetOptions = {}) {
    this.intervalMs = options.refreshIntervalMs ?? 300_000;
    this.minGapMs = options.minRefreshIntervalMs ?? 10_000;
    this.clock = options.clock ?? realClock;
    this.onRefresh = options.onRefresh;
  }

  get loaded(): boolean {
    return this.current !== null;
  }

  /** Resolves once keys have been loaded (does not start loading). */
  whenLoaded(): Promise<void> {
    return this.loadedOnce;
  }

  /** The discovered issuer ('' before the first successful refresh). */
  get issuer(): string {
    return this.current?.issuer ?? '';
  }

  /** When an on-demand refresh is allowed again (this process's clock). */
  get nextRefreshAt(): number {
    return this.lastAttempt + this.minGapMs;
  }

  /** Loads now (retrying every minimum gap until loaded) and then every refresh interval (timers unref'd). */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.loadOrRetry();
    this.schedule();
  }

  stop(): void {
    this.running = false;
    if (this.timer) this.clock.clearTimeout(this.timer);
    if (this.retryTimer) this.clock.clearTimeout(this.retryTimer);
    this.timer = undefined;
    this.retryTimer = undefined;
  }

  /** The periodic refresh, every refresh interval. */
  private schedule(): void {
    this.timer = this.clock.setTimeout(() => {
      if (!this.running) return;
      this.refresh().catch(() => {});
      this.schedule();
    }, this.intervalMs);
    this.timer.unref?.();
  }

  private loadOrRetry(): void {
    this.refresh().catch(() => {
      if (this.loaded || !this.running) return;
      this.retryTimer = this.clock.setTimeout(() => this.loadOrRetry(), this.minGapMs);
      this.retryTimer.unref?.();
    });
  }

  /** Fetches and imports the keys; concurrent callers share one fetch. On failure the last good set stays. */
  refresh(): Promise<void> {
    if (!this.pending) {
      const started = this.clock.now();
      this.lastAttempt = started;
      this.fetches++;
      this.onRefresh?.();
      this.pending = this.load().then(
        (next) => {
          this.current = next;
          this.loadedAt = started;
          this.lastError = null;
          this.markLoaded();
        },
        (err) => { this.lastError = err; throw err; },
      ).finally(() => { this.pending = null; });
    }
    return this.pending;
  }

  /** Refreshes unless one ran within the minimum gap (an in-flight one is joined); never throws. */
  async refreshIfAllowed(): Promise<void> {
    if (this.pending || this.clock.now() - this.lastAttempt >= this.minGapMs) await this.refresh().catch(() => {});
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

  /** Whether a key that verified a token (its kid and alg) is still among the keys: a key the
   * apiserver removed (rotated out after a compromise, say) no longer vouches for cached tokens.
   * A key without kid: whether one of its alg without kid remains. */
  stillHas(key: { kid: string | undefined; alg: string }): boolean {
    if (!this.current) return false;
    if (key.kid !== undefined) return this.current.byKid.get(key.kid)?.alg === key.alg;
    return this.current.all.some((k) => k.kid === undefined && k.alg === key.alg);
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

/** Whether JWKS gateways can verify now: keys loaded and revocation caches synced. */
export class JwksReadiness {
  constructor(private readonly keySet: JwksKeySet, private readonly revocation: RevocationSource) {}

  /** Cheap; starts loading keys and caches on first call. */
  ready(): boolean {
    this.keySet.start();
    this.revocation.start();
    return this.keySet.loaded && this.revocation.synced;
  }

  /** Calls `cb` once, when ready (at once if already ready). */
  onReady(cb: () => void): void {
    void Promise.all([this.keySet.whenLoaded(), this.revocation.whenSynced()]).then(() => cb());
  }
}

export interface JwksAuthenticatorOptions {
  revocation?: RevocationCheck;
  /** Leeway for exp/nbf; default 5 s, at most 60 s (what the apiserver allows). */
  clockToleranceSeconds?: number;
  now?: () => number;
  onCacheLookup?: (hit: boolean) => void;
  /** Bound on cached callers shared with the namespace's other gateways. */
  cacheBudget?: EntryBudget;
}

/** A verified token: who, its bound claims, and the key that verified it (its kid and alg). */
type Verified = { identity: CallerIdentity; claims: BoundClaims; key: { kid: string | undefined; alg: string } };

export class JwksAuthenticator implements Authenticator {
  /** Signature verifications performed (cache misses that reached a key). */
  verifications = 0;
  private readonly cache: TokenCache<Verified>;
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
    this.tolerance = Math.min(Math.max(options.clockToleranceSeconds ?? defaultClockSkewSeconds, 0), apiserverLeewaySeconds);
    this.now = options.now ?? Date.now;
    this.cache = new TokenCache({
      now: this.now, onLookup: options.onCacheLookup, negativeTtlMs: negativeCacheTtlMs, budget: options.cacheBudget,
      isDefinite: (err) => err instanceof UnauthenticatedError,
    });
  }

  authenticate(token: string, conn?: object): CallerIdentity | Promise<CallerIdentity> {
    const key = tokenKey(token, conn);
    const hit = this.cache.hit(key);
    if (hit) return this.unrevoked(hit);
    let jwt: UnverifiedJwt | undefined;
    return this.cache.getOrLoad(key, () => this.verify(token, jwt!), () => {
      jwt = parseUnverified(token);
      precheckClaims(jwt.payload, { audiences: this.audiences, nowMs: this.now(), leewaySeconds: this.tolerance, required: true });
    }).then((v) => this.unrevoked(v));
  }

  close(): void {
    this.cache.close();
  }

  setCharged(named: (id: CallerIdentity) => boolean): void {
    this.cache.charged = (v) => named(v.identity);
  }

  /** Revocation, and that the key that verified it is still the apiserver's, are checked on every
   * request, cached or not. */
  private unrevoked({ identity, claims, key }: Verified): CallerIdentity {
    if (!this.keySet.stillHas(key)) throw new UnauthenticatedError(`invalid bearer token: its signing key ${key.kid?.slice(0, 64) ?? `(${key.alg})`} is no longer among the apiserver's keys`);
    const r = this.revocation?.check(claims) ?? null;
    if (r && 'revoked' in r) throw new UnauthenticatedError(`invalid bearer token: revoked: ${r.revoked}`);
    if (r) throw new AuthUnavailableError(`token verification unavailable: ${r.unknown}`, { retryAfterSeconds: 1 });
    return identity;
  }

  private async verify(token: string, jwt: UnverifiedJwt): Promise<{ value: Verified; ttlMs: number }> {
    if (!this.keySet.loaded) await this.keySet.refreshIfAllowed();
    if (!this.keySet.loaded) {
      throw new AuthUnavailableError('token verification unavailable: the apiserver signing keys are not loaded yet',
        { cause: this.keySet.lastError, retryAfterSeconds: this.retryAfterSeconds() });
    }
    const { kid, alg, payload: unverified } = jwt;
    if (unverified.iss !== this.keySet.issuer) throw new UnauthenticatedError('invalid bearer token: unexpected "iss" claim value');
    if (kid !== undefined && !this.keySet.hasKid(kid)) await this.keySet.refreshIfAllowed();
    const keys = this.keySet.keysFor(kid, alg);
    if (keys.length === 0) {
      if (kid === undefined) throw new UnauthenticatedError(`invalid bearer token: no signing key for alg ${alg}`);
      // Unknown only because the keys predate the token (a rotation we have not fetched yet): not
      // the client's fault, ask it to come back after the next allowed refresh.
      // (an iat in the future is forged: such a token is 401, not a 503 anyone could ask for)
      const iat = unverified.iat;
      if (typeof iat === 'number' && this.keySet.loadedAt - this.tolerance * 1000 < iat * 1000 && iat * 1000 <= this.now() + this.tolerance * 1000) {
        throw new AuthUnavailableError(`token verification unavailable: signing key ${kid.slice(0, 64)} is not known yet`,
          { retryAfterSeconds: this.retryAfterSeconds() });
      }
      throw new UnauthenticatedError(`invalid bearer token: unknown signing key ${kid.slice(0, 64)}`);
    }
    let payload: JWTPayload | undefined;
    let lastErr: unknown;
    let used: VerificationKey | undefined;
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
        used = k;
        break;
      } catch (err) {
        lastErr = err;
      }
    }
    if (!payload) throw new UnauthenticatedError(`invalid bearer token: ${(lastErr as Error)?.message ?? 'verification failed'}`, { cause: lastErr });
    const claims = boundClaims(payload);
    const ttlMs = Math.min(this.cacheTTLSeconds * 1000, payload.exp! * 1000 - this.now());
    return { value: { identity: identityOf(claims), claims, key: { kid: used!.kid, alg: used!.alg } }, ttlMs };
  }

  /** Seconds until the key set may be refreshed on demand again (at least 1). */
  private retryAfterSeconds(): number {
    return Math.max(1, Math.ceil((this.keySet.nextRefreshAt - this.now()) / 1000));
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
  if (typeof payload.iat === 'number') claims.iat = payload.iat;
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
