// Who may read /metrics on the admin port (--metrics-auth kubernetes), like controller-runtime's
// secure metrics: the bearer token is authenticated by the apiserver (TokenReview, the
// apiserver's own audiences) and the user authorised with a SubjectAccessReview for `get` on the
// non-resource URL. Decisions are cached briefly, keyed by the token's SHA-256 (never the token);
// reviews in flight are bounded; an apiserver that cannot answer gives 503 (fail closed).
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { Metrics } from './metrics.js';

export interface AdminUser {
  username: string;
  uid: string;
  groups: string[];
  extra: Record<string, string[]>;
}

/** The apiserver's side (src/kube/admin-review.ts). Both throw when the apiserver cannot answer. */
export interface AdminReviewer {
  /** The token's user, or null when the apiserver says the token is not valid. */
  authenticate(token: string): Promise<AdminUser | null>;
  /** Whether the user may `verb` the non-resource URL `path`. */
  authorize(user: AdminUser, verb: string, path: string): Promise<boolean>;
}

export type AdminDecision = 'allowed' | 'unauthenticated' | 'forbidden' | 'unavailable' | 'overloaded';

export interface AdminAuthOptions {
  /** How long an allowed decision is reused (never past the token's `exp`). Default 60 s. */
  allowTtlMs?: number;
  /** How long a refusal (401/403) is reused. Default 10 s. */
  denyTtlMs?: number;
  /** Decisions remembered (least recently used forgotten first). Default 1024. */
  maxEntries?: number;
  /** Token checks talking to the apiserver at once. Default 4. */
  maxInFlight?: number;
  /** Token checks waiting for a slot; more are refused at once (503). Default 32. */
  maxWaiting?: number;
  metrics?: Metrics;
  log?: Logger;
  now?: () => number;
}

// RFC 6750 b64token; longer than 8 KiB is no token we accept
const bearerRe = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i;
const maxTokenLength = 8192;

/** The bearer token of exactly one `Authorization` header, or null. */
export function bearerToken(authorization: string[] | string | undefined): string | null {
  const all = authorization === undefined ? [] : Array.isArray(authorization) ? authorization : [authorization];
  if (all.length !== 1) return null;
  const m = bearerRe.exec(all[0]!);
  return m && m[1]!.length <= maxTokenLength ? m[1]! : null;
}

/** The `exp` (ms) of a JWT-shaped token, unverified: used only to shorten a cache entry. */
function expiryMs(token: string): number | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const exp = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8'))?.exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

interface Entry { decision: AdminDecision; expires: number }

export class AdminAuthorizer {
  private readonly cache = new Map<string, Entry>();
  private readonly pending = new Map<string, Promise<AdminDecision>>();
  private readonly waiters: (() => void)[] = [];
  private running = 0;
  private readonly o: Required<Omit<AdminAuthOptions, 'metrics' | 'log'>> & Pick<AdminAuthOptions, 'metrics' | 'log'>;

  constructor(private readonly reviewer: AdminReviewer, opts: AdminAuthOptions = {}) {
    this.o = { allowTtlMs: 60_000, denyTtlMs: 10_000, maxEntries: 1024, maxInFlight: 4, maxWaiting: 32, now: Date.now, ...opts };
  }

  /** The decision for a request to `path` with these `Authorization` header values. Never throws. */
  async check(authorization: string[] | string | undefined, path: string): Promise<AdminDecision> {
    const d = await this.decide(authorization, path);
    this.o.metrics?.adminAuth.inc({ result: d });
    return d;
  }

  private async decide(authorization: string[] | string | undefined, path: string): Promise<AdminDecision> {
    const token = bearerToken(authorization);
    if (!token) return 'unauthenticated';
    const key = `${createHash('sha256').update(token).digest('base64url')} ${path}`;
    const now = this.o.now();
    const hit = this.cache.get(key);
    if (hit && hit.expires > now) {
      this.cache.delete(key); // most recently used goes last
      this.cache.set(key, hit);
      this.o.metrics?.adminAuthCache.inc({ result: 'hit' });
      return hit.decision;
    }
    if (hit) this.cache.delete(key);
    this.o.metrics?.adminAuthCache.inc({ result: 'miss' });
    let p = this.pending.get(key);
    if (!p) {
      p = this.review(token, path).then((d) => {
        this.remember(key, token, d);
        return d;
      }).finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    return p;
  }

  private async review(token: string, path: string): Promise<AdminDecision> {
    if (this.running >= this.o.maxInFlight) {
      if (this.waiters.length >= this.o.maxWaiting) return 'overloaded';
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    } else {
      this.running++;
    }
    try {
      const user = await this.reviewer.authenticate(token);
      if (!user) return 'unauthenticated';
      return (await this.reviewer.authorize(user, 'get', path)) ? 'allowed' : 'forbidden';
    } catch (err) {
      this.o.log?.warn({ err: err instanceof Error ? err.message : String(err), path }, 'admin port: the apiserver could not check a token (503)');
      return 'unavailable';
    } finally {
      const next = this.waiters.shift();
      if (next) next(); // the slot passes on
      else this.running--;
    }
  }

  private remember(key: string, token: string, d: AdminDecision): void {
    if (d === 'unavailable' || d === 'overloaded') return; // never cached: the next request asks again
    const now = this.o.now();
    let expires = now + (d === 'allowed' ? this.o.allowTtlMs : this.o.denyTtlMs);
    const exp = d === 'allowed' ? expiryMs(token) : undefined; // a refusal holds past exp
    if (exp !== undefined) expires = Math.min(expires, exp);
    if (expires <= now) return;
    while (this.cache.size >= this.o.maxEntries) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(key, { decision: d, expires });
  }
}
