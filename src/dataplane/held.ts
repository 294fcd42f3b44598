// Sessions and streams outlive the request that opened them: they are asked again whether they may
// go on when the gateway's spec changes and when one of its access rules' windows opens or closes,
// and ended (saying why) when they may not.
import type { CallerIdentity } from '../auth/identity.js';
import { AgwError } from '../errors.js';
import { findRoute, routeCheck, targetOf } from './admission.js';
import type { RouteTable } from './route-table.js';

/** A session or stream admitted earlier (its caller, what it asked, the route that took it). */
export interface Held { id: CallerIdentity; method: string; url: string; route: string }

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
    const out = t.policy.explain(h.id).outsideWindow[0];
    return out?.ended ? `spec.access[${out.index}]'s notAfter ${new Date(t.policy.rule(out.index)!.notAfter!).toISOString()} has passed`
      : 'no rule of spec.access names the caller now';
  }
  const found = findRoute(t, h.id, h.method, target.path);
  if (found instanceof AgwError) return found.status === 403 ? `spec.access no longer grants route ${h.route}` : `no route serves it now`;
  if (found.route.plan.name !== h.route) return `route ${h.route} no longer serves it`;
  const checked = routeCheck(t, h.id, found.route, h.method, found.path);
  if (checked instanceof AgwError && checked.status === 403) return `${checked.field ?? 'the route'} refuses it now`;
  return null;
}

/** What one listener holds open, watched against its current route table (`current`). */
export class HeldAccess {
  private readonly held = new Map<Held, (why: string) => void>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly current: () => RouteTable) {}

  get size(): number {
    return this.held.size;
  }

  /** Watches `h`, admitted by table `t`, until the returned function is called; `end` ends it, with why. */
  hold(t: RouteTable, h: Held, end: (why: string) => void): () => void {
    this.held.set(h, end);
    if (t !== this.current()) this.recheck(); // the spec changed while it was being opened
    else if (!this.timer) this.arm();
    return () => this.held.delete(h);
  }

  /** Ends what the current table no longer admits; then waits for its next window boundary. */
  recheck(): void {
    const t = this.current();
    for (const [h, end] of this.held) {
      const why = accessEnded(t, h);
      if (why === null) continue;
      this.held.delete(h);
      t.log.info({ caller: h.id.username, route: h.route, method: h.method, reason: why }, 'access ended: closing a session or stream');
      end(why);
    }
    this.arm();
  }

  /** No more checks (a listener that drains ends what it holds itself). */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private arm(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (!this.held.size || this.stopped) return;
    const policy = this.current().policy, now = policy.now();
    const next = policy.nextBoundary(now);
    if (next === Infinity) return;
    // (timers overflow past 2^31 ms: a far boundary is waited for in steps)
    this.timer = setTimeout(() => { this.timer = undefined; this.recheck(); }, Math.min(next - now + 5, 2 ** 31 - 1));
    this.timer.unref();
  }
}
