// `kubectl --as` through an apiserver route: the caller's own Impersonate-* headers, honoured only
// when SubjectAccessReviews say the caller may impersonate exactly that, with the attributes the
// apiserver's impersonation filter checks (verb impersonate on users or serviceaccounts, groups,
// uids, userextras/KEY). Decisions are cached per caller identity for a few seconds and
// concurrent identical checks share one; errors are never cached (fail closed: 503).
import { createHash } from 'node:crypto';
import { gatewayExtraKeys } from '../api/labels.js';
import { BadRequestError, ForbiddenError } from '../errors.js';
import { realClock, type Clock } from '../clock.js';
import { fromWire, hasServiceAccountPrefix, serviceAccountOf, type CallerIdentity } from './identity.js';
import { NoSlotNowError } from './review-limiter.js';
import { renewAfter, retryRenewalMs } from './token-cache.js';

/** What the caller asks to act as. */
export interface RequestedImpersonation {
  user: string;
  uid: string;
  groups: string[];
  extra: Record<string, string[]>;
}

/** SubjectAccessReview resourceAttributes of one impersonation check. */
export interface ImpersonateAttributes {
  verb: 'impersonate';
  group: string;
  resource: string;
  subresource?: string;
  namespace?: string;
  name: string;
}

export interface Verdict { allowed: boolean; reason: string }

/** Asks the apiserver whether `caller` may do `attrs` (a SubjectAccessReview); `namespace` is the gateway's (fair queueing). */
export interface AccessReviewer {
  /** `background`: no request waits for it (made only if the limiter has a slot free now). */
  review(caller: CallerIdentity, attrs: ImpersonateAttributes, namespace: string, background?: boolean): Promise<Verdict>;
}

/** Most groups and extra values one request may ask for: each costs a SubjectAccessReview. */
export const maxImpersonatedAttributes = 32;
/**
 * A service-account username the apiserver would not split (bad namespace or name) is read by it
 * as a plain user: checked as a service account, it would be impersonated as a user. Refused.
 */
function checkServiceAccountName(user: string): void {
  if (hasServiceAccountPrefix(user) && !serviceAccountOf(user)) {
    throw new BadRequestError(`Impersonate-User ${JSON.stringify(user)}: not a valid service-account username`);
  }
}

/** client-go's escaping of extra keys in header names, undone (url.PathUnescape). */
function unescapeExtraKey(k: string): string {
  try {
    return decodeURIComponent(k);
  } catch {
    throw new BadRequestError(`Impersonate-Extra-${k}: not a valid escaped key`);
  }
}

/**
 * The caller's Impersonate-* headers (from the raw header list: repeated headers stay apart), or
 * null when there are none. Refuses what the apiserver refuses (groups, uid or extras without a
 * user) and the extras the gateway sets itself.
 */
export function requestedImpersonation(rawHeaders: string[]): RequestedImpersonation | null {
  let r: RequestedImpersonation | null = null;
  let users = 0;
  let uids = 0;
  let attributes = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.length < 12 || (name[0] !== 'I' && name[0] !== 'i')) continue;
    const n = name.toLowerCase();
    if (!n.startsWith('impersonate-')) continue;
    const v = fromWire(rawHeaders[i + 1]!);
    if (v === null) throw new BadRequestError(`${name}: not UTF-8`);
    // extras in an object without a prototype: a key named __proto__ is just a key
    r ??= { user: '', uid: '', groups: [], extra: Object.create(null) as Record<string, string[]> };
    if (n === 'impersonate-user') { r.user = v; users++; }
    else if (n === 'impersonate-uid') { r.uid = v; uids++; }
    else if (n === 'impersonate-group') { r.groups.push(v); attributes++; }
    else if (n.startsWith('impersonate-extra-')) {
      // as the apiserver: the header name lowercased, then unescaped (%43 stays an upper-case C)
      const key = unescapeExtraKey(n.slice('impersonate-extra-'.length));
      if (gatewayExtraKeys.has(key.toLowerCase())) throw new BadRequestError(`Impersonate-Extra-${key}: the gateway sets this extra itself`);
      (r.extra[key] ??= []).push(v);
      attributes++;
    } else throw new BadRequestError(`${name}: not an impersonation header the apiserver knows`);
  }
  if (!r) return null;
  if (users > 1) throw new BadRequestError('more than one Impersonate-User header');
  if (uids > 1) throw new BadRequestError('more than one Impersonate-Uid header');
  if (!r.user) throw new BadRequestError('Impersonate-Group, Impersonate-Uid and Impersonate-Extra-* need Impersonate-User');
  if (attributes > maxImpersonatedAttributes) {
    throw new BadRequestError(`at most ${maxImpersonatedAttributes} Impersonate-Group and Impersonate-Extra-* values per request`);
  }
  checkServiceAccountName(r.user);
  return r;
}

/** Every check the apiserver makes for this impersonation, in its order. */
export function impersonateAttributes(r: RequestedImpersonation): ImpersonateAttributes[] {
  const sa = serviceAccountOf(r.user);
  const out: ImpersonateAttributes[] = [sa
    ? { verb: 'impersonate', group: '', resource: 'serviceaccounts', namespace: sa.namespace, name: sa.name }
    : { verb: 'impersonate', group: '', resource: 'users', name: r.user }];
  for (const g of r.groups) out.push({ verb: 'impersonate', group: '', resource: 'groups', name: g });
  if (r.uid) out.push({ verb: 'impersonate', group: 'authentication.k8s.io', resource: 'uids', name: r.uid });
  for (const [k, vs] of Object.entries(r.extra)) {
    for (const v of vs) out.push({ verb: 'impersonate', group: 'authentication.k8s.io', resource: 'userextras', subresource: k, name: v });
  }
  return out;
}

function describe(a: ImpersonateAttributes): string {
  const what = a.resource === 'serviceaccounts' ? `service account ${a.namespace}/${a.name}`
    : a.resource === 'userextras' ? `extra ${a.subresource}=${JSON.stringify(a.name)}`
      : `${a.resource.slice(0, -1)} ${JSON.stringify(a.name)}`;
  return `impersonate ${what}`;
}

/** The identity the apiserver is asked to act as. */
export function impersonatedIdentity(r: RequestedImpersonation): CallerIdentity {
  return { username: r.user, uid: r.uid, groups: r.groups, extra: r.extra };
}

/** `renewAt`: when a request that finds it asks again in the background (once it is decided). */
interface Entry { until: number; renewAt: number; verdict: Promise<Verdict> }

export class ImpersonationChecker {
  private readonly cache = new WeakMap<CallerIdentity, Map<string, Entry>>();

  constructor(private readonly reviewer: AccessReviewer, private readonly ttlMs = 10_000, private readonly clock: Clock = realClock,
    private readonly maxPerCaller = 64) {}

  /** Resolves when `caller` may impersonate every attribute of `r`; rejects 403 (with the reason) or 503. */
  async check(caller: CallerIdentity, r: RequestedImpersonation, namespace: string): Promise<void> {
    const [user, ...rest] = impersonateAttributes(r);
    // the user first, the rest only if it may be: one request naming a user it may not and 32
    // groups asked 33 reviews of the apiserver at once (the apiserver's own filter stops at the first)
    const attrs = [user!, ...rest];
    const verdicts = [await this.decide(caller, user!, namespace)];
    if (verdicts[0]!.allowed) verdicts.push(...await Promise.all(rest.map((a) => this.decide(caller, a, namespace))));
    const i = verdicts.findIndex((v) => !v.allowed);
    if (i >= 0) {
      const why = verdicts[i]!.reason;
      throw new ForbiddenError(`${caller.username} may not ${describe(attrs[i]!)}${why ? `: ${why}` : ''}`);
    }
  }

  private decide(caller: CallerIdentity, a: ImpersonateAttributes, namespace: string): Promise<Verdict> {
    let byKey = this.cache.get(caller);
    if (!byKey) this.cache.set(caller, (byKey = new Map()));
    // a digest: a name may be a header's 16 KiB, and a namespace's 10,000 callers keep 64 each
    const key = createHash('sha256').update(`${a.group}\u0000${a.resource}\u0000${a.subresource ?? ''}\u0000${a.namespace ?? ''}\u0000${a.name}`).digest('base64');
    const now = this.clock.now();
    const hit = byKey.get(key);
    if (hit && hit.until > now) {
      if (hit.renewAt <= now) this.renew(byKey, key, hit, caller, a, namespace);
      return hit.verdict;
    }
    if (byKey.size >= this.maxPerCaller) byKey.delete(byKey.keys().next().value!);
    const verdict = this.reviewer.review(caller, a, namespace);
    const entry = this.entry(now, verdict);
    byKey.set(key, entry);
    // an error is not a decision: the next request asks again
    verdict.catch(() => { if (byKey.get(key) === entry) byKey.delete(key); });
    return verdict;
  }

  /** A decision asked at `asked`, renewable once it is made. */
  private entry(asked: number, verdict: Promise<Verdict>): Entry {
    const e = { until: asked + this.ttlMs, renewAt: Infinity, verdict };
    verdict.then(() => { e.renewAt = asked + this.ttlMs * renewAfter; }, () => {});
    return e;
  }

  /** A decision still in use near the end of its TTL is asked again in the background (its
   * requests do not wait for that at its expiry); the new one replaces it when made; a refusal for
   * want of a limiter slot is tried again by the first check `retryRenewalMs` later, before it
   * expires; another error leaves it to expire. */
  private renew(byKey: Map<string, Entry>, key: string, was: Entry, caller: CallerIdentity, a: ImpersonateAttributes, namespace: string): void {
    was.renewAt = Infinity;
    const next = this.entry(this.clock.now(), this.reviewer.review(caller, a, namespace, true));
    next.verdict.then(() => { if (byKey.get(key) === was) byKey.set(key, next); }, (err) => {
      // (the limiter had no slot free: soon again, while it still serves)
      const t = this.clock.now() + retryRenewalMs;
      if (err instanceof NoSlotNowError && byKey.get(key) === was && t < was.until) was.renewAt = t;
    });
  }
}
