// What one namespace may hold of the process its listeners share with every other team's: open
// client connections, admitted or not yet (a connection holds ~27 KiB of memory, ~47 KiB over TLS, and a file
// descriptor), request bodies buffered for retries, and callers in token caches. Without a bound,
// one team could starve the others or get the operator OOM-killed.
import { EntryBudget } from '../auth/token-cache.js';

export class NamespaceBudget {
  private readonly held = new Map<string, number>();

  /** `limit` 0: no limit. */
  constructor(readonly limit: number) {}

  /** Counts `n` more for `namespace`; false (nothing counted) when that would pass the limit. */
  take(namespace: string, n = 1): boolean {
    const held = this.held.get(namespace) ?? 0;
    if (this.limit > 0 && held + n > this.limit) return false;
    this.held.set(namespace, held + n);
    return true;
  }

  /** Gives back `n` that `take` counted. */
  give(namespace: string, n = 1): void {
    const held = (this.held.get(namespace) ?? 0) - n;
    if (held > 0) this.held.set(namespace, held);
    else this.held.delete(namespace);
  }
}

/** A connection not admitted yet, as the budget of such connections sees it. */
export interface Unadmitted {
  /** Closes the connection to make room for a newer one. */
  evict(): void;
}

/**
 * Connections not admitted yet (none of their requests passed `spec.access`), per namespace, oldest
 * first. Past the limit the oldest is closed: anyone who can reach a listener can open these, so
 * refusing the newest would let a flood lock the team's callers out, while a caller that asks at
 * once is admitted long before its connection is the oldest.
 */
export class UnadmittedConnections {
  private readonly open = new Map<string, Set<Unadmitted>>();

  /** `limit` 0: no limit. */
  constructor(readonly limit: number) {}

  add(namespace: string, c: Unadmitted): void {
    let s = this.open.get(namespace);
    if (!s) this.open.set(namespace, (s = new Set()));
    if (this.limit > 0 && s.size >= this.limit) {
      const oldest = s.values().next().value!;
      s.delete(oldest);
      oldest.evict();
    }
    s.add(c);
  }

  /** Admitted, or closed. */
  remove(namespace: string, c: Unadmitted): void {
    const s = this.open.get(namespace);
    if (!s?.delete(c) || s.size > 0) return;
    this.open.delete(namespace);
  }
}

/** A namespace's budgets, shared by all of its listeners. */
export interface Budgets {
  /** Admitted connections. */
  connections: NamespaceBudget;
  /** Connections not admitted yet: as many again as admitted ones. */
  unadmitted: UnadmittedConnections;
  /** Bytes of request bodies held in memory (Service routes buffer small ones so they can be retried). */
  bodies: NamespaceBudget;
  /** Callers held in the token caches of a namespace's gateways (~1 KiB each). */
  cachedCallers(namespace: string): EntryBudget;
}

export function budgetsFor(limits: { maxConnectionsPerNamespace: number; bufferedBodyBytesPerNamespace: number; cachedCallersPerNamespace: number }): Budgets {
  const callers = new Map<string, EntryBudget>(); // one small object per namespace that ever had a gateway
  return {
    connections: new NamespaceBudget(limits.maxConnectionsPerNamespace),
    unadmitted: new UnadmittedConnections(limits.maxConnectionsPerNamespace),
    bodies: new NamespaceBudget(limits.bufferedBodyBytesPerNamespace),
    cachedCallers: (ns) => {
      let b = callers.get(ns);
      if (!b) callers.set(ns, (b = new EntryBudget(limits.cachedCallersPerNamespace)));
      return b;
    },
  };
}
