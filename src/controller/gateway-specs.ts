// Which gateways the cache keeps whole. A gateway over --max-gateways-per-namespace is never
// served, so its spec (up to ~1.5 MB at the schema's bounds) is not kept: a team making hundreds
// of them would otherwise fill the heap every team's listeners share. It is read again when it
// takes a place under the limit.
import { keyOf } from '../api/keys.js';
import type { AccessGateway } from '../api/types.js';
import { NamespaceLimit, rankOf } from './namespace-limit.js';

const withoutSpec = Symbol('withoutSpec');

/** Whether the cache holds the gateway without its spec (read it again to serve it). */
export function specDropped(gw: AccessGateway): boolean {
  return (gw as { [withoutSpec]?: true })[withoutSpec] === true;
}

export class SpecKeeper {
  /** The order of each namespace's gateways as the cache has seen them (the controller's limit
   * sees the same events, a little later). */
  private readonly order: NamespaceLimit;
  /** The objects kept whole, by key: one pushed out of the oldest N loses its spec in place
   * (it may sit in a list not yet whole, out of the cache's reach). */
  private readonly whole = new Map<string, AccessGateway>();

  constructor(max: number) {
    this.order = new NamespaceLimit(max);
  }

  /** The object to cache for `gw` (as read): itself, or itself without its spec. */
  keep(gw: AccessGateway): AccessGateway {
    if (this.order.max <= 0) return gw;
    const key = keyOf(gw);
    for (const out of this.order.set(key, rankOf(gw))) this.drop(out);
    if (!this.order.served(key)) {
      this.drop(key);
      return dropSpec(gw);
    }
    this.whole.set(key, gw);
    return gw;
  }

  /** A list of namespace `ns`'s gateways (every namespace's: undefined) begins: the cache will
   * hold what it reads, so the order is made again from that (a list that failed midway, or an
   * object it read that was deleted before the next one, leaves nothing behind). */
  listStarts(ns: string | undefined): void {
    this.order.clear(ns);
    for (const key of [...this.whole.keys()]) if (ns === undefined || key.startsWith(`${ns}/`)) this.whole.delete(key);
  }

  /** The gateway is gone (the one taking its place is read again when reconciled). */
  gone(key: string): void {
    this.order.delete(key);
    this.whole.delete(key);
  }

  private drop(key: string): void {
    const gw = this.whole.get(key);
    this.whole.delete(key);
    if (gw) dropSpec(gw);
  }
}

/** `gw` without its spec (changed in place): its metadata and status stay, for ranking and status writes. */
function dropSpec(gw: AccessGateway): AccessGateway {
  gw.spec = {} as AccessGateway['spec'];
  (gw as { [withoutSpec]?: true })[withoutSpec] = true;
  return gw;
}
