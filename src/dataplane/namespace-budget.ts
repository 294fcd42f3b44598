// What one namespace may hold of the process its listeners share with every other team's: open
// client connections, admitted or not yet (a connection holds ~27 KiB of memory, ~47 KiB over TLS, and a file
// descriptor), request bodies buffered for retries, and callers in token caches. Without a bound,
// one team could starve the others or get the operator OOM-killed.
import type { Server as NetServer, Socket } from 'node:net';
import { EntryBudget } from '../auth/token-cache.js';
import { HandshakeShare } from './handshake-share.js';
import { ApiserverSlots } from './apiserver-slots.js';
import { NamespacedBound } from '../recent.js';

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
  /** The client's address (`addressGroup`): each address's share is counted. */
  readonly source: string;
  /** Closes the connection to make room for a newer one. */
  evict(): void;
}

/** One namespace's connections not admitted yet, oldest first: all, and each address's; and which
 * addresses hold how many (to find the one holding the most without a scan). */
interface Held {
  all: Set<Unadmitted>;
  bySource: Map<string, Set<Unadmitted>>;
  byCount: Map<number, Set<string>>;
  most: number;
}

/**
 * Connections not admitted yet (none of their requests passed `spec.access`), per namespace, and
 * over all namespaces together (`total`: the process's memory, ~65 KiB a TLS connection). Past a
 * namespace's limit one of its own is closed: the oldest of the address holding the most, when
 * that is at least an eighth of the limit, else the oldest. Past the total, one of the namespace
 * holding the most, chosen the same way, so a flood aimed at some teams does not close a quiet
 * team's connections. Anyone who can reach a listener can open these: refusing the newest would
 * let a flood lock the team's callers out; so a flood from a few addresses closes its own, and one
 * spread over many addresses must open the limit's worth in the time a caller's first request
 * takes to be admitted.
 */
export class UnadmittedConnections {
  private readonly open = new Map<string, Held>();
  /** Every connection, by its namespace: which namespace holds the most. */
  private readonly byNamespace = held();
  private readonly share: number;

  /** `limit` per namespace, `total` over all; 0: no limit. */
  constructor(readonly limit: number, readonly total = 0) {
    this.share = Math.max(2, Math.ceil(limit / 8));
  }

  add(namespace: string, c: Unadmitted): void {
    let h = this.open.get(namespace);
    if (!h) this.open.set(namespace, (h = held()));
    hold(h, c, c.source);
    hold(this.byNamespace, c, namespace);
    if (this.limit > 0 && h.all.size > this.limit) this.evict(namespace, victim(h, this.share));
    if (this.total > 0 && this.byNamespace.all.size > this.total) {
      const ns = this.byNamespace.byCount.get(this.byNamespace.most)!.values().next().value!;
      this.evict(ns, victim(this.open.get(ns)!, this.share));
    }
  }

  /** Admitted, or closed. */
  remove(namespace: string, c: Unadmitted): void {
    const h = this.open.get(namespace);
    if (!h || !release(h, c, c.source)) return;
    release(this.byNamespace, c, namespace);
    if (h.all.size === 0) this.open.delete(namespace);
  }

  private evict(namespace: string, c: Unadmitted): void {
    this.remove(namespace, c);
    c.evict();
  }
}

function held(): Held {
  return { all: new Set(), bySource: new Map(), byCount: new Map(), most: 0 };
}

/** Holds `c` under `key` (its address, or its namespace). */
function hold(h: Held, c: Unadmitted, key: string): void {
  h.all.add(c);
  let mine = h.bySource.get(key);
  if (!mine) h.bySource.set(key, (mine = new Set()));
  mine.add(c);
  recount(h, key, mine.size - 1, mine.size);
}

function release(h: Held, c: Unadmitted, key: string): boolean {
  if (!h.all.delete(c)) return false;
  const mine = h.bySource.get(key)!;
  mine.delete(c);
  if (mine.size === 0) h.bySource.delete(key);
  recount(h, key, mine.size + 1, mine.size);
  return true;
}

/** The oldest of the address holding the most, when it holds `share` or more; else the oldest. */
function victim(h: Held, share: number): Unadmitted {
  const heavy = h.most >= share ? h.bySource.get(h.byCount.get(h.most)!.values().next().value!)! : h.all;
  return heavy.values().next().value!;
}

/**
 * Bounds the connections `server` holds at `limit` as the budget of connections not admitted yet
 * does: past it, the oldest of the address holding the most (or of all) is closed, so a new one
 * (a probe, a scrape) is accepted. For a port any pod may reach (the admin port).
 */
export function boundConnections(server: NetServer, limit: number): void {
  const open = new UnadmittedConnections(limit);
  server.on('connection', (s: Socket) => {
    if (s.remoteAddress === undefined) return; // gone already
    const c: Unadmitted = { source: addressGroup(s.remoteAddress), evict: () => s.destroy() };
    open.add('', c);
    s.once('close', () => open.remove('', c));
  });
}

/** `source` now holds `to` instead of `from` (one more or one fewer). */
function recount(h: Held, source: string, from: number, to: number): void {
  const was = h.byCount.get(from);
  if (was) {
    was.delete(source);
    if (was.size === 0) h.byCount.delete(from);
  }
  if (to > 0) {
    const now = h.byCount.get(to);
    if (now) now.add(source);
    else h.byCount.set(to, new Set([source]));
  }
  if (to > h.most) h.most = to;
  else if (from === h.most && !h.byCount.has(from)) h.most = to; // the only one holding the most gave one back
}

/** What counts as one client address: the address, an IPv4 one also when written in IPv6
 * (IPv4-mapped, NAT64). Not an IPv6 prefix: pods on one node share a /64. */
export function addressGroup(address: string): string {
  const a = address.split('%')[0]!.toLowerCase(); // a zone
  return a.includes(':') ? /:(\d+\.\d+\.\d+\.\d+)$/.exec(a)?.[1] ?? a : a;
}

/**
 * Requests (and pieces of long bodies: below) a namespace may start in one turn of the event
 * loop; more wait for the next turns, in order. When one team's requests fill the loop, every turn is as long as all of them,
 * and every other team's request waits for that: so a team starts at most `perTurn` per turn, and
 * its other requests wait in its queue, not in every team's turn. A team alone (no other's
 * connection or request came, and none started, in the last `aloneMs`) starts `aloneFactor` times
 * that: turns of `perTurn` cost a lone team 10-15% of its throughput in the loop's own work per
 * turn. Not unbounded: another's first request, its handshake and its token check take turns of
 * the lone team's starts before it is held (docs/performance.md).
 *
 * A team whose few callers each wait for an answer before asking again has none waiting and starts
 * less than `perTurn` a turn, and each answer takes it a turn or two: another team's `perTurn` make
 * those turns long. So while such a namespace is busy (it starts `busy` a turn or more, averaged
 * over the last ~8 turns that ran), a namespace with requests waiting starts at most about as many
 * a turn as the least busy of them (rounded, at least one: another namespace with none waiting
 * cannot lift the hold). A namespace with none waiting is never held below `perTurn`; teams with
 * requests waiting, beside no such one, start `perTurn` each; a trickle (less than `busy`) holds
 * no one back. Only requests make those averages: the pieces of long bodies and sessions take
 * starts but never make their namespace one with few callers (a slow download or a chatty
 * session would hold every busy team to one start a turn).
 *
 * A piece costs a start per `pieceBytes` (a 64 KiB piece costs the event loop about what four
 * small requests do): one that costs more than what is left of its namespace's share of a turn
 * still goes, and the rest is paid from that namespace's next turns.
 */
export class TurnShare {
  /** Starts per turn, averaged, from which a namespace with none waiting holds back those with some. */
  static readonly busy = 0.25;
  /** The bytes of a piece that cost one start. */
  static readonly pieceBytes = 16 * 1024;
  /** A namespace alone (nothing of another's came or started in the last `aloneMs`) starts this many times `perTurn`. */
  static readonly aloneFactor = 4;
  static readonly aloneMs = 1000;
  /** When something of each namespace's last came (`arrived`) or started (at its turn's end). */
  private readonly seen = new Map<string, number>();
  /** What each namespace has started in this turn, in starts. */
  private readonly started = new Map<string, number>();
  /** Of those, requests (not pieces): what the averages are made of. */
  private readonly requests = new Map<string, number>();
  /** Starts that pieces cost past their turn's share, paid from the next turns'. */
  private readonly owed = new Map<string, number>();
  /** Each `go` says false when it started nothing (its client left): it takes no place in a turn. */
  private readonly waiting = new Map<string, Array<() => boolean | void>>();
  private scheduled = false;
  /** Each namespace's requests started per turn, averaged over the last ~8 turns (that ran). */
  private readonly rate = new Map<string, number>();
  /** What a namespace with requests waiting may start in a turn. */
  private held: number;

  /** `perTurn` 0: no limit. `onError`: what a `go` threw (it runs in a turn, with other teams').
   * `aloneMs`: how long a namespace's last arrival or start keeps every other from being alone. */
  constructor(readonly perTurn: number, private readonly onError: (err: unknown) => void, private readonly aloneMs = TurnShare.aloneMs) {
    this.held = perTurn;
  }

  /** Something of `namespace`'s came: a connection, a finished handshake, a request or upgrade not
   * started yet (its token check comes first). No other namespace is alone from now on. */
  arrived(namespace: string): void {
    if (this.perTurn !== 0) this.seen.set(namespace, performance.now());
  }

  /** Counts a start in this turn and says true, or says false when `namespace` has started its
   * share of it (one with some waiting has: new requests go behind those). `bytes`: a piece of a
   * body or session of that size, not a request: it counts a start per 16 KiB, and what is past
   * the share is owed. */
  tryStart(namespace: string, bytes?: number): boolean {
    if (this.perTurn === 0) return true;
    const n = this.started.get(namespace) ?? 0;
    const share = this.share(namespace);
    if (n >= share) return false;
    this.count(namespace, n, bytes === undefined ? 0 : pieceCost(bytes), share);
    return true;
  }

  /** Counts a start (a piece's: its cost) in this turn whatever the bound (what `wait` ran). */
  start(namespace: string, bytes?: number): void {
    if (this.perTurn === 0) return;
    this.count(namespace, this.started.get(namespace) ?? 0, bytes === undefined ? 0 : pieceCost(bytes), this.share(namespace));
  }

  /** Counts what a piece that took no start of its own costs past one start (a request's first
   * piece: its request took one), whatever the bound: past the share, it is owed. */
  charge(namespace: string, bytes: number): void {
    if (this.perTurn === 0 || bytes <= TurnShare.pieceBytes) return;
    const n = this.started.get(namespace) ?? 0;
    this.count(namespace, n, pieceCost(bytes) - 1, this.share(namespace));
  }

  /** Counts `n` starts of work done for `namespace` without a piece (an upstream's header lines,
   * its informational answers, what its Service connections read that is not body, a session's
   * frame headers), whatever the bound: past the share, owed. */
  chargeStarts(namespace: string, n: number): void {
    if (this.perTurn === 0 || n <= 0) return;
    this.count(namespace, this.started.get(namespace) ?? 0, n, this.share(namespace));
  }

  /** What `namespace` may start in this turn: alone, `aloneFactor` times the bound; with some waiting, what the hold lets it; else the bound. */
  private share(namespace: string): number {
    if (this.alone(namespace)) return this.perTurn * TurnShare.aloneFactor;
    return this.waiting.has(namespace) ? this.held : Math.max(this.held, this.perTurn);
  }

  /** Nothing of another namespace's came or started in the last `aloneMs` (one with some waiting
   * has: a namespace waits only once it has started its share, or paid what it owes, in a turn). */
  private alone(namespace: string): boolean {
    return only(this.seen, namespace) && only(this.started, namespace);
  }

  /** `cost` 0: a request (one start, in the averages); else a piece's starts, what is past
   * `share` owed. */
  private count(namespace: string, n: number, cost: number, share: number): void {
    if (cost === 0) {
      this.started.set(namespace, n + 1);
      this.requests.set(namespace, (this.requests.get(namespace) ?? 0) + 1);
    } else {
      this.started.set(namespace, n + cost);
      const past = n + cost - Math.max(n, share);
      if (past > 0) this.owed.set(namespace, (this.owed.get(namespace) ?? 0) + past);
    }
    this.schedule();
  }

  /** Runs `go` in a later turn, after what `namespace` has waiting already. */
  wait(namespace: string, go: () => boolean | void): void {
    const q = this.waiting.get(namespace);
    if (q) q.push(go);
    else this.waiting.set(namespace, [go]);
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.turn);
  }

  /** The averages, with the last turn's starts, and what a namespace with requests waiting may
   * start in the coming one. */
  private average(): void {
    const now = performance.now();
    for (const ns of this.started.keys()) this.seen.set(ns, now);
    for (const [ns, t] of this.seen) if (now - t > this.aloneMs) this.seen.delete(ns);
    for (const [ns, r] of this.rate) this.rate.set(ns, r * 7 / 8);
    for (const [ns, n] of this.requests) this.rate.set(ns, (this.rate.get(ns) ?? 0) + n / 8);
    let few = Infinity; // the least busy namespace with none waiting, among those busy
    for (const [ns, r] of this.rate) {
      if (this.waiting.has(ns)) continue;
      if (r < 0.01) this.rate.delete(ns);
      else if (r >= TurnShare.busy && r < few) few = r;
    }
    this.held = few === Infinity ? this.perTurn : Math.min(this.perTurn, Math.max(1, Math.round(few)));
  }

  private readonly turn = (): void => {
    this.scheduled = false;
    this.average();
    this.started.clear();
    this.requests.clear();
    // what pieces owe is paid first, out of each namespace's share of this turn
    for (const [ns, owed] of this.owed) {
      const paid = Math.min(owed, this.share(ns));
      this.started.set(ns, paid);
      if (owed > paid) this.owed.set(ns, owed - paid);
      else this.owed.delete(ns);
    }
    // only what each queue held when the turn began: what a `go` waits for again goes behind, to a
    // later turn; each `go` counts its own start (a piece's at its cost)
    const queues = this.waiting.size === 0 ? noQueues : [...this.waiting].map(([ns, q]) => [ns, q, q.length] as const);
    for (const [ns, q, had] of queues) {
      const cap = this.perTurn === 0 ? Infinity : this.share(ns); // (it waits: alone, or the hold)
      let i = 0, n = 0;
      try {
        while (n < cap && (this.started.get(ns) ?? 0) < cap && i < had) {
          try {
            if (q[i++]!() !== false) n++;
          } catch (err) {
            n++;
            this.onError(err);
          }
        }
      } finally {
        q.splice(0, i); // what ran is gone, whatever happened
        if (q.length === 0 && this.waiting.get(ns) === q) this.waiting.delete(ns);
      }
    }
    // (a turn that started or paid anything is followed by one that clears it)
    if (this.waiting.size > 0 || this.started.size > 0) this.schedule();
  };
}

/** (most turns have nothing waiting) */
const noQueues: ReadonlyArray<readonly [string, Array<() => boolean | void>, number]> = [];

/** `m` holds nothing, or only `key`. */
function only(m: Map<string, unknown>, key: string): boolean {
  return m.size === 0 || (m.size === 1 && m.has(key));
}

/** A piece's starts: one per `TurnShare.pieceBytes`, at least one. */
function pieceCost(bytes: number): number {
  return Math.max(1, Math.ceil(bytes / TurnShare.pieceBytes));
}

/** A namespace's budgets, shared by all of its listeners. */
/**
 * Answers waiting for their clients to read (their upstream paused), per namespace. Each holds
 * the kernel's socket buffers, which no budget of the process counts: toward a client that reads
 * slowly, autotuned up to ~4 MiB, and ~1 MiB from the upstream (a red team: 100 watches read 16 KiB
 * every 2 s held ~460 MiB of the operator's pod). Past `limit`, the namespace's longest waiting is
 * cut; past `total` over all namespaces, that of the namespace holding the most.
 */
export class PausedAnswers {
  private readonly paused: NamespacedBound<object, () => void>;

  /** `limit` 0: no limit; `total`: over all namespaces (default three namespaces' worth). */
  constructor(readonly limit: number, readonly total = limit * 3) {
    this.paused = new NamespacedBound(total, limit);
  }

  /** An answer of `namespace` waits for its client; `cut` ends it if it must make room. Returns
   * what to call once it goes on (its client drained) or ends. */
  pause(namespace: string, cut: () => void): () => void {
    if (this.limit === 0) return noop;
    const entry = {}; // (one of its own: the same `cut` may pause twice)
    this.paused.set(namespace, entry, cut)?.[1]();
    return () => void this.paused.delete(namespace, entry);
  }

  /** How many of `namespace`'s answers wait. */
  waiting(namespace: string): number {
    return this.paused.keptBy(namespace);
  }
}
const noop = () => {};

/** Answers of one namespace that may wait for their clients at once (PausedAnswers), by default. */
export const maxPausedAnswersPerNamespace = 32;

export interface Budgets {
  /** Admitted connections. */
  connections: NamespaceBudget;
  /** Connections not admitted yet: as many again as admitted ones. */
  unadmitted: UnadmittedConnections;
  /** Bytes of request bodies held in memory (Service routes buffer small ones so they can be retried). */
  bodies: NamespaceBudget;
  /** Requests and pieces of long bodies started per turn of the event loop. */
  turns: TurnShare;
  /** TLS handshakes' share of the event loop, namespaces in turn. */
  handshakes: HandshakeShare;
  /** Answers waiting for slow clients (each holds kernel socket buffers). */
  paused: PausedAnswers;
  /** What a namespace's gateways keep per caller. */
  callers(namespace: string): CallerBudgets;
  /** Requests waiting for the apiserver's answer. */
  apiserver: ApiserverSlots;
}

/** A namespace's bounds on what its gateways keep per caller, each `--max-cached-callers-per-namespace`
 * and apart (a review: sharing one, the token caches took the slots the limiters' sweeps freed, and
 * a limiter left with none refused every caller; a token cached can be fetched again, a bucket lost
 * lets its caller past the limit). */
export interface CallerBudgets {
  /** Callers held in the token caches (~1 KiB each). */
  tokens: EntryBudget;
  /** Callers' rate-limit buckets (~470 B each; a red team: 16 gateways' 10,000 each, and as many
   * in replaced tables, held ~142 MiB). */
  buckets: EntryBudget;
}

export function budgetsFor(limits: { maxConnectionsPerNamespace: number; maxUnadmittedConnections?: number; bufferedBodyBytesPerNamespace: number; cachedCallersPerNamespace: number; requestsPerTurnPerNamespace: number; pausedAnswersPerNamespace?: number; tlsHandshakePercent: number; apiserverRequestsPerNamespace?: number },
  log: { error(obj: object, msg: string): void }): Budgets {
  const callers = new Map<string, CallerBudgets>(); // one small object per namespace that ever had a gateway
  return {
    connections: new NamespaceBudget(limits.maxConnectionsPerNamespace),
    unadmitted: new UnadmittedConnections(limits.maxConnectionsPerNamespace, limits.maxUnadmittedConnections ?? 0),
    bodies: new NamespaceBudget(limits.bufferedBodyBytesPerNamespace),
    turns: new TurnShare(limits.requestsPerTurnPerNamespace, (err) => log.error({ err }, 'a request failed in its turn')),
    handshakes: new HandshakeShare(limits.tlsHandshakePercent / 100, (err) => log.error({ err }, 'a TLS handshake failed to start')),
    paused: new PausedAnswers(limits.pausedAnswersPerNamespace ?? maxPausedAnswersPerNamespace),
    apiserver: new ApiserverSlots(limits.apiserverRequestsPerNamespace ?? 0),
    callers: (ns) => {
      let b = callers.get(ns);
      if (!b) callers.set(ns, (b = { tokens: new EntryBudget(limits.cachedCallersPerNamespace), buckets: new EntryBudget(limits.cachedCallersPerNamespace) }));
      return b;
    },
  };
}
