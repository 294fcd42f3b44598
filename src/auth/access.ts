// spec.access: who may use the gateway, and which routes. Decisions are memoised per identity
// object (identities come from the token cache, so a cached caller costs one WeakMap lookup).
import type { AccessRulePlan } from '../translate/plan.js';
import { serviceAccountOf, type CallerIdentity } from './identity.js';

/** null: no rule matches; 'all': every route; else the allowed route names. */
export type Allowed = null | 'all' | ReadonlySet<string>;

export class AccessPolicy {
  private readonly memo = new WeakMap<CallerIdentity, Allowed>();

  constructor(private readonly rules: readonly AccessRulePlan[]) {}

  allowed(id: CallerIdentity): Allowed {
    let a = this.memo.get(id);
    if (a === undefined) {
      a = this.decide(id);
      this.memo.set(id, a);
    }
    return a;
  }

  mayUse(id: CallerIdentity, route: string): boolean {
    const a = this.allowed(id);
    return a === 'all' || (a !== null && a.has(route));
  }

  private decide(id: CallerIdentity): Allowed {
    const sa = serviceAccountOf(id.username);
    const routes = new Set<string>();
    for (const r of this.rules) {
      const matches =
        r.users.includes(id.username) ||
        r.groups.some((g) => id.groups.includes(g)) ||
        (sa !== null && r.serviceAccounts.some((s) => s.namespace === sa.namespace && (s.name === '*' || s.name === sa.name)));
      if (!matches) continue;
      if (r.routes === null) return 'all';
      for (const n of r.routes) routes.add(n);
    }
    return routes.size ? routes : null;
  }
}
