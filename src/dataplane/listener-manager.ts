// Applies plans as a diff: opens, updates (route table swap) and closes listeners.
import { Reason } from '../api/conditions.js';
import { equal, printPlan, type GatewayPlan } from '../translate/plan.js';
import { defaultLimits, Listener, listenerShape, type ListenerLimits } from './listener.js';
import { RouteTable, type DataplaneDeps } from './route-table.js';
import { inSteps, type Pace } from '../steps.js';
import { budgetsFor, type Budgets } from './namespace-budget.js';
import type { CertificateExpiry } from '../observability/metrics.js';

export type ApplyResult =
  /** `reloaded`: the serving certificate or client CA a listener now uses for new connections, said for an Event. */
  | { programmed: true; port: number; reloaded?: string }
  | { programmed: false; reason: string; message: string };

export class ListenerManager {
  private readonly listeners = new Map<string, Listener>();
  /** Listeners of deleted or moved gateways still draining (shutdown waits for them too). */
  private readonly draining = new Set<Promise<void>>();
  /** What each namespace holds, shared by its listeners (a replaced listener's connections count until they close). */
  private readonly budgets: Budgets;
  /** Gateways whose plan is being applied (their route table made in steps, their listener opened):
   * a retired listener of theirs that finishes draining meanwhile leaves their series. */
  private readonly applying = new Set<string>();

  constructor(private readonly deps: DataplaneDeps, private readonly host: string, private readonly closeGraceMs = 5_000,
    private readonly limits: ListenerLimits = defaultLimits) {
    this.budgets = budgetsFor(limits, deps.log);
    deps.pools.charge = (ns, n) => this.budgets.turns.chargeStarts(ns, n);
    deps.pools.handshakes = this.budgets.handshakes; // (handshakes with teams' HTTPS backends too)
    deps.metrics.servedCertificates(() => this.certificates());
    deps.metrics.servedSlots(() => this.budgets.apiserver.namespaces());
  }

  /** The certificates the open listeners serve with, for the expiry gauge. */
  private *certificates(): Iterable<CertificateExpiry> {
    // the listeners open when the scrape began (it spans turns: one replaced meanwhile would be met twice)
    for (const l of [...this.listeners.values()]) {
      const { namespace, name: gateway, tls } = l.plan;
      if (!tls) continue;
      yield { namespace, gateway, certificate: 'serving', notAfter: tls.notAfter / 1000 };
      if (tls.clientCA) yield { namespace, gateway, certificate: 'client-ca', notAfter: tls.clientCA.notAfter / 1000 };
    }
  }

  /** The listener serving `key`, if any. */
  get(key: string): Listener | undefined {
    return this.listeners.get(key);
  }

  get size(): number {
    return this.listeners.size;
  }

  /** Makes the data plane serve `plan` for `key` (or nothing, when null); with `pace`, the route
   * table is made in steps, other work running between them. */
  async apply(key: string, plan: GatewayPlan | null, pace?: Pace): Promise<ApplyResult | null> {
    const current = this.listeners.get(key);
    if (plan === null) {
      if (current) {
        this.listeners.delete(key);
        this.deps.metrics.listeners.set({ state: 'open' }, this.listeners.size);
        this.deps.metrics.forget(current.plan.namespace, current.plan.name);
        this.retire(key, current);
      }
      return null;
    }
    if (current && equal(current.plan, plan)) {
      // a resync or an unrelated event: nothing to do, and the route table keeps its caches
      return { programmed: true, port: plan.port };
    }
    if (this.deps.log.isLevelEnabled('debug')) this.deps.log.debug({ gateway: key, plan: printPlan(plan) }, 'applying plan');
    // the series of routes the plan drops go once it is served (a plan that fails leaves them served)
    const kept = new Set(plan.routes.map((r) => r.name));
    const removed = (current?.plan.routes ?? []).map((r) => r.name).filter((n) => !kept.has(n)); // (current.plan is the new one once updated)
    const dropRemoved = () => { if (removed.length) this.deps.metrics.forget(plan.namespace, plan.name, removed); };
    const updated = current && current.plan.port === plan.port && current.shape === listenerShape(plan) ? current : undefined;
    // in steps: what follows them, up to the next await, is a piece too
    let rest: number | undefined;
    const restHeld = () => {
      if (rest !== undefined) pace!.held(performance.now() - rest);
      rest = undefined;
    };
    this.applying.add(key);
    try {
      let made: RouteTable | undefined;
      if (pace) {
        const steps = () => updated ? updated.tableSteps(plan) : RouteTable.steps(plan, this.deps, undefined, this.budgets.callers(plan.namespace));
        made = await this.orDropSeries(plan, current, () => inSteps(steps, pace));
        rest = performance.now();
      }
      if (updated) {
        const reloaded = this.orDropSeries(plan, current, () => updated.update(plan, made));
        dropRemoved();
        return { programmed: true, port: plan.port, ...(reloaded ? { reloaded } : {}) };
      }
      return await this.open(key, plan, current, made, dropRemoved, restHeld);
    } finally {
      this.applying.delete(key);
      restHeld();
    }
  }

  /** A new listener for `plan` (its route table `made` already, or made here), in place of `current`. */
  private async open(key: string, plan: GatewayPlan, current: Listener | undefined, made: RouteTable | undefined,
    dropRemoved: () => void, beforeAwait: () => void): Promise<ApplyResult> {
    const next = this.orDropSeries(plan, current, () => new Listener(plan, this.deps, this.limits, this.budgets, made));
    let old = current;
    let replaced: Listener | undefined;
    if (old && old.plan.port === plan.port) {
      // Same port, TLS or client certificates switched on or off: the old listener lets go of the
      // port first (its listening socket closes at once); its connections drain in the background.
      this.listeners.delete(key);
      this.retire(key, old);
      replaced = old;
      old = undefined;
    }
    try {
      beforeAwait();
      await next.listen(plan.port, this.host);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      await next.close(0); // gives back what its route table holds (endpoint pools, its cache's budget)
      if (old) {
        this.listeners.delete(key);
        this.retire(key, old);
      }
      this.deps.metrics.listeners.set({ state: 'open' }, this.listeners.size);
      // no listener serves the gateway now: the series its route table made go too (a gateway kept
      // on a taken port while its routes are renamed would pile them up)
      this.deps.metrics.forget(plan.namespace, plan.name);
      const reason = code === 'EADDRINUSE' ? Reason.PortConflict : Reason.ListenFailed;
      return { programmed: false, reason, message: `cannot listen on ${this.host}:${plan.port}: ${(err as Error).message}` };
    }
    this.listeners.set(key, next);
    dropRemoved();
    this.deps.metrics.listeners.set({ state: 'open' }, this.listeners.size);
    this.deps.log.info({ gateway: key, port: plan.port, tls: plan.tls !== null }, 'listener open');
    if (old) this.retire(key, old);
    // what is still open on the listener it replaced follows the new one's rules (and changes)
    (old ?? replaced)?.handOver(next);
    return { programmed: true, port: plan.port };
  }

  /** Makes a route table; one that cannot be made drops the series its routes made (but those
   * the current listener still serves), and the error goes on. */
  private orDropSeries<T>(plan: GatewayPlan, current: Listener | undefined, make: () => T): T {
    const drop = (err: unknown): never => {
      if (!current) this.deps.metrics.forget(plan.namespace, plan.name);
      else {
        const served = new Set(current.plan.routes.map((r) => r.name));
        this.deps.metrics.forget(plan.namespace, plan.name, plan.routes.map((r) => r.name).filter((n) => !served.has(n)));
      }
      throw err;
    };
    try {
      const made = make();
      return (made instanceof Promise ? made.catch(drop) : made) as T;
    } catch (err) {
      return drop(err);
    }
  }

  /**
   * Closes a listener that no longer serves its gateway: its port is free at once, and open
   * requests drain in the background. The reconcile does not wait for them (a team's open watches
   * would hold a controller worker every other team shares), shutdown does. Once drained, a
   * gateway no listener serves (deleted, meanwhile too) loses the series its draining requests made.
   */
  private retire(key: string, old: Listener): void {
    const closed = old.close(this.closeGraceMs).then(() => {
      this.draining.delete(closed);
      if (!this.listeners.has(key) && !this.applying.has(key)) this.deps.metrics.forget(old.plan.namespace, old.plan.name);
      this.deps.log.info({ gateway: key, port: old.plan.port }, 'listener closed');
    });
    this.draining.add(closed);
  }

  async closeAll(graceMs: number): Promise<void> {
    const all = [...this.listeners.values()];
    this.listeners.clear();
    await Promise.all([...all.map((l) => l.close(graceMs)), ...this.draining]);
  }
}
