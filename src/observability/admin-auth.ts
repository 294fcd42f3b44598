// Who may read /metrics on the admin port (--metrics-auth kubernetes), like controller-runtime's
// secure metrics: the bearer token is authenticated by the apiserver (TokenReview, the
// apiserver's own audiences) and the user authorised with a SubjectAccessReview for `get` on the
// non-resource URL. Decisions are cached briefly, keyed by the token's SHA-256 (never the token),
// allowed ones apart from refusals (junk tokens cannot push a scraper's out) and renewed ahead of
// expiry before anyone else's review; reviews in flight are bounded, waiting ones per client
// address too, and a quarter of the rate and a few places in the waiting room are kept for
// addresses that asked for none in the last second or two (a flood from 8 pods' addresses left a
// scraper's new token every 3 s checked 6 times in 10); an apiserver that cannot answer gives 503 (fail closed).
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { TokenBucket } from '../bucket.js';
import { Lately } from '../lately.js';
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
  /** Of those, from one client address. Default 8. */
  maxWaitingPerSource?: number;
  /** Token checks started a second for tokens not cached (renewals aside), bursts of a second's
   * worth; more are refused at once (503). Default unbounded. Any pod that reaches the admin
   * port can send tokens that each cost a TokenReview. */
  reviewsPerSecond?: number;
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

/** `renewable`: it ends with its time to live, not with the token's exp. */
interface Entry { decision: AdminDecision; expires: number; life: number; renewable: boolean }

export class AdminAuthorizer {
  /** Allowed decisions, and refusals, each bounded (least recently used forgotten first). */
  private readonly allowed = new Map<string, Entry>();
  private readonly refused = new Map<string, Entry>();
  private readonly pending = new Map<string, Promise<AdminDecision>>();
  /** Waiting for a slot: renewals of allowed decisions first, then in arrival order. */
  private readonly waiters: { go: () => void; source: string }[] = [];
  private readonly waitingBySource = new Map<string, number>();
  private running = 0;
  private readonly o: Required<Omit<AdminAuthOptions, 'metrics' | 'log'>> & Pick<AdminAuthOptions, 'metrics' | 'log'>;
  /** The rate of checks of tokens not cached (reviewsPerSecond), if any; and a quarter more, for
   * quiet addresses only. */
  private readonly rate: TokenBucket | undefined;
  private readonly reserve: TokenBucket | undefined;
  private readonly loud: Loudness;

  constructor(private readonly reviewer: AdminReviewer, opts: AdminAuthOptions = {}) {
    this.o = { allowTtlMs: 60_000, denyTtlMs: 10_000, maxEntries: 1024, maxInFlight: 4, maxWaiting: 32, maxWaitingPerSource: 8, now: Date.now, reviewsPerSecond: Infinity, ...opts };
    const rps = this.o.reviewsPerSecond;
    this.rate = Number.isFinite(rps) ? new TokenBucket(rps, this.o.now()) : undefined;
    this.reserve = Number.isFinite(rps) ? new TokenBucket(Math.max(1, rps / 4), this.o.now(), Math.max(2, rps / 4)) : undefined;
    this.loud = new Loudness(this.o.now);
  }

  /** The decision for a request to `path` with these `Authorization` header values, from the
   * client address `source`. Never throws. */
  async check(authorization: string[] | string | undefined, path: string, source = ''): Promise<AdminDecision> {
    const d = await this.decide(authorization, path, source);
    this.o.metrics?.adminAuth.inc({ result: d });
    return d;
  }

  private async decide(authorization: string[] | string | undefined, path: string, source: string): Promise<AdminDecision> {
    const token = bearerToken(authorization);
    if (!token) return 'unauthenticated';
    const key = `${createHash('sha256').update(token).digest('base64url')} ${path}`;
    const now = this.o.now();
    let wasAllowed = false;
    for (const cache of [this.allowed, this.refused]) {
      const hit = cache.get(key);
      if (!hit) continue;
      cache.delete(key);
      if (hit.expires <= now) {
        // a scraper every 30 s or more comes after its decision ended: asked again as a renewal,
        // past the rate a flood of other tokens uses up (only the apiserver's yes makes an entry here)
        wasAllowed ||= cache === this.allowed && hit.renewable; // (not one that ended with its token's exp)
        continue;
      }
      cache.set(key, hit); // most recently used goes last
      this.o.metrics?.adminAuthCache.inc({ result: 'hit' });
      // the last quarter of an allowed decision's life: asked again in the background, first in line
      if (hit.renewable && hit.expires - now < hit.life / 4 && !this.pending.has(key)) void this.ask(key, token, path, source, true);
      return hit.decision;
    }
    this.o.metrics?.adminAuthCache.inc({ result: 'miss' });
    return this.pending.get(key) ?? this.ask(key, token, path, source, wasAllowed);
  }

  private ask(key: string, token: string, path: string, source: string, renewal: boolean): Promise<AdminDecision> {
    const p = this.review(token, path, source, renewal).then((d) => {
      this.remember(key, token, d);
      return d;
    }).finally(() => this.pending.delete(key));
    this.pending.set(key, p);
    return p;
  }

  private async review(token: string, path: string, source: string, renewal: boolean): Promise<AdminDecision> {
    const full = this.running >= this.o.maxInFlight;
    const waiting = this.waitingBySource.get(source) ?? 0;
    if (!renewal) {
      // a quiet address (none lately) has places and a rate of its own past the shared ones
      const quiet = this.loud.quiet(source);
      this.loud.count(source); // (tried: refused or not)
      const room = this.o.maxWaiting + (quiet ? reservedPlaces : 0);
      if (full && (this.waiters.length >= room || waiting >= this.o.maxWaitingPerSource)) return 'overloaded';
      const now = this.o.now();
      if (this.rate && !this.rate.take(now) && !(quiet && this.loud.mayReserve(source, now) && this.reserve!.take(now))) return 'overloaded'; // (after the waiting room: a refusal there spends none)
    }
    if (full) {
      this.waitingBySource.set(source, waiting + 1);
      await new Promise<void>((go) => (renewal ? this.waiters.unshift({ go, source }) : this.waiters.push({ go, source })));
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
      if (next) {
        const left = this.waitingBySource.get(next.source)! - 1;
        if (left) this.waitingBySource.set(next.source, left);
        else this.waitingBySource.delete(next.source);
        next.go(); // the slot passes on
      } else {
        this.running--;
      }
    }
  }

  private remember(key: string, token: string, d: AdminDecision): void {
    if (d === 'unavailable' || d === 'overloaded') return; // never cached: the next request asks again (a renewal keeps the old one)
    const now = this.o.now();
    const life = d === 'allowed' ? this.o.allowTtlMs : this.o.denyTtlMs;
    let expires = now + life;
    const exp = d === 'allowed' ? expiryMs(token) : undefined; // a refusal holds past exp
    const renewable = d === 'allowed' && (exp === undefined || exp > expires);
    if (exp !== undefined) expires = Math.min(expires, exp);
    this.allowed.delete(key);
    this.refused.delete(key);
    if (expires <= now) return;
    const cache = d === 'allowed' ? this.allowed : this.refused;
    while (cache.size >= this.o.maxEntries) cache.delete(cache.keys().next().value!);
    cache.set(key, { decision: d, expires, life, renewable });
  }
}

/** Places in the waiting room past `maxWaiting` for quiet addresses; how often one address may
 * take from the reserved rate. */
const reservedPlaces = 4;
const reserveEveryMs = 10_000;

/** How many checks of new tokens each client address asked for lately (`Lately`): a quiet one
 * asked for none in about the last 1–2 s. Not relative to the others: a second address of a
 * flooder's, just below their mean, took it all. */
class Loudness {
  private readonly lately: Lately<string>;
  /** When each address last took from the reserved rate (at most 1,024 within reserveEveryMs). */
  private readonly reserved = new Map<string, number>();

  constructor(now: () => number) {
    this.lately = new Lately(now);
  }

  quiet(source: string): boolean {
    return this.lately.get(source) === 0;
  }

  /** Whether `source` may take from the reserved rate now: once in `reserveEveryMs` (many
   * addresses each asking every few seconds would take it all). */
  mayReserve(source: string, now: number): boolean {
    const last = this.reserved.get(source);
    if (last !== undefined && now >= last && now - last < reserveEveryMs) return false; // (a clock stepped back: not blocked for the step)
    if (this.reserved.size >= 1024) for (const [s, t] of this.reserved) if (now - t >= reserveEveryMs) this.reserved.delete(s);
    if (this.reserved.size >= 1024) return false;
    this.reserved.set(source, now);
    return true;
  }

  count(source: string): void {
    this.lately.add(source);
  }
}
