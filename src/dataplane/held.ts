// Sessions and streams outlive the request that opened them: they are asked again whether they may
// go on when the gateway's spec changes and when one of its access rules' windows opens or closes,
// and ended (saying why) when they may not.
import type { CallerIdentity } from '../auth/identity.js';
import { AgwError } from '../errors.js';
import { findRoute, routeCheck, targetOf } from './admission.js';
import { authnOf, upstreamPath, type RouteTable } from './route-table.js';

/** A session or stream admitted earlier (its caller, what it asked, the route that took it, and
 * what that route's filters checked and who it acted as: CompiledRoute.filtered and .acts). */
export interface Held { id: CallerIdentity; method: string; url: string; route: string; filtered?: string; acts?: string; authn?: string }

/**
 * Why a held session or stream may no longer go on under table `t` (spec.access, the route, its
 * filters), short enough for a WebSocket close frame; null: it may. Asked when the gateway's spec
 * changes and when a rule's window opens or closes. A Service without endpoints is not a reason
 * (the session's connection is open already); impersonation (kubectl --as) is not asked again.
 */
export function accessEnded(t: RouteTable, h: Held): string | null {
  const target = targetOf(h.url);
  if (target instanceof AgwError) return 'its path is refused'; // (it was admitted: not seen)
  if (t.policy.allowed(h.id) === null) {
    const out = t.policy.explain(h.id).outsideWindow.find((o) => o.ended);
    return out?.ended ? `spec.access[${out.index}]'s notAfter ${new Date(t.policy.rule(out.index)!.notAfter!).toISOString()} has passed`
      : 'no rule of spec.access names the caller now';
  }
  const found = findRoute(t, h.id, h.method, target.path);
  if (found instanceof AgwError) return found.status === 403 ? `spec.access no longer grants route ${h.route}` : `no route serves it now`;
  if (found.route.plan.name !== h.route) return `route ${h.route} no longer serves it`;
  if (h.acts !== undefined && found.route.acts !== h.acts) return `route ${h.route} now acts as or reaches another; open it again`;
  // its caller was authenticated as the gateway did then: not asked again, so ended
  if (h.authn !== undefined && authnOf(h.id, found.route) !== h.authn) return 'spec.authentication or the client CA changed; open it again to be authenticated';
  // filters unchanged since it was admitted: the same verdict; changed, and costly to check on the
  // event loop or the namespace's time for it used up (a spec change asks every held stream at
  // once; a stream's check may not wait for the filter thread): ended, to be opened again
  const route = found.route;
  const same = route.filtered === undefined || route.filtered === h.filtered;
  if (!same && t.filterChecks && !t.filterChecks.mayRunNow(route.filter!, upstreamPath(route, found.path))) return `route ${h.route}'s filters changed; open it again to be checked`;
  const checked = routeCheck(t, h.id, route, h.method, found.path, same ? 'skip' : 'now');
  if (checked instanceof AgwError && checked.status === 403) return `${checked.field ?? 'the route'} refuses it now`;
  return null;
}

/** Replaced route tables whose streams may stay open, per listener (`HeldAccess.swapped`): of
 * different admissions (spec changes), and in all (a Service's endpoints changing alone makes a new
 * table that shares what the one before compiled, ~100 KiB for 64 routes). */
export const maxOlderTables = 8;
export const maxOlderTablesInAll = 32;
/** Older admissions (spec changes) whose tables hold streams, over all of a namespace's listeners:
 * a table of a spec at the schema's bounds (64 rules of 64 long names) is ~1.7 MiB, and 16
 * gateways of 8 each held ~220 MiB of the heap every team shares. (A red team measured ~6 MiB a
 * replaced table with its plan, at the schema's bounds and etcd's 1.5 MB: 16 are ~95 MiB.) */
export const maxOlderTablesPerNamespace = 16;

/** A recheck goes on in a later turn once a slice has taken `ms` and checked at least `least`. */
export const recheckSlice = { ms: 5, least: 8 };

/** The listeners holding anything, by namespace (`HeldAccess.namespaceSwapped`). */
const holding = new Map<string, Set<HeldAccess>>();

function madeOf(t: RouteTable): { seq: number; epoch: number } {
  return { seq: t.seq, epoch: t.epoch };
}

/**
 * What one listener holds open, watched against its current route table; what a replaced listener
 * still holds is adopted by the one that took its place. The timer waits for the table's next
 * window boundary while anything is held (`recheck` re-arms it for a new table).
 */
export class HeldAccess {
  /** Each with how it is ended and the table that admitted it (its closures keep that table alive). */
  private readonly held = new Map<Held, { end: (why: string) => void; table: RouteTable }>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Each recheck's number: a slice of an older one stops. */
  private rechecks = 0;
  /** The streams the recheck under way asks, and how far it has come. */
  private pending: Held[] = [];
  private at = 0;

  /** Where this one's entries went (`adopt`): a release finds them there. */
  private movedTo: HeldAccess | undefined;

  constructor(private readonly current: () => RouteTable) {}

  get size(): number {
    return this.held.size;
  }

  /**
   * Watches `h` until the returned function is called; `end` ends it, with why. It is asked at
   * once (a window may have closed, or the spec changed, while it was being opened). `table`: the
   * one that admitted it.
   */
  hold(h: Held, end: (why: string) => void, table: RouteTable): () => void {
    if (this.movedTo) return this.movedTo.hold(h, end, table); // a replaced listener's late streams
    const none = () => {};
    if (this.stopped) return none; // a drained listener ends what it holds itself
    const why = accessEnded(this.current(), h);
    if (why !== null) {
      this.ended(h, why, end);
      return none;
    }
    this.held.set(h, { end, table });
    this.register();
    if (table !== this.current()) this.swapped(); // its table was replaced while it was being opened
    if (!this.timer) this.arm();
    return () => this.release(h);
  }

  /** Takes over what `from` holds (a listener replaced by this one's): checked against this one's
   * table from now on, at once. */
  adopt(from: HeldAccess): void {
    for (const [h, e] of from.held) this.held.set(h, e);
    from.held.clear();
    from.movedTo = this;
    from.stop();
    if (this.held.size) this.register();
    this.recheck();
  }

  private release(h: Held): void {
    if (!this.held.delete(h)) this.movedTo?.release(h);
    else if (!this.held.size) this.unregister();
  }

  private get namespace(): string {
    return this.current().plan.namespace;
  }

  private register(): void {
    let set = holding.get(this.namespace);
    if (!set) holding.set(this.namespace, (set = new Set()));
    set.add(this);
  }

  private unregister(): void {
    const set = holding.get(this.namespace);
    if (set?.delete(this) && !set.size) holding.delete(this.namespace);
  }

  /** Ends what the current table no longer admits, and what too many replaced tables hold (`swapped`);
   * then waits for its next window boundary. */
  recheck(): void {
    if (this.stopped) return;
    const run = ++this.rechecks;
    const begun = this.current().policy.now();
    this.swapped(); // (cheap: what too many tables hold goes at once, not after the slices)
    // what a recheck this one takes over had not checked goes first: tables that come faster
    // than a recheck ends cannot leave the last streams never asked
    const left = this.pending.slice(this.at);
    const first = new Set(left);
    this.pending = [...left, ...[...this.held.keys()].filter((h) => !first.has(h))];
    this.at = 0;
    // in slices of the event loop, others' work between: streams whose filters changed are
    // checked again on it, as their namespace's time allows (a red team's 100 watches under a
    // costly filter held the loop ~100 ms at each spec change)
    const slice = () => {
      if (this.stopped || run !== this.rechecks) return; // stopped, or a newer table asks anew
      const t = this.current();
      const start = performance.now();
      for (let done = 0; this.at < this.pending.length; done++) {
        if (done >= recheckSlice.least && performance.now() - start >= recheckSlice.ms) {
          setImmediate(slice);
          return;
        }
        const h = this.pending[this.at++]!;
        const e = this.held.get(h);
        if (!e) continue; // released meanwhile
        const why = accessEnded(t, h);
        if (why === null) continue;
        this.held.delete(h);
        this.ended(h, why, e.end);
      }
      this.pending = [];
      this.at = 0;
      if (!this.held.size) this.unregister();
      this.swapped();
      this.arm(begun); // (a boundary passed while it ran: at once)
    };
    slice();
  }

  /**
   * A stream keeps the table that admitted it (a 64-route one ~150 KiB), so a team changing its
   * spec and opening a watch after each change kept one table per watch (1,024 connections: ~190
   * MiB of the heap every team shares). Past `maxOlderTables` older admissions, or
   * `maxOlderTablesInAll` older tables, holding streams, those of the oldest are ended, to be
   * opened again under the current table.
   */
  swapped(): void {
    if (this.stopped) return;
    const now = madeOf(this.current());
    const tables = new Set<RouteTable>();
    for (const { table } of this.held.values()) tables.add(table);
    const older = [...tables].map((t) => ({ t, ...madeOf(t) })).filter((x) => x.seq !== now.seq).sort((a, b) => a.seq - b.seq);
    const olderEpochs = [...new Set(older.map((x) => x.epoch).filter((e) => e !== now.epoch))];
    const endEpochs = new Set(olderEpochs.slice(0, Math.max(0, olderEpochs.length - maxOlderTables)));
    const endTables = new Set(older.slice(0, Math.max(0, older.length - maxOlderTablesInAll)).map((x) => x.t));
    if (endEpochs.size || endTables.size) {
      for (const [h, { end, table }] of [...this.held]) {
        const spec = endEpochs.has(madeOf(table).epoch);
        if (!spec && !endTables.has(table)) continue;
        this.held.delete(h);
        this.ended(h, spec ? `the gateway's spec changed more than ${maxOlderTables} times since it was opened; open it again`
          : `the gateway changed (its Services' endpoints too) more than ${maxOlderTablesInAll} times since it was opened; open it again`, end);
      }
    }
    if (!this.held.size) this.unregister();
    // (only a listener holding an older admission adds to its namespace's count)
    if (olderEpochs.length > endEpochs.size) HeldAccess.namespaceSwapped(this.namespace);
  }

  /** The older admissions held over all of `ns`'s listeners (epochs are numbered in the process):
   * past `maxOlderTablesPerNamespace`, those of the oldest are ended. */
  private static namespaceSwapped(ns: string): void {
    const listeners = [...(holding.get(ns) ?? [])];
    const epochs = new Set<number>();
    for (const l of listeners) {
      const now = l.current().epoch;
      for (const { table } of l.held.values()) if (table.epoch !== now) epochs.add(table.epoch);
    }
    if (epochs.size <= maxOlderTablesPerNamespace) return;
    const ending = new Set([...epochs].sort((a, b) => a - b).slice(0, epochs.size - maxOlderTablesPerNamespace));
    for (const l of listeners) {
      for (const [h, { end, table }] of [...l.held]) {
        if (!ending.has(table.epoch)) continue;
        l.held.delete(h);
        l.ended(h, `this namespace's gateways changed their specs more than ${maxOlderTablesPerNamespace} times since it was opened; open it again`, end);
      }
      if (!l.held.size) l.unregister();
    }
  }

  private ended(h: Held, why: string, end: (why: string) => void): void {
    this.current().log.info({ caller: h.id.username, route: h.route, method: h.method, reason: why }, 'access ended: closing a session or stream');
    end(why);
  }

  /** No more checks (a drained listener has ended what it held; or gave it away). */
  stop(): void {
    this.stopped = true;
    this.pending = []; // (a recheck under way stops: what it was to ask is not kept)
    clearTimeout(this.timer);
    this.unregister();
  }

  /** Waits for the table's next window boundary after `from` (default now). */
  private arm(from?: number): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (!this.held.size || this.stopped) return;
    const policy = this.current().policy, now = policy.now();
    const next = policy.nextBoundary(from ?? now);
    if (next === Infinity) return;
    // (timers overflow past 2^31 ms: a far boundary is waited for in steps)
    this.timer = setTimeout(() => { this.timer = undefined; this.recheck(); }, Math.min(Math.max(0, next - now) + 5, 2 ** 31 - 1));
    this.timer.unref();
  }
}
