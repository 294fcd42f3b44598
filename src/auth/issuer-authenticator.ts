// A gateway that accepts OIDC issuers' tokens beside service-account tokens: a token whose
// (unverified) iss is one of its issuers goes to that issuer, verified and mapped there, and is
// cached by hash like any other; every other token goes to the service-account authenticator.
import { UnauthenticatedError } from '../errors.js';
import type { Authenticator } from './authenticator.js';
import type { CallerIdentity } from './identity.js';
import { parseUnverified } from './jwt-precheck.js';
import type { OidcIssuer } from './oidc.js';
import { TokenCache, type EntryBudget } from './token-cache.js';
import { tokenKey } from './token-key.js';

export class IssuerAuthenticator implements Authenticator {
  private readonly cache: TokenCache<CallerIdentity>;

  constructor(private readonly serviceAccounts: Authenticator, private readonly issuers: ReadonlyMap<string, OidcIssuer>,
    private readonly cacheTTLSeconds: number, private readonly now: () => number = Date.now, onCacheLookup?: (hit: boolean) => void,
    budget?: EntryBudget) {
    this.cache = new TokenCache({ now, onLookup: onCacheLookup, negativeTtlMs: 5_000, isDefinite: (err) => err instanceof UnauthenticatedError, budget });
  }

  close(): void {
    this.cache.close();
    this.serviceAccounts.close?.();
  }

  setCharged(named: (id: CallerIdentity) => boolean): void {
    this.cache.charged = named;
    this.serviceAccounts.setCharged?.(named);
  }

  authenticate(token: string, conn?: object): CallerIdentity | Promise<CallerIdentity> {
    const key = tokenKey(token, conn);
    const hit = this.cache.hit(key);
    if (hit) return hit;
    let iss: unknown;
    try {
      iss = parseUnverified(token).payload.iss;
    } catch {
      return this.serviceAccounts.authenticate(token, conn); // not a JWT: that authenticator says so
    }
    const issuer = typeof iss === 'string' ? this.issuers.get(iss) : undefined;
    if (!issuer) return this.serviceAccounts.authenticate(token, conn);
    return this.cache.getOrLoad(key, async () => {
      const { id, expiresAt } = await issuer.authenticate(token);
      return { value: id, ttlMs: Math.min(this.cacheTTLSeconds * 1000, expiresAt - this.now()) };
    });
  }
}
