// An OIDC issuer's signing keys. The last good set is kept (a failed fetch never drops it); they
// are fetched again for an unknown kid, or once 10 minutes old, at most every 10 s whether a fetch
// works or fails (anyone can send a made-up kid); concurrent lookups share one fetch.
import { createLocalJWKSet, errors as jose, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';

export class IssuerKeys {
  /** Fetches finished (answered or failed), and those that loaded keys. */
  fetches = 0;
  loads = 0;
  /** When the last fetch began, and when the keys in use were loaded. */
  attemptedAt = -Infinity;
  loadedAt = -Infinity;
  private local: JWTVerifyGetKey | null = null;
  private pending: Promise<boolean> | null = null;
  private lastError: unknown = null;

  constructor(
    private readonly load: () => Promise<JSONWebKeySet>,
    private readonly now: () => number,
    readonly gapMs = 10_000,
    private readonly maxAgeMs = 10 * 60_000,
  ) {}

  /** jose's key lookup: an unknown kid fetches again when allowed; a failed fetch throws its error. */
  readonly getKey: JWTVerifyGetKey = async (header, token) => {
    if (!this.local || this.now() - this.loadedAt > this.maxAgeMs) await this.refresh();
    if (!this.local) throw this.lastError;
    try {
      return await this.local(header, token);
    } catch (err) {
      if (!(err instanceof jose.JWKSNoMatchingKey)) throw err;
      const before = this.fetches;
      if (await this.refresh()) return this.local(header, token);
      // a fetch for it that failed: the issuer's fault, not the token's
      if (this.fetches !== before) throw this.lastError;
      throw err;
    }
  };

  /** Fetches the keys unless the last fetch began under gapMs ago; true when keys were loaded. */
  private refresh(): Promise<boolean> {
    if (this.pending) return this.pending;
    if (this.now() - this.attemptedAt < this.gapMs) return Promise.resolve(false);
    this.attemptedAt = this.now();
    this.pending = this.load().then((set) => {
      this.local = createLocalJWKSet(set); // throws for a set that is not one
      this.loadedAt = this.now();
      this.loads++;
      return true;
    }).catch((err: unknown) => {
      this.lastError = err;
      return false;
    }).finally(() => {
      this.fetches++;
      this.pending = null;
    });
    return this.pending;
  }
}
