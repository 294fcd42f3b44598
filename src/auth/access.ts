// spec.access: who may use the gateway, and which routes. Decisions are memoised per identity
// object (identities come from the token cache, so a cached caller costs one WeakMap lookup).
// Time-boxed rules (notBefore/notAfter) make decisions change with time: the memo holds until the
// next window boundary, then starts afresh; a policy without windows never reads the clock.
import { realClock, type Clock } from '../clock.js';
import type { AccessRulePlan } from '../translate/plan.js';
import { serviceAccountOf, type CallerIdentity } from './identity.js';

/** null: no rule matches; 'all': every route; else the allowed route names. */
export type Allowed = null | 'all' | ReadonlySet<string>;

export class AccessPolicy {
  private memo = new WeakMap<CallerIdentity, Allowed>();
  /** When the memo's decisions may change (the next notBefore/notAfter to come); Infinity: never. */
  private until = -Infinity;
  private readonly boundaries: number[];
  /** By rule, its users and groups as sets: a caller's groups are looked up, not compared with
   * each of a rule's (64 rules of 64 long group names and a caller's 32 groups took ~1 ms). */
  private readonly subjects: Subjects[];

  constructor(private readonly rules: readonly AccessRulePlan[], private readonly clock: Clock = realClock) {
    this.boundaries = rules.flatMap((r) => [r.notBefore, r.notAfter]).filter((t): t is number => t !== null).sort((a, b) => a - b);
    if (!this.boundaries.length) this.until = Infinity;
    this.subjects = rules.map((r) => ({ users: new Set(r.users), groups: new Set(r.groups), serviceAccounts: r.serviceAccounts }));
  }

  allowed(id: CallerIdentity): Allowed {
    if (this.until !== Infinity) this.refresh();
    let a = this.memo.get(id);
    if (a === undefined) {
      a = this.decide(id, this.boundaries.length ? this.clock.now() : 0);
      this.memo.set(id, a);
    }
    return a;
  }

  /** Whether some rule names the caller, its window open or not (a caller the gateway knows). */
  knows(id: CallerIdentity): boolean {
    const sa = serviceAccountOf(id.username);
    return this.subjects.some((r) => names(r, id, sa));
  }

  mayUse(id: CallerIdentity, route: string): boolean {
    const a = this.allowed(id);
    return a === 'all' || (a !== null && a.has(route));
  }

  /** The first notBefore/notAfter after `now`, when decisions may change next; Infinity: none. */
  nextBoundary(now: number): number {
    return this.boundaries.find((t) => t > now) ?? Infinity;
  }

  now(): number {
    return this.clock.now();
  }

  /** Past a window boundary: forget every decision and note the next boundary. */
  private refresh(): void {
    const now = this.clock.now();
    if (now < this.until) return;
    this.memo = new WeakMap();
    this.until = this.nextBoundary(now);
  }

  private decide(id: CallerIdentity, now: number): Allowed {
    const sa = serviceAccountOf(id.username);
    const routes = new Set<string>();
    for (const [i, r] of this.rules.entries()) {
      if (!inWindow(r, now) || !names(this.subjects[i]!, id, sa)) continue;
      if (r.routes === null) return 'all';
      for (const n of r.routes) routes.add(n);
    }
    return routes.size ? routes : null;
  }

  /** For explanations (not the hot path): the rules (indexes into spec.access) naming the caller,
   * split by whether their time window is open now. */
  explain(id: CallerIdentity): { matching: number[]; outsideWindow: { index: number; ended: boolean }[] } {
    const sa = serviceAccountOf(id.username);
    const now = this.clock.now();
    const matching: number[] = [];
    const outsideWindow: { index: number; ended: boolean }[] = [];
    this.rules.forEach((r, i) => {
      if (!names(this.subjects[i]!, id, sa)) return;
      if (inWindow(r, now)) matching.push(i);
      else outsideWindow.push({ index: i, ended: r.notAfter !== null && now >= r.notAfter });
    });
    return { matching, outsideWindow };
  }

  rule(i: number): AccessRulePlan | undefined {
    return this.rules[i];
  }
}

function inWindow(r: AccessRulePlan, now: number): boolean {
  return (r.notBefore === null || now >= r.notBefore) && (r.notAfter === null || now < r.notAfter);
}

interface Subjects { users: ReadonlySet<string>; groups: ReadonlySet<string>; serviceAccounts: AccessRulePlan['serviceAccounts'] }

/** Whether a rule's subjects name the caller. */
function names(r: Subjects, id: CallerIdentity, sa: { namespace: string; name: string } | null): boolean {
  return r.users.has(id.username) ||
    id.groups.some((g) => r.groups.has(g)) ||
    (sa !== null && r.serviceAccounts.some((s) => s.namespace === sa.namespace && (s.name === '*' || s.name === sa.name)));
}
