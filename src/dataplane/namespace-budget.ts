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
  /** The client's address: each address's share is counted. */
  readonly source: string;
  /** Closes the connection to make room for a newer one. */
  evict(): void;
}

/** One namespace's connections not admitted yet: oldest first, and how many each address holds. */
interface Held { all: Set<Unadmitted>; bySource: Map<string, number> }

/**
 * Connections not admitted yet (none of their requests passed `spec.access`), per namespace. Past
 * the limit, the oldest of the client address that holds the most is closed. Anyone who can reach
 * a listener can open these: refusing the newest would let a flood lock the team's callers out,
 * and closing the oldest of all would let it close theirs. A flood from a few addresses closes its
 * own, while a caller that asks at once is admitted long before it holds the most.
 */
export class UnadmittedConnections {
  private readonly open = new Map<string, Held>();

  /** `limit` 0: no limit. */
  constructor(readonly limit: number) {}

  add(namespace: string, c: Unadmitted): void {
    let h = this.open.get(namespace);
    if (!h) this.open.set(namespace, (h = { all: new Set(), bySource: new Map() }));
    h.all.add(c);
    h.bySource.set(c.source, (h.bySource.get(c.source) ?? 0) + 1);
    if (this.limit > 0 && h.all.size > this.limit) {
      const victim = oldestOfLargest(h, c);
      this.remove(namespace, victim);
      victim.evict();
    }
  }

  /** Admitted, or closed. */
  remove(namespace: string, c: Unadmitted): void {
    const h = this.open.get(namespace);
    if (!h?.all.delete(c)) return;
    const n = h.bySource.get(c.source)! - 1;
    if (n > 0) h.bySource.set(c.source, n);
    else h.bySource.delete(c.source);
    if (h.all.size === 0) this.open.delete(namespace);
  }
}

/** The oldest connection of the address that holds the most (`newest` if none is found). Run only
 * when a namespace is full: O(its connections). */
function oldestOfLargest(h: Held, newest: Unadmitted): Unadmitted {
  let most = 0;
  for (const n of h.bySource.values()) if (n > most) most = n;
  for (const c of h.all) if (h.bySource.get(c.source) === most) return c;
  return newest;
}

/**
 * Requests a namespace may start forwarding in one turn of the event loop; more wait for the next
 * turns, in order. When one team's requests fill the loop, every turn is as long as all of them,
 * and every other team's request waits for that: so a team starts at most `perTurn` per turn, and
 * the others' requests are started in the turn they arrive.
 */
export class TurnShare {
  private readonly started = new Map<string, number>();
  private readonly waiting = new Map<string, Array<() => void>>();
  private scheduled = false;

  /** `perTurn` 0: no limit. */
  constructor(readonly perTurn: number) {}

  /** Runs `go` now (true), or in a later turn (false) when `namespace` has started `perTurn` in this
   * one. `go` must not throw: it may run in a later turn, with other teams'. (A namespace with some
   * waiting has always started `perTurn` in this turn: a turn starts up to that many of them.) */
  run(namespace: string, go: () => void): boolean {
    if (this.perTurn === 0) {
      go();
      return true;
    }
    const n = this.started.get(namespace) ?? 0;
    this.schedule();
    if (n < this.perTurn) {
      this.started.set(namespace, n + 1);
      go();
      return true;
    }
    const q = this.waiting.get(namespace);
    if (q) q.push(go);
    else this.waiting.set(namespace, [go]);
    return false;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.turn);
  }

  private readonly turn = (): void => {
    this.scheduled = false;
    this.started.clear();
    for (const [ns, q] of this.waiting) {
      const batch = q.length <= this.perTurn ? q : q.splice(0, this.perTurn);
      if (batch === q) this.waiting.delete(ns);
      this.started.set(ns, batch.length);
      for (const go of batch) go();
    }
    if (this.started.size > 0) this.schedule();
  };
}

/** A namespace's budgets, shared by all of its listeners. */
export interface Budgets {
  /** Admitted connections. */
  connections: NamespaceBudget;
  /** Connections not admitted yet: as many again as admitted ones. */
  unadmitted: UnadmittedConnections;
  /** Bytes of request bodies held in memory (Service routes buffer small ones so they can be retried). */
  bodies: NamespaceBudget;
  /** Requests started per turn of the event loop. */
  turns: TurnShare;
  /** Callers held in the token caches of a namespace's gateways (~1 KiB each). */
  cachedCallers(namespace: string): EntryBudget;
}

export function budgetsFor(limits: { maxConnectionsPerNamespace: number; bufferedBodyBytesPerNamespace: number; cachedCallersPerNamespace: number; requestsPerTurnPerNamespace: number }): Budgets {
  const callers = new Map<string, EntryBudget>(); // one small object per namespace that ever had a gateway
  return {
    connections: new NamespaceBudget(limits.maxConnectionsPerNamespace),
    unadmitted: new UnadmittedConnections(limits.maxConnectionsPerNamespace),
    bodies: new NamespaceBudget(limits.bufferedBodyBytesPerNamespace),
    turns: new TurnShare(limits.requestsPerTurnPerNamespace),
    cachedCallers: (ns) => {
      let b = callers.get(ns);
      if (!b) callers.set(ns, (b = new EntryBudget(limits.cachedCallersPerNamespace)));
      return b;
    },
  };
}
