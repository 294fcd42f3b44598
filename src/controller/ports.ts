// Listener ports: the one a spec asks for, else one from the range, kept while the gateway
// exists. A port belongs to whoever holds it: a gateway asking for a port another holds gets a
// conflict and never takes it away (no team can evict another's listener). A port given up stays
// its namespace's for a while (`holdMs`): a gateway deleted and made again gets it back, and
// another team's gateway waiting for it cannot take it while the old gateway's clients, Service
// and kube-proxy rules still send that team's requests there. After a restart the ports recorded
// in status are claimed again first (seed). Two gateways may record one port: a team can keep its
// gateway's status from being written (a full quota, a spec at etcd's size bound) after it moved
// off a port that another gateway then got. The one given it last (status.listener.since) has it:
// the older record is stale (were the older gateway to win, another team's clients would reach
// its listener on a restarted replica).

import { isoSeconds } from '../clock.js';

/** `retryInMs`: the port is held for another namespace that long; the claim may succeed then. */
export type Claim = { port: number } | { conflict: string; retryInMs?: number };

export interface ClaimRequest {
  key: string;
  requested?: number;
  /** The port recorded in status (stable across operator restarts). */
  previous?: number;
  /** Orders claimants when seeding: lower wins a contested port (of records given at one time). */
  rank: string;
  /** When it was given `previous` (status.listener.since): the later record of a port wins it. */
  since?: string;
}

/** A port's holder: its gateway, rank, and when it was given the port (ISO, to the ms; null: a
 * record of before there were times). */
interface Holder { key: string; rank: string; since: string | null }

export class PortAllocator {
  private readonly owners = new Map<number, Holder>();
  /** The latest time a record of each port says it was given (records seen and ports given here). */
  private readonly recorded = new Map<number, string>();
  private readonly byKey = new Map<string, number>();
  private readonly blocked = new Map<number, number>();
  /** Ports given up, by port: the namespace and gateway that held them, until when. */
  private readonly released = new Map<number, { key: string; until: number }>();
  /** Ports each namespace's gateways hold now, and the most they held within the hold (and when). */
  private readonly owned = new Map<string, number>();
  private readonly peak = new Map<string, { n: number; at: number }>();
  private readonly maxHeldPerNamespace: number;

  /** `maxHeldPerNamespace`: the most ports a namespace's gateways gave up that stay held for it
   * (its oldest hold goes first), or as many as it held at once lately if more: a team moving one
   * gateway from port to port cannot hold the range, and one deleting its 40 gateways (its
   * namespace) keeps all 40. 0 or none: 16 (a namespace's gateways are not capped then). */
  constructor(private readonly range: [number, number], private readonly now: () => number = Date.now, private readonly holdMs = 0,
    maxHeldPerNamespace?: number, private readonly requestable: [number, number] = [1, 65535]) {
    this.maxHeldPerNamespace = maxHeldPerNamespace || 16;
  }

  private unrequestable(port: number): boolean {
    return port < this.requestable[0] || port > this.requestable[1];
  }

  /** Why a spec may not ask for `port` (--requestable-ports), or null: the pod's other ports (a
   * mesh sidecar's, say) are the platform's, and a team binding one first breaks them for every team. */
  refusal(port: number): string | null {
    if (!this.unrequestable(port)) return null;
    const [lo, hi] = this.requestable;
    return `port ${port} is not one a gateway may ask for: the platform allows ${lo}-${hi} (--requestable-ports); leave spec.listener.port out to get one from the range`;
  }

  portOf(key: string): number | undefined {
    return this.byKey.get(key);
  }

  /** When `key` was given the port it holds (for status.listener.since): a port held from a record
   * of before there were times is given one now (this leader holds it: no other record is later). */
  sinceOf(key: string): string | undefined {
    const p = this.byKey.get(key);
    const h = p === undefined ? undefined : this.owners.get(p);
    if (h && h.since === null) h.since = this.stamp(p!);
    return h?.since ?? undefined;
  }

  /** Now, for port `p`: after every record of it seen (a leader whose clock is behind the one
   * that gave it before would make the older record look later). */
  private stamp(p: number): string {
    const seen = Date.parse(this.recorded.get(p) ?? '') || -Infinity;
    return new Date(Math.max(this.now(), seen + 1)).toISOString();
  }

  /** A record of port `p` given at `since`: the latest seen is kept, by port (for `stamp`). */
  private noteRecord(p: number | undefined, since: string | null | undefined): void {
    if (p === undefined || !since) return;
    const had = this.recorded.get(p);
    if (later(since, had) < 0) this.recorded.set(p, since);
  }

  /** Gives back the ports gateways held before a restart (status.listener.port): a port two
   * records name to the one given it last (then the older gateway); call once, before any claim. */
  seed(held: ClaimRequest[]): void {
    for (const h of held) this.noteRecord(h.previous, h.since);
    for (const h of [...held].sort((a, b) => later(a.since, b.since) || (a.rank < b.rank ? -1 : a.rank > b.rank ? 1 : 0))) {
      const port = h.previous;
      if (port === undefined || (h.requested !== undefined && (h.requested !== port || this.unrequestable(port)))) continue;
      if (h.requested === undefined && !this.inRange(port)) continue;
      if (!this.owners.has(port) && !this.byKey.has(h.key)) this.take(h.key, port, h.rank, h.since ?? null);
    }
  }

  claim(req: ClaimRequest): Claim {
    const { key, requested } = req;
    this.noteRecord(req.previous, req.since);
    if (requested !== undefined) {
      const refused = this.refusal(requested);
      if (refused) return { conflict: refused };
      const holder = this.owners.get(requested);
      if (holder?.key === key) return { port: requested }; // its own (held for another namespace or not)
      if (holder) {
        // another team's gateway is not named to this one (its status and Events are the team's)
        return { conflict: namespaceOf(holder.key) === namespaceOf(key) ? `port ${requested} is used by AccessGateway ${holder.key}` : `port ${requested} is used by a gateway of another namespace` };
      }
      const until = this.heldUntil(requested, key);
      if (until !== undefined) {
        return { conflict: `port ${requested} was given up by a gateway of another namespace less than ${Math.ceil(this.holdMs / 1000)} s ago; it stays that namespace's until ${isoSeconds(until)} (--released-port-hold-seconds)`, retryInMs: until - this.now() };
      }
      this.take(key, requested, req.rank);
      return { port: requested };
    }
    const mine = this.byKey.get(key);
    if (mine !== undefined && this.inRange(mine)) return { port: mine };
    if (req.previous !== undefined && this.inRange(req.previous) && this.free(req.previous, key)) {
      this.take(key, req.previous, req.rank);
      return { port: req.previous };
    }
    for (const [p, r] of this.released) { // the gateway made again: the port it gave up
      if (r.key === key && this.inRange(p) && this.free(p, key)) {
        this.take(key, p, req.rank);
        return { port: p };
      }
    }
    for (let p = this.range[0]; p <= this.range[1]; p++) {
      if (this.free(p, key)) {
        this.take(key, p, req.rank);
        return { port: p };
      }
    }
    let until: number | undefined; // a port held for another namespace is free at the end of its hold, one another process holds when it is tried again
    for (const [p, r] of this.released) if (this.inRange(p) && !this.owners.has(p) && namespaceOf(r.key) !== namespaceOf(key)) until = Math.min(until ?? r.until, r.until);
    for (const [p, t] of this.blocked) if (this.inRange(p) && !this.owners.has(p) && t > this.now()) until = Math.min(until ?? t, t);
    return { conflict: `no free port left in the range ${this.range[0]}-${this.range[1]}`, ...(until !== undefined ? { retryInMs: Math.max(1, until - this.now()) } : {}) };
  }

  /**
   * A follower's claim: exactly the port the leader recorded for `key` (clients reach every
   * replica at that port), never one of its own choosing. Another port `key` holds here is given
   * up at once; a recorded port still held here by another gateway (one the leader has moved off
   * it) is waited for: `holder` is that gateway. Unless that one's record is older (`since`): it
   * moved off and its status was not written since; it gives the port up here (`moved`).
   */
  follow(key: string, port: number, rank: string, since?: string): { port: number; moved?: string } | { conflict: string; holder: string } {
    const mine = this.byKey.get(key);
    if (mine === port) {
      // (given it again meanwhile, its updates missed: its record now is what a later one is judged by)
      const h = this.owners.get(port)!;
      if (later(since, h.since ?? undefined) < 0) h.since = since!;
      return { port };
    }
    if (mine !== undefined) this.release(key);
    const holder = this.owners.get(port);
    if (holder && later(since, holder.since ?? undefined) < 0) {
      this.release(holder.key);
      this.take(key, port, rank, since ?? null);
      return { port, moved: holder.key };
    }
    if (holder) return { conflict: `port ${port}, recorded by the leader, is still held on this replica by a gateway that moves off it`, holder: holder.key };
    this.take(key, port, rank, since ?? null);
    return { port };
  }

  release(key: string): void {
    const p = this.byKey.get(key);
    if (p === undefined) return;
    this.byKey.delete(key);
    if (this.owners.get(p)?.key !== key) return;
    this.owners.delete(p);
    const ns = namespaceOf(key);
    const had = this.owned.get(ns) ?? 0; // this one included
    if (had <= 1) this.owned.delete(ns);
    else this.owned.set(ns, had - 1);
    if (this.holdMs > 0) {
      const now = this.now();
      for (const [n, p] of this.peak) if (now - p.at > this.holdMs) this.peak.delete(n); // (a namespace gone leaves none)
      const peak = this.peak.get(ns);
      if (!peak || had >= peak.n) this.peak.set(ns, { n: had, at: now });
      const cap = Math.max(this.maxHeldPerNamespace, this.peak.get(ns)!.n);
      this.released.delete(p); // (the newest last: the map is in order of expiry)
      this.released.set(p, { key, until: now + this.holdMs });
      let held = 0;
      for (const r of this.released.values()) if (namespaceOf(r.key) === ns) held++;
      for (const [q, r] of this.released) { // its oldest first
        if (held <= cap) break;
        if (namespaceOf(r.key) === ns) {
          this.released.delete(q);
          held--;
        }
      }
    }
  }

  /** Until when a port given up is still held for another namespace than `key`'s, or undefined. */
  private heldUntil(p: number, key: string): number | undefined {
    const now = this.now();
    for (const [q, r] of this.released) { // the expired ones go first
      if (r.until > now) break;
      this.released.delete(q);
    }
    const r = this.released.get(p);
    return r && namespaceOf(r.key) !== namespaceOf(key) ? r.until : undefined;
  }

  /** Until when `key` must wait for port `p`, given up just now, for another namespace's hold
   * (undefined: it may take it). */
  heldFor(p: number, key: string): number | undefined {
    return this.heldUntil(p, key);
  }

  /** A port some other process holds: not handed out again for a while. */
  block(port: number, forMs = 60_000): void {
    this.blocked.set(port, this.now() + forMs);
  }

  /** Whether a port is in the allocation range (an allocated one; a requested one may be anywhere). */
  inRange(p: number): boolean {
    return p >= this.range[0] && p <= this.range[1];
  }

  /** Whether `key` may take port `p`: no one holds it, no other process, no other namespace lately. */
  private free(p: number, key: string): boolean {
    const until = this.blocked.get(p);
    if (until !== undefined && until > this.now()) return false;
    return !this.owners.has(p) && this.heldUntil(p, key) === undefined;
  }

  /** `since`: when the leader gave it, as recorded (null: not recorded); by default now. */
  private take(key: string, port: number, rank: string, since: string | null = this.stamp(port)): void {
    const prev = this.byKey.get(key);
    if (prev !== undefined && prev !== port) this.release(key);
    if (prev !== port) this.owned.set(namespaceOf(key), (this.owned.get(namespaceOf(key)) ?? 0) + 1);
    this.owners.set(port, { key, rank, since });
    this.noteRecord(port, since);
    this.byKey.set(key, port);
    this.released.delete(port); // held no more: taken
  }
}

/** Negative when record `a` was given after `b` (a record without a time: before any). */
function later(a: string | undefined, b: string | undefined): number {
  const t = (s: string | undefined) => (s === undefined ? -Infinity : Date.parse(s) || -Infinity);
  const d = t(b) - t(a);
  return Number.isNaN(d) ? 0 : d;
}

/** The namespace of a gateway key (NS/NAME). */
function namespaceOf(key: string): string {
  return key.slice(0, Math.max(0, key.indexOf('/')));
}
