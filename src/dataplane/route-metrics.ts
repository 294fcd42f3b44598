// Metric series bound once per gateway and route when a plan is applied: the request path only
// bumps numbers (no label values built, no hashing). What dashboards and alerts read exists at zero
// before the first request, so rate() counts the first requests and histogram_quantile is never
// NaN for want of a first sample: responses_total for 2xx, 4xx and 5xx on every route (and route
// ""), request_duration_seconds for 2xx on every named route. requests_total (per method too) and
// the other status classes' series are made on first use.
import { codeClass, methodLabel, type Metrics } from '../observability/metrics.js';
import { CounterChild, GaugeChild, HistogramChild, type Family, type Liveness } from '../observability/fast-metrics.js';

/** The child for these labels, or a detached one once the series were forgotten (a gateway or
 * route that is gone: what still holds it must not bring its series back). */
function child<C>(live: Liveness, f: Family<C>, ...values: string[]): C {
  return live.live ? f.labels(...values) : f.detached();
}

/** Which bound closed a client connection (access_gateway_connections_refused_total's `limit`). */
export type ConnectionLimit = 'listener' | 'namespace' | 'unadmitted' | 'pipelined' | 'handshake';

/** Status classes whose responses_total series exist at zero from the plan on. */
export const PRECREATED_CODES = ['2xx', '4xx', '5xx'] as const;

export class GatewayMetrics {
  readonly inFlight: GaugeChild;
  readonly connections: GaugeChild;
  readonly bytesIn: CounterChild;
  readonly bytesOut: CounterChild;
  readonly auth: Record<'allowed' | 'unauthenticated' | 'unavailable', CounterChild>;
  readonly denied: Record<'access' | 'route' | 'filter' | 'impersonate' | 'path', CounterChild>;
  readonly rateLimited: CounterChild;
  private refused: CounterChild | undefined;
  private deferred: CounterChild | undefined;
  private apiserverWaits: CounterChild | undefined;
  private piecesDeferred: CounterChild | undefined;
  private handshakesDeferred: CounterChild | undefined;
  private readonly connectionsRefused: Partial<Record<ConnectionLimit, CounterChild>> = {};
  private readonly live: Liveness;

  constructor(private readonly m: Metrics, private readonly ns: string, private readonly gw: string) {
    this.live = m.liveness(ns, gw, null);
    this.inFlight = m.inFlight.labels(ns, gw);
    this.connections = m.connections.labels(ns, gw);
    this.bytesIn = m.bytesIn.labels(ns, gw);
    this.bytesOut = m.bytesOut.labels(ns, gw);
    const a = (r: string) => m.authentications.labels(ns, gw, r);
    this.auth = { allowed: a('allowed'), unauthenticated: a('unauthenticated'), unavailable: a('unavailable') };
    const d = (r: string) => m.authorizations.labels(ns, gw, r);
    this.denied = { access: d('access'), route: d('route'), filter: d('filter'), impersonate: d('impersonate'), path: d('path') };
    this.rateLimited = m.rateLimited.labels(ns, gw);
  }

  /** An upgrade refused over spec.sessions.maxConcurrent (the series is made on first use). */
  sessionRefused(): void {
    (this.refused ??= child(this.live, this.m.sessionsRefused, this.ns, this.gw)).inc();
  }

  /** A request that waits for a later turn of the event loop (the series is made on first use). */
  requestDeferred(): void {
    (this.deferred ??= child(this.live, this.m.requestsDeferred, this.ns, this.gw)).inc();
  }

  /** A request to the apiserver that waits for its namespace's slot (the series is made on first use). */
  apiserverWaited(): void {
    (this.apiserverWaits ??= child(this.live, this.m.apiserverWaits, this.ns, this.gw)).inc();
  }

  /** A piece of a long answer that waits for a later turn (the series is made on first use). */
  pieceDeferred(): void {
    (this.piecesDeferred ??= child(this.live, this.m.piecesDeferred, this.ns, this.gw)).inc();
  }

  /** A TLS handshake that waits for its namespace's turn (the series is made on first use). */
  handshakeDeferred(): void {
    (this.handshakesDeferred ??= child(this.live, this.m.handshakesDeferred, this.ns, this.gw)).inc();
  }

  /** A connection refused at accept, over the listener's or the namespace's limit (made on first use). */
  connectionRefused(limit: ConnectionLimit): void {
    (this.connectionsRefused[limit] ??= child(this.live, this.m.connectionsRefused, this.ns, this.gw, limit)).inc();
  }
}

/**
 * A route's series. Requests that matched no route (route "") are counted the same way, but get
 * upstream series of their own that no registry exports: there is no upstream to describe, and one
 * class keeps the request path's call sites monomorphic.
 */
export class RouteMetrics {
  /** requests_total by method, then status class; responses_total and request_duration_seconds by status class. */
  private readonly requests = new Map<string, Record<string, CounterChild>>();
  private readonly responses: Record<string, CounterChild> = {};
  private readonly durations: Record<string, HistogramChild> = {};
  readonly upstream: HistogramChild;
  readonly upgraded: GaugeChild;
  readonly errors: Record<'connect' | 'timeout' | 'reset', CounterChild>;
  readonly ejections: CounterChild;
  private sessionDuration: HistogramChild | undefined;
  private readonly sessionEnds: Record<string, CounterChild> = {};
  private readonly live: Liveness;

  constructor(private readonly m: Metrics, private readonly ns: string, private readonly gw: string, private readonly route: string) {
    this.live = m.liveness(ns, gw, route);
    for (const code of PRECREATED_CODES) this.responses[code] = m.responses.labels(ns, gw, route, code);
    if (route === '') {
      this.upstream = new HistogramChild([]);
      this.upgraded = new GaugeChild();
      this.errors = { connect: new CounterChild(), timeout: new CounterChild(), reset: new CounterChild() };
      this.ejections = new CounterChild();
      return;
    }
    this.durations['2xx'] = m.requestDuration.labels(ns, gw, route, '2xx');
    this.upstream = m.upstreamDuration.labels(ns, gw, route);
    this.upgraded = m.upgraded.labels(ns, gw, route);
    const e = (k: string) => m.upstreamErrors.labels(ns, gw, route, k);
    this.errors = { connect: e('connect'), timeout: e('timeout'), reset: e('reset') };
    this.ejections = m.ejections.labels(ns, gw, route);
  }

  /** One ended session (the series are made on first use: sessions are rare, gateways many). */
  sessionEnded(reason: string, seconds: number): void {
    (this.sessionDuration ??= child(this.live, this.m.sessionDuration, this.ns, this.gw, this.route)).observe(seconds);
    (this.sessionEnds[reason] ??= child(this.live, this.m.sessionsEnded, this.ns, this.gw, this.route, reason)).inc();
  }

  /** One finished request. */
  done(method: string | undefined, status: number, seconds: number): void {
    const code = codeClass(status);
    let byClass = this.requests.get(method ?? '');
    if (!byClass) this.requests.set(method ?? '', (byClass = {}));
    (byClass[code] ??= child(this.live, this.m.requests, this.ns, this.gw, this.route, methodLabel(method), code)).inc();
    (this.responses[code] ??= child(this.live, this.m.responses, this.ns, this.gw, this.route, code)).inc();
    (this.durations[code] ??= child(this.live, this.m.requestDuration, this.ns, this.gw, this.route, code)).observe(seconds);
  }
}
