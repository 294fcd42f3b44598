// Which gateways are served under --max-gateways-per-namespace: the oldest N of each namespace,
// kept as gateways come and go, so a reconcile asks in O(1) and a change names only the
// gateways whose place it changed (not every gateway of the namespace, nor of the cluster).

import { keyOf } from '../api/keys.js';
import type { AccessGateway } from '../api/types.js';

/** Orders gateways by age (then key): the older wins a tie or a place under the limit. */
export function rankOf(gw: AccessGateway): string {
  return `${gw.metadata.creationTimestamp ?? ''}/${keyOf(gw)}`;
}

interface Namespace {
  /** Every gateway of the namespace, by key: its rank (age, then key). */
  all: Map<string, string>;
  /** The oldest (at most max), sorted by rank. */
  served: { key: string; rank: string }[];
}

export class NamespaceLimit {
  private readonly namespaces = new Map<string, Namespace>();
  private readonly servedKeys = new Set<string>();

  /** @param max gateways served per namespace; 0: no limit. */
  constructor(readonly max: number) {}

  /** Whether the gateway is among its namespace's oldest `max` (always, without a limit). */
  served(key: string): boolean {
    return this.max <= 0 || this.servedKeys.has(key);
  }

  /** A gateway was added or updated; returns the other gateways whose place changed. */
  set(key: string, rank: string): string[] {
    if (this.max <= 0) return [];
    const had = this.namespaces.get(nsOf(key))?.all.get(key);
    if (had === rank) return [];
    // a new rank (deleted and created again while the watch was away): its old place goes first
    const moved = had === undefined ? [] : this.delete(key);
    return [...moved, ...this.insert(key, rank)];
  }

  /** A gateway was deleted; returns the gateway that took its place under the limit, if any. */
  delete(key: string): string[] {
    const ns = nsOf(key);
    const n = this.namespaces.get(ns);
    if (!n?.all.delete(key)) return [];
    if (!n.all.size) {
      this.namespaces.delete(ns);
      this.servedKeys.delete(key);
      return [];
    }
    if (!this.servedKeys.delete(key)) return [];
    n.served.splice(n.served.findIndex((s) => s.key === key), 1);
    // the oldest of those waiting: older than none of the served, so it goes last
    let next: { key: string; rank: string } | undefined;
    for (const [k, rank] of n.all) if (!this.servedKeys.has(k) && (!next || rank < next.rank)) next = { key: k, rank };
    if (!next) return [];
    n.served.push(next);
    this.servedKeys.add(next.key);
    return [next.key];
  }

  /** Forgets the gateways of namespace `ns` (of every namespace: undefined). */
  clear(ns?: string): void {
    if (ns === undefined) {
      this.namespaces.clear();
      this.servedKeys.clear();
      return;
    }
    for (const s of this.namespaces.get(ns)?.served ?? []) this.servedKeys.delete(s.key);
    this.namespaces.delete(ns);
  }

  /** Adds a gateway; returns the one it pushed out of the oldest `max`, if any. */
  private insert(key: string, rank: string): string[] {
    const ns = nsOf(key);
    let n = this.namespaces.get(ns);
    if (!n) this.namespaces.set(ns, (n = { all: new Map(), served: [] }));
    n.all.set(key, rank);
    const last = n.served.at(-1);
    if (n.served.length >= this.max && last && last.rank <= rank) return [];
    let at = n.served.length;
    while (at > 0 && n.served[at - 1]!.rank > rank) at--;
    n.served.splice(at, 0, { key, rank });
    this.servedKeys.add(key);
    if (n.served.length <= this.max) return [];
    const out = n.served.pop()!;
    this.servedKeys.delete(out.key);
    return [out.key];
  }
}

function nsOf(key: string): string {
  return key.slice(0, key.indexOf('/'));
}
