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
  /** The rules (indexes) naming each user (`u:`), group (`g:`), service account (`s:NS/NAME`,
   * `s:NS/*`): a caller's names are looked up, not compared with each of every rule's (64 rules
   * of 64 long group names and a caller's 32 groups took ~1 ms; of 64 service accounts of 253
   * characters sharing a prefix, ~0.6 ms a request with the token cache off). */
  private readonly byName = new Map<string, number[]>();
  /** The rules naming each caller, in order: once per identity object, whatever the time. */
  private readonly named = new WeakMap<CallerIdentity, readonly number[]>();

  constructor(private readonly rules: readonly AccessRulePlan[], private readonly clock: Clock = realClock) {
    this.boundaries = rules.flatMap((r) => [r.notBefore, r.notAfter]).filter((t): t is number => t !== null).sort((a, b) => a - b);
    if (!this.boundaries.length) this.until = Infinity;
    rules.forEach((r, i) => {
      const keys = [...r.users.map((u) => `u:${u}`), ...r.groups.map((g) => `g:${g}`), ...r.serviceAccounts.map((s) => `s:${s.namespace}/${s.name}`)];
      for (const k of new Set(keys)) {
        const list = this.byName.get(k);
        if (list) list.push(i);
        else this.byName.set(k, [i]);
      }
    });
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

  /** Whether some rule names the caller, its window open or not (for explanations: whose gateway
   * this is may be told it). Not whom the gateway admits (`allowed`). */
  knows(id: CallerIdentity): boolean {
    return this.namesOf(id).length > 0;
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

  /** The rules (indexes, in order) whose subjects name the caller, their windows open or not. */
  private namesOf(id: CallerIdentity): readonly number[] {
    let n = this.named.get(id);
    if (n) return n;
    const hit = new Set<number>();
    const add = (key: string) => { for (const i of this.byName.get(key) ?? []) hit.add(i); };
    add(`u:${id.username}`);
    for (const g of id.groups) add(`g:${g}`);
    const sa = serviceAccountOf(id.username); // (a name is never `*`: only a rule's wildcard)
    if (sa) {
      add(`s:${sa.namespace}/${sa.name}`);
      add(`s:${sa.namespace}/*`);
    }
    n = [...hit].sort((a, b) => a - b);
    this.named.set(id, n);
    return n;
  }

  private decide(id: CallerIdentity, now: number): Allowed {
    const routes = new Set<string>();
    for (const i of this.namesOf(id)) {
      const r = this.rules[i]!;
      if (!inWindow(r, now)) continue;
      if (r.routes === null) return 'all';
      for (const n of r.routes) routes.add(n);
    }
    return routes.size ? routes : null;
  }

  /** For explanations (not the hot path): the rules (indexes into spec.access) naming the caller,
   * split by whether their time window is open now. */
  explain(id: CallerIdentity): { matching: number[]; outsideWindow: { index: number; ended: boolean }[] } {
    const now = this.clock.now();
    const matching: number[] = [];
    const outsideWindow: { index: number; ended: boolean }[] = [];
    for (const i of this.namesOf(id)) {
      const r = this.rules[i]!;
      if (inWindow(r, now)) matching.push(i);
      else outsideWindow.push({ index: i, ended: r.notAfter !== null && now >= r.notAfter });
    }
    return { matching, outsideWindow };
  }

  rule(i: number): AccessRulePlan | undefined {
    return this.rules[i];
  }
}

function inWindow(r: AccessRulePlan, now: number): boolean {
  return (r.notBefore === null || now >= r.notBefore) && (r.notAfter === null || now < r.notAfter);
}
