// Prometheus metrics (prefix access_gateway_, base units, bounded labels: gateway namespace and
// name, route, method, status class, fixed result/kind enums — never a path, user, token or
// address). See docs/metrics.md.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { FastCounter, FastGauge, FastGaugeReader, FastHistogram, FastRegistry } from './fast-metrics.js';
import { droppedLogLines, shedLogLines } from './logger.js';

const latencyBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const knownMethods = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'CONNECT', 'TRACE']);

/** A method as a bounded label value. */
export function methodLabel(m: string | undefined): string {
  return m && knownMethods.has(m) ? m : 'OTHER';
}

const classNames = ['0xx', '1xx', '2xx', '3xx', '4xx', '5xx'];

/** A status code as a bounded label value: 2xx, 4xx, … (no string built per call). */
export function codeClass(status: number): string {
  return status >= 100 && status < 600 ? classNames[(status / 100) | 0]! : 'other';
}

/** `maxSeriesPerNamespace`: --max-metric-series-per-namespace (0: no bound; see FastRegistry). */
export function createMetrics(registry = new Registry(), opts: { maxSeriesPerNamespace?: number; now?: () => number } = {}) {
  collectDefaultMetrics({ register: registry, prefix: 'access_gateway_' });
  let certificates: () => Iterable<CertificateExpiry> = () => [];
  let slots: () => Iterable<{ namespace: string; held: number; waiting: number }> = () => [];
  const r = [registry];
  const gw = ['namespace', 'gateway'] as const;
  const route = ['namespace', 'gateway', 'route'] as const;
  const fast = new FastRegistry({ maxPerNamespace: opts.maxSeriesPerNamespace ?? 0, now: opts.now });
  return {
    registry,
    contentType: registry.contentType,
    /** The text exposition of every metric: prom-client's (process, controller) whole, then the data plane's chunks as they render. */
    exposition: async (): Promise<Exposition> => ({ head: await registry.metrics(), chunks: fast.stream() }),
    /** Drops the data-plane series of a deleted gateway (namespace, name) or of routes (…, routes). */
    forget: (namespace: string, gateway: string, routes?: readonly string[]) => fast.forget(namespace, gateway, routes),
    /** Whether a gateway's (route null) or route's series are still exported (see FastRegistry). */
    liveness: (namespace: string, gateway: string, route: string | null) => fast.liveness(namespace, gateway, route),
    // data plane
    requests: new FastCounter(fast, { name: 'access_gateway_requests_total', help: 'Requests answered, by gateway, route, method and status class.', labelNames: [...route, 'method', 'code'] }),
    responses: new FastCounter(fast, { name: 'access_gateway_responses_total', help: 'Requests answered, by gateway, route and status class; the 2xx, 4xx and 5xx series exist from the plan on, so rate() counts the first requests.', labelNames: [...route, 'code'] }),
    requestDuration: new FastHistogram(fast, { name: 'access_gateway_request_duration_seconds', help: 'Time from request to response end (upgraded connections excluded).', labelNames: [...route, 'code'], buckets: latencyBuckets }),
    upstreamDuration: new FastHistogram(fast, { name: 'access_gateway_upstream_duration_seconds', help: 'Time from sending upstream to the upstream response headers.', labelNames: [...route], buckets: latencyBuckets }),
    inFlight: new FastGauge(fast, { name: 'access_gateway_requests_in_flight', help: 'Requests being served.', labelNames: [...gw] }),
    upgraded: new FastGauge(fast, { name: 'access_gateway_upgraded_connections', help: 'Open interactive sessions: upgraded connections (exec, attach, port-forward, WebSocket; SPDY or WebSocket).', labelNames: [...route] }),
    sessionDuration: new FastHistogram(fast, { name: 'access_gateway_session_duration_seconds', help: 'Interactive sessions (upgraded connections) that ended, by how long they lasted.', labelNames: [...route], buckets: [1, 10, 60, 300, 900, 3600, 14400] }),
    sessionsEnded: new FastCounter(fast, { name: 'access_gateway_sessions_ended_total', help: 'Interactive sessions that ended, by reason: closed (by either side), idle (spec.sessions.idleTimeoutSeconds), shutdown (the listener drained), revoked (spec.access or the route no longer admits it).', labelNames: [...route, 'reason'] }),
    sessionsRefused: new FastCounter(fast, { name: 'access_gateway_sessions_refused_total', help: 'Upgrades refused with 429 because spec.sessions.maxConcurrent sessions were open.', labelNames: [...gw] }),
    connections: new FastGauge(fast, { name: 'access_gateway_open_connections', help: 'Open client connections (upgraded ones included), counted against --max-connections-per-namespace.', labelNames: [...gw] }),
    connectionsRefused: new FastCounter(fast, { name: 'access_gateway_connections_refused_total', help: 'Client connections refused, by the limit they were over: listener (--max-connections-per-listener; closed at accept) or namespace (--max-connections-per-namespace, admitted connections of all of the namespace\'s listeners; answered 503 and closed), or unadmitted (a connection of the namespace not admitted yet, closed to make room for a new one: as many again as --max-connections-per-namespace), or pipelined (more than 16 requests open at once on one connection).', labelNames: [...gw, 'limit'] }),
    requestsDeferred: new FastCounter(fast, { name: 'access_gateway_requests_deferred_total', help: 'Requests that waited for a later turn of the event loop before being served (refused ones too, on connections admitted before): their namespace had started its share of this one (--requests-per-turn-per-namespace, or fewer beside a namespace with few callers).', labelNames: [...gw] }),
    apiserverWaits: new FastCounter(fast, { name: 'access_gateway_apiserver_requests_waited_total', help: 'Requests to the apiserver that waited for a slot of their namespace: --max-apiserver-requests-per-namespace of its requests were waiting for the apiserver\'s answer.', labelNames: [...gw] }),
    piecesDeferred: new FastCounter(fast, { name: 'access_gateway_body_pieces_deferred_total', help: 'Pieces of long answers (downloads, watches) and of request bodies larger than 64 KiB (uploads, streamed or buffered), each after the first of its body, and of interactive sessions (every piece, each way), that waited for a later turn of the event loop: their namespace had started its share of this one (they take turns as requests do, a start per 16 KiB).', labelNames: [...gw] }),
    handshakesDeferred: new FastCounter(fast, { name: 'access_gateway_tls_handshakes_deferred_total', help: 'TLS handshakes that waited before starting: handshakes had taken --tls-handshake-percent of the event loop, and waiting ones start with their namespaces in turn.', labelNames: [...gw] }),
    bytesIn: new FastCounter(fast, { name: 'access_gateway_request_bytes_total', help: 'Bytes received from clients (headers and bodies).', labelNames: [...gw] }),
    bytesOut: new FastCounter(fast, { name: 'access_gateway_response_bytes_total', help: 'Bytes sent to clients (headers and bodies).', labelNames: [...gw] }),
    authentications: new FastCounter(fast, { name: 'access_gateway_authentications_total', help: 'Authentication decisions: result allowed, unauthenticated (401), unavailable (503).', labelNames: [...gw, 'result'] }),
    authorizations: new FastCounter(fast, { name: 'access_gateway_authorization_denials_total', help: 'Requests refused after authentication, by reason: access (spec.access), route (route not granted), filter (path or method filters), impersonate (the caller may not impersonate what it asked to), path (non-canonical).', labelNames: [...gw, 'reason'] }),
    tokenCache: new FastCounter(fast, { name: 'access_gateway_token_cache_requests_total', help: 'Token cache lookups: hit or miss.', labelNames: [...gw, 'result'] }),
    tokenReviews: new Counter({ name: 'access_gateway_token_reviews_total', help: 'TokenReview calls to the apiserver, by result (authenticated, rejected, error).', labelNames: ['result'], registers: r }),
    tokenReviewsInFlight: new Gauge({ name: 'access_gateway_token_reviews_in_flight', help: 'TokenReview calls in flight (bounded by --max-token-reviews-in-flight).', registers: r }),
    tokenReviewRefusals: new Counter({ name: 'access_gateway_token_review_limiter_refusals_total', help: 'Callers refused 503 by the TokenReview limiter, by gateway namespace and reason (queue_full, source_full: one client address held an eighth of the namespace\'s queue, timeout).', labelNames: ['namespace', 'reason'], registers: r }),
    upstreamPoolsRecycled: new Counter({ name: 'access_gateway_upstream_pools_recycled_total', help: 'Service endpoint pools recycled (their idle connections closed) because the namespace\'s pools held more upstream connections than --max-connections-per-namespace, by gateway namespace.', labelNames: ['namespace'], registers: r }),
    reviewRenewalsPostponed: new Counter({ name: 'access_gateway_review_renewals_postponed_total', help: 'Attempts at a background renewal of a cached answer not sent because its limiter had no slot free, callers waiting, or its per-second rate spent, by gateway namespace and review (TokenReview, or SubjectAccessReview for kubectl --as); the first request at least 250 ms later tries again while the cached answer serves.', labelNames: ['namespace', 'review'], registers: r }),
    tokenReviewDuration: new Histogram({ name: 'access_gateway_token_review_duration_seconds', help: 'TokenReview call latency.', buckets: latencyBuckets, registers: r }),
    impersonationReviewsInFlight: new Gauge({ name: 'access_gateway_impersonation_reviews_in_flight', help: 'SubjectAccessReview calls checking callers\' own Impersonate-* headers (kubectl --as) in flight (bounded by --max-token-reviews-in-flight, a limit of their own).', registers: r }),
    impersonationReviews: new Counter({ name: 'access_gateway_impersonation_reviews_total', help: 'SubjectAccessReview calls checking a caller\'s own Impersonate-* headers (kubectl --as), and those answering can-i questions, by result (allowed, denied, error; refused: an impersonation check not sent, too many waiting for this namespace\'s gateways; can-i questions have a queue of their own, whose refusals are not counted here).', labelNames: ['result'], registers: r }),
    jwksRefreshes: new Counter({ name: 'access_gateway_jwks_refreshes_total', help: 'JWKS key set refresh attempts.', registers: r }),
    filterThreadChecks: new Counter({ name: 'access_gateway_filter_thread_checks_total', help: 'Path-filter checks (acceptPaths, rejectPaths, rejectMethods) run on the filter thread instead of the event loop, by gateway namespace and why: cost (the route\'s patterns times the path\'s length are over what one check may take on the event loop) or budget (the namespace had used its event-loop time for filters).', labelNames: ['namespace', 'why'], registers: r }),
    filterRefusals: new Counter({ name: 'access_gateway_filter_thread_refusals_total', help: 'Requests refused while waiting for the filter thread, by gateway namespace and reason: busy (429: 64 of the namespace\'s checks were waiting, or one waited 10 s for the namespace\'s time on the slow lane), failed (503: the thread failed or stopped, or the check ran over 250 ms and was stopped), backoff (503: a check of the namespace ran over 250 ms lately; Retry-After).', labelNames: ['namespace', 'reason'], registers: r }),
    rateLimited: new FastCounter(fast, { name: 'access_gateway_rate_limited_total', help: 'Requests refused with 429.', labelNames: [...gw] }),
    upstreamErrors: new FastCounter(fast, { name: 'access_gateway_upstream_errors_total', help: 'Upstream failures by kind: connect, timeout, reset.', labelNames: [...route, 'kind'] }),
    ejections: new FastCounter(fast, { name: 'access_gateway_endpoint_ejections_total', help: 'Endpoints taken out of rotation after refusing connections.', labelNames: [...route] }),
    // operator
    reconciles: new Counter({ name: 'access_gateway_reconcile_total', help: 'Reconciles by result: success, error, requeue.', labelNames: ['result'], registers: r }),
    reconcileDuration: new Histogram({ name: 'access_gateway_reconcile_duration_seconds', help: 'Reconcile duration.', buckets: latencyBuckets, registers: r }),
    queueDepth: new Gauge({ name: 'access_gateway_workqueue_depth', help: 'Keys waiting in the work queue.', registers: r }),
    queueAdds: new Counter({ name: 'access_gateway_workqueue_adds_total', help: 'Keys added to the work queue.', registers: r }),
    queueRetries: new Counter({ name: 'access_gateway_workqueue_retries_total', help: 'Rate-limited re-adds after a failed reconcile.', registers: r }),
    queueDuration: new Histogram({ name: 'access_gateway_workqueue_queue_duration_seconds', help: 'Time a key waited in the queue.', buckets: latencyBuckets, registers: r }),
    workDuration: new Histogram({ name: 'access_gateway_workqueue_work_duration_seconds', help: 'Time spent processing a key.', buckets: latencyBuckets, registers: r }),
    listeners: new Gauge({ name: 'access_gateway_listeners', help: 'Listeners by state: open.', labelNames: ['state'], registers: r }),
    informerRestarts: new Counter({ name: 'access_gateway_informer_restarts_total', help: 'Watch restarts after errors, by informer.', labelNames: ['informer'], registers: r }),
    informerLastSync: new Gauge({ name: 'access_gateway_informer_last_sync_timestamp_seconds', help: 'When the informer last listed, received a watch event, or had a watch end cleanly at its timeout (Unix time).', labelNames: ['informer'], registers: r }),
    logLinesDropped: new Counter({ name: 'access_gateway_log_lines_dropped_total', help: 'Log lines (access lines and the others) dropped because 16 MiB of lines waited to be written to stdout: whatever reads the operator\'s log stopped reading.', registers: r,
      collect() { this.reset(); this.inc(droppedLogLines()); } }),
    logLinesShed: new Counter({ name: 'access_gateway_log_lines_shed_total', help: 'Log lines of a namespace\'s gateways\' requests (access lines, upstream failures, WebSocket sessions) not written, because over 4 MiB of log lines waited for stdout and their share (the namespace\'s, or its refused requests\') had written more of them lately (counts halved each second; a line counts one more per 128 characters of its caller, as and error) than the mean of the shares writing (one team\'s flood is shed first, so the others\' lines still fit before the 16 MiB past which every line is dropped). kind: refused for the access lines of requests no access rule admitted (401, or 403 before a route was chosen; a share of their own, so a flood of them does not shed the team\'s other lines), admitted for the rest.', labelNames: ['namespace', 'kind'], registers: r,
      collect() { this.reset(); for (const s of shedLogLines()) this.inc({ namespace: s.namespace, kind: s.kind }, s.lines); } }),
    certificateExpiry: new FastGaugeReader(fast, { name: 'access_gateway_certificate_expiry_timestamp_seconds', help: 'When a certificate a listener serves with expires (Unix time): certificate serving (the leaf of spec.listener.tls.secretName) or client-ca (the first of spec.listener.tls.clientCA\'s certificates to expire). Read from the listeners open at the scrape.', labelNames: [...gw, 'certificate'] },
      function* () { for (const c of certificates()) yield { values: [c.namespace, c.gateway, c.certificate], value: c.notAfter }; }),
    /** Where the certificate expiry gauge reads, at each scrape, what is served. */
    servedCertificates: (read: () => Iterable<CertificateExpiry>) => { certificates = read; },
    apiserverSlots: new Gauge({ name: 'access_gateway_apiserver_requests', help: 'Requests of a namespace\'s gateways to the apiserver under --max-apiserver-requests-per-namespace, by state: held (waiting for the apiserver\'s answer, in one of the namespace\'s slots) or waiting (for a slot, in the gateway). Read at the scrape; only namespaces with either.', labelNames: ['namespace', 'state'], registers: r,
      collect() { this.reset(); for (const x of slots()) { this.set({ namespace: x.namespace, state: 'held' }, x.held); this.set({ namespace: x.namespace, state: 'waiting' }, x.waiting); } } }),
    /** Where the apiserver-slots gauge reads, at each scrape. */
    servedSlots: (read: () => Iterable<{ namespace: string; held: number; waiting: number }>) => { slots = read; },
    namespaceSeries: new Gauge({ name: 'access_gateway_namespace_metric_series', help: 'Data-plane series (exposition lines) of a namespace\'s gateways, and those dropped within the last hour: what --max-metric-series-per-namespace bounds (past it, new series go to their gateway\'s overflow series, every label past namespace and gateway "(overflow)"; past it and 1,200 more, a new gateway\'s to the namespace\'s overflow gateway, gateway "(overflow)").', labelNames: ['namespace'], registers: r,
      collect() { this.reset(); for (const { namespace, series } of fast.namespaces()) this.set({ namespace }, series); } }),
    leader: new Gauge({ name: 'access_gateway_leader', help: '1 when this replica holds the leader Lease.', registers: r }),
    // admin port: who may read /metrics (--metrics-auth kubernetes)
    adminAuth: zeroed(new Counter({ name: 'access_gateway_admin_auth_decisions_total', help: 'Admin-port /metrics requests by decision: allowed, unauthenticated (401), forbidden (403), unavailable (503: apiserver did not answer), overloaded (503: too many reviews waiting).', labelNames: ['result'], registers: r }),
      adminAuthResults.map((result) => ({ result }))),
    adminAuthCache: zeroed(new Counter({ name: 'access_gateway_admin_auth_cache_requests_total', help: 'Admin-port decision cache lookups: hit or miss.', labelNames: ['result'], registers: r }),
      [{ result: 'hit' }, { result: 'miss' }]),
    adminAuthReviews: zeroed(new Counter({ name: 'access_gateway_admin_auth_reviews_total', help: 'TokenReview and SubjectAccessReview calls for the admin port, by review and result (allowed, denied, error).', labelNames: ['review', 'result'], registers: r }),
      adminReviews.flatMap((review) => ['allowed', 'denied', 'error'].map((result) => ({ review, result })))),
    adminAuthReviewDuration: zeroedHistogram(new Histogram({ name: 'access_gateway_admin_auth_review_duration_seconds', help: 'Admin-port TokenReview and SubjectAccessReview call latency.', labelNames: ['review'], buckets: latencyBuckets, registers: r }),
      adminReviews.map((review) => ({ review }))),
  };
}

const adminAuthResults = ['allowed', 'unauthenticated', 'forbidden', 'unavailable', 'overloaded'];
const adminReviews = ['TokenReview', 'SubjectAccessReview'];

/** A counter with every given label combination created at zero (a series born with its first value loses it to rate()). */
function zeroed<T extends string>(c: Counter<T>, combos: Partial<Record<T, string>>[]): Counter<T> {
  for (const l of combos) c.inc(l, 0);
  return c;
}

function zeroedHistogram<T extends string>(h: Histogram<T>, combos: Partial<Record<T, string>>[]): Histogram<T> {
  for (const l of combos) h.zero(l);
  return h;
}

export type Metrics = ReturnType<typeof createMetrics>;
export interface CertificateExpiry { namespace: string; gateway: string; certificate: 'serving' | 'client-ca'; notAfter: number }
export interface Exposition { head: string; chunks: Iterable<Buffer> }

/** A registry with no-op use, for library callers and unit tests. */
export function testMetrics(): Metrics {
  return createMetrics(new Registry());
}
