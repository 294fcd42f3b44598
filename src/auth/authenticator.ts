// TokenReview authentication: the apiserver decides (honouring revocation of bound tokens);
// an answer counts only when its audiences intersect the gateway's. Fails closed.
import { AuthUnavailableError, UnauthenticatedError } from '../errors.js';
import { unverifiedExpiry } from './bearer.js';
import { isTeamName, teamRoot } from '../api/names.js';
import { sameIdentity, unforwardableIdentity, type CallerIdentity, type ReviewResult, type TokenReviewer } from './identity.js';
import { apiserverLeewaySeconds, defaultClockSkewSeconds, parseUnverified, precheckClaims } from './jwt-precheck.js';
import { NoSlotNowError } from './review-limiter.js';
import { renewAfter, TokenCache, type EntryBudget, type Loaded } from './token-cache.js';
import { tokenKey } from './token-key.js';

export interface Authenticator {
  /** The caller, at once when cached (no promise on the hot path), else when checked. `conn`:
   * the client connection, which remembers the token's cache key between its requests. */
  authenticate(token: string, conn?: object): CallerIdentity | Promise<CallerIdentity>;
  /** Drops its caches (it will not be used again), giving their entries back to their budget. */
  close?(): void;
  /** Which callers the cache budget pays for (those the gateway's spec.access names). */
  setCharged?(named: (id: CallerIdentity) => boolean): void;
}

/** How long a definite "not authenticated" is remembered, by token hash. */
export const negativeCacheTtlMs = 5_000;

export interface TokenReviewAuthenticatorOptions {
  /** The gateway's namespace: the TokenReview limiter's fairness key. */
  namespace?: string;
  /** Clock skew allowed between this process and the apiserver, on top of the apiserver's own
   * 60 s leeway; default 5 s. */
  clockSkewSeconds?: number;
  /** Bound on cached callers shared with the namespace's other gateways. */
  cacheBudget?: EntryBudget;
}

export class TokenReviewAuthenticator implements Authenticator {
  private readonly cache: TokenCache<CallerIdentity>;
  private readonly namespace: string;
  private readonly leewaySeconds: number;

  constructor(
    private readonly reviewer: TokenReviewer,
    private readonly audiences: string[],
    private readonly cacheTTLSeconds: number,
    private readonly now: () => number = Date.now,
    onCacheLookup?: (hit: boolean) => void,
    options: TokenReviewAuthenticatorOptions = {},
  ) {
    this.namespace = options.namespace ?? '';
    this.leewaySeconds = apiserverLeewaySeconds + Math.max(options.clockSkewSeconds ?? defaultClockSkewSeconds, 0);
    this.cache = new TokenCache({
      now, onLookup: onCacheLookup, negativeTtlMs: negativeCacheTtlMs, budget: options.cacheBudget,
      isDefinite: (err) => err instanceof UnauthenticatedError,
      renewAgain: (err) => err instanceof NoSlotNowError,
    });
  }

  authenticate(token: string, conn?: object): CallerIdentity | Promise<CallerIdentity> {
    const key = tokenKey(token, conn);
    const hit = this.cache.hit(key);
    if (hit === undefined) return this.cache.getOrLoad(key, () => this.review(token, sourceOf(conn)), () => this.precheck(token));
    if (this.cache.renewalDue(key)) this.cache.renew(key, () => this.renewal(hit, token, sourceOf(conn)));
    return hit;
  }

  /** A review again of a cached caller: the same caller keeps its object (what is kept by caller,
   * such as `kubectl --as` verdicts and its headers, stays with it). */
  private async renewal(was: CallerIdentity, token: string, source: string | undefined): Promise<Loaded<CallerIdentity>> {
    const r = await this.review(token, source, true);
    return sameIdentity(was, r.value) ? { ...r, value: was } : r;
  }

  close(): void {
    this.cache.close();
  }

  setCharged(named: (id: CallerIdentity) => boolean): void {
    this.cache.charged = named;
  }

  /** Refuses, without a review, what the apiserver would certainly refuse. */
  private precheck(token: string): void {
    const { payload } = parseUnverified(token);
    // legacy tokens carry neither exp nor aud: for those the review decides
    precheckClaims(payload, { audiences: this.audiences, nowMs: this.now(), leewaySeconds: this.leewaySeconds, required: false });
  }

  /** `source`: the client's address (one address may hold only part of the namespace's queue);
   * what its review came to is told the reviewer (a caller spec.access names, or not). */
  private async review(token: string, source: string | undefined, background = false): Promise<Loaded<CallerIdentity>> {
    let result;
    try {
      result = await this.reviewer.review(token, this.audiences, this.namespace, source, background);
    } catch (err) {
      if (err instanceof AuthUnavailableError) throw err; // the limiter's refusal (a request's has a Retry-After)
      throw new AuthUnavailableError('token review unavailable: the apiserver did not answer', { cause: err, retryAfterSeconds: 1 });
    }
    let admitted = false; // (told only once the apiserver has answered)
    try {
      const r = this.judge(token, result);
      admitted = this.cache.charged(r.value);
      return r;
    } finally {
      if (source !== undefined) this.reviewer.vouch?.(this.namespace, source, admitted);
    }
  }

  /** The caller a review's answer names, for how long; or why it is refused. */
  private judge(token: string, result: ReviewResult): Loaded<CallerIdentity> {
    // the review's own error (which authenticators the cluster runs, a webhook's address and its
    // failure) is for the apiserver's log, not for whoever sent the token: the apiserver itself
    // answers such a client a bare 401
    if (!result.authenticated) throw new UnauthenticatedError('invalid bearer token: the apiserver did not authenticate it');
    if (!result.audiences.some((a) => this.audiences.includes(a))) {
      throw new UnauthenticatedError(`invalid bearer token: audiences [${result.audiences.join(', ')}] do not include any of the gateway's`);
    }
    // the cluster's own authenticators (a webhook, say) may name anything: a group " system:masters"
    // would arrive as system:masters once Impersonate-Group is parsed, "a,b" as two to a backend
    const why = unforwardableIdentity(result.user);
    if (why) throw new UnauthenticatedError(`invalid bearer token: the reviewed ${why}`);
    // team:NS: names come only from a team's client CA (a gateway's rules and a team's backends
    // trust them as that team's): an authenticator of the cluster that lets users pick their name
    // (a webhook, a jwt authenticator without a prefix) may not give one. Such a user is refused;
    // such groups are left out (fewer groups only ever grant less: an IdP's "team:sre" group of an
    // org named "team" keeps its user working)
    const user = result.user;
    if (isTeamName(user.username)) {
      throw new UnauthenticatedError(`invalid bearer token: the reviewed user ${JSON.stringify(user.username)} is a ${teamRoot} name; those come only from a team's client CA`);
    }
    const groups = user.groups.filter((g) => !isTeamName(g));
    const value = groups.length === user.groups.length ? user : { ...user, groups };
    const exp = unverifiedExpiry(token);
    const ttlMs = Math.min(this.cacheTTLSeconds * 1000, exp === null ? Infinity : exp * 1000 - this.now());
    // (a token that expires first is not renewed: a review could not make it last longer)
    return { value, ttlMs, renewInMs: ttlMs < this.cacheTTLSeconds * 1000 ? undefined : ttlMs * renewAfter };
  }
}

function sourceOf(conn: object | undefined): string | undefined {
  return (conn as { remoteAddress?: string } | undefined)?.remoteAddress;
}
