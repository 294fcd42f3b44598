// Metric series bound once per gateway and route when a plan is applied: the request path only
// increments children it already holds (label values are never built per request).
import type { Counter, Gauge, Histogram } from 'prom-client';
import { codeClass, methodLabel, type Metrics } from '../observability/metrics.js';

type C = Counter.Internal;
type H = Histogram.Internal<string>;
type G = Gauge.Internal<string>;

export class GatewayMetrics {
  readonly inFlight: G;
  readonly bytesIn: C;
  readonly bytesOut: C;
  readonly auth: Record<'allowed' | 'unauthenticated' | 'unavailable', C>;
  readonly denied: Record<'access' | 'route' | 'filter' | 'path', C>;
  readonly rateLimited: C;

  constructor(m: Metrics, ns: string, gw: string) {
    this.inFlight = m.inFlight.labels(ns, gw);
    this.bytesIn = m.bytesIn.labels(ns, gw);
    this.bytesOut = m.bytesOut.labels(ns, gw);
    const a = (r: string) => m.authentications.labels(ns, gw, r);
    this.auth = { allowed: a('allowed'), unauthenticated: a('unauthenticated'), unavailable: a('unavailable') };
    const d = (r: string) => m.authorizations.labels(ns, gw, r);
    this.denied = { access: d('access'), route: d('route'), filter: d('filter'), path: d('path') };
    this.rateLimited = m.rateLimited.labels(ns, gw);
  }
}

export class RouteMetrics {
  private readonly requests = new Map<string, C>();
  private readonly durations = new Map<string, H>();
  readonly upstream: H;
  readonly upgraded: G;
  readonly errors: Record<'connect' | 'timeout' | 'reset', C>;
  readonly ejections: C;

  constructor(private readonly m: Metrics, private readonly ns: string, private readonly gw: string, private readonly route: string) {
    this.upstream = m.upstreamDuration.labels(ns, gw, route);
    this.upgraded = m.upgraded.labels(ns, gw, route);
    const e = (k: string) => m.upstreamErrors.labels(ns, gw, route, k);
    this.errors = { connect: e('connect'), timeout: e('timeout'), reset: e('reset') };
    this.ejections = m.ejections.labels(ns, gw, route);
  }

  /** One finished request: a handful of bounded children, created on first use. */
  done(method: string | undefined, status: number, seconds: number): void {
    const code = codeClass(status);
    const mk = `${methodLabel(method)} ${code}`;
    let c = this.requests.get(mk);
    if (!c) this.requests.set(mk, (c = this.m.requests.labels(this.ns, this.gw, this.route, methodLabel(method), code)));
    c.inc();
    let h = this.durations.get(code);
    if (!h) this.durations.set(code, (h = this.m.requestDuration.labels(this.ns, this.gw, this.route, code)));
    h.observe(seconds);
  }
}
