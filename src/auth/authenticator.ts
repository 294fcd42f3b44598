// TokenReview authentication: the apiserver decides (honouring revocation of bound tokens);
// an answer counts only when its audiences intersect the gateway's. Fails closed.
import { createHash } from 'node:crypto';
import { AuthUnavailableError, UnauthenticatedError } from '../dataplane/errors.js';
import { unverifiedExpiry } from './bearer.js';
import type { CallerIdentity, TokenReviewer } from './identity.js';
import { TokenCache } from './token-cache.js';

export interface Authenticator {
  authenticate(token: string): Promise<CallerIdentity>;
}

export class TokenReviewAuthenticator implements Authenticator {
  private readonly cache: TokenCache<CallerIdentity>;

  constructor(
    private readonly reviewer: TokenReviewer,
    private readonly audiences: string[],
    private readonly cacheTTLSeconds: number,
    private readonly now: () => number = Date.now,
    onCacheLookup?: (hit: boolean) => void,
  ) {
    this.cache = new TokenCache(10_000, now, onCacheLookup);
  }

  authenticate(token: string): Promise<CallerIdentity> {
    const key = createHash('sha256').update(token).digest('base64url');
    return this.cache.getOrLoad(key, () => this.review(token));
  }

  private async review(token: string): Promise<{ value: CallerIdentity; ttlMs: number }> {
    let result;
    try {
      result = await this.reviewer.review(token, this.audiences);
    } catch (err) {
      throw new AuthUnavailableError('token review unavailable: the apiserver did not answer', { cause: err });
    }
    if (!result.authenticated) throw new UnauthenticatedError(`invalid bearer token: ${result.error || 'not authenticated'}`);
    if (!result.audiences.some((a) => this.audiences.includes(a))) {
      throw new UnauthenticatedError(`invalid bearer token: audiences [${result.audiences.join(', ')}] do not include any of the gateway's`);
    }
    const exp = unverifiedExpiry(token);
    const ttlMs = Math.min(this.cacheTTLSeconds * 1000, exp === null ? Infinity : exp * 1000 - this.now());
    return { value: result.user, ttlMs };
  }
}
