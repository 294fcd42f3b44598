// Generated from deploy/crds/access-gateway.io_accessgateways.yaml by scripts/gen-types.ts.
// Do not edit: change the CRD, then run `npm run gen`.

export interface ObjectMeta {
  name: string;
  namespace: string;
  uid?: string;
  generation?: number;
  resourceVersion?: string;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  [key: string]: unknown;
}

/**
 * AccessGateway gives a team its own authenticated, policy-checked proxy to the Kubernetes apiserver and to in-cluster Services. Workloads call the gateway's listener with an audience-bound projected service-account token; the gateway authenticates the token, checks the access rules, and forwards the request along the first matching route.
 */
export interface AccessGateway {
  /**
   * APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values.
   */
  apiVersion?: string;
  /**
   * Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. In CamelCase.
   */
  kind?: string;
  metadata: ObjectMeta;
  /**
   * Desired state of the gateway (its listener, how callers authenticate, who may call it, and where requests go).
   */
  spec: AccessGatewaySpec;
  /**
   * Observed state of the gateway, written by the operator's leader.
   */
  status?: AccessGatewayStatus;
}

/**
 * Observed state of the gateway, written by the operator's leader.
 */
export interface AccessGatewayStatus {
  /**
   * The metadata.generation of the spec this status describes.
   */
  observedGeneration?: number;
  /**
   * The listener actually serving this gateway.
   */
  listener?: ListenerStatus;
  /**
   * Per-route state.
   */
  routes?: RouteStatus[];
  /**
   * The access rules whose notAfter has passed: they no longer match. Delete them from spec.access or move notAfter.
   */
  expiredAccessRules?: AccessGatewayStatusExpiredAccessRules[];
  /**
   * Conditions, Gateway API style: Accepted (spec valid, port free), ResolvedRefs (Services and Secrets found), Programmed (listener serving this generation) and Ready (the summary kubectl wait --for=condition=Ready waits on). Reasons for False include PortConflict, InvalidRegex, BackendNotFound, NoReadyEndpoints, InvalidCertificateRef and RefNotPermitted.
   */
  conditions?: Condition[];
}

/**
 * A metav1.Condition.
 */
export interface Condition {
  /**
   * Type of the condition, in CamelCase, for example Ready.
   */
  type: string;
  /**
   * Status of the condition, one of True, False, Unknown.
   */
  status: "True" | "False" | "Unknown";
  /**
   * The metadata.generation the condition was set for.
   */
  observedGeneration?: number;
  /**
   * When the condition last changed status.
   */
  lastTransitionTime: string;
  /**
   * Programmatic identifier of the last transition, in CamelCase.
   */
  reason: string;
  /**
   * Human-readable details of the last transition.
   */
  message: string;
}

/**
 * One expired access rule.
 */
export interface AccessGatewayStatusExpiredAccessRules {
  /**
   * Its position in spec.access (from 0).
   */
  index: number;
  /**
   * When it expired.
   */
  notAfter: string;
}

/**
 * State of one route.
 */
export interface RouteStatus {
  /**
   * Name of the route.
   */
  name: string;
  /**
   * Ready upstream endpoints of a service route (unset for apiserver routes).
   */
  endpoints?: number;
}

/**
 * The listener actually serving this gateway.
 */
export interface ListenerStatus {
  /**
   * Port the gateway pods listen on, from spec.listener.port or allocated.
   */
  port?: number;
  /**
   * When the operator gave the gateway this port (RFC 3339, in milliseconds). Two gateways whose status records the same port (one whose status could not be written since it moved off it): the one given it last has it.
   */
  since?: string;
  /**
   * URL of the gateway: the address of its load balancer when spec.listener.expose is LoadBalancer and the load balancer has one, else the stable in-cluster URL served by the Service agw-NAME in this namespace, for example http://agw-payments.team-payments.svc.
   */
  url?: string;
}

/**
 * Desired state of the gateway (its listener, how callers authenticate, who may call it, and where requests go).
 */
export interface AccessGatewaySpec {
  /**
   * Where the gateway listens. Every gateway replica serves the listener; in the cluster it is reachable through the Service agw-NAME in this namespace (see status.listener.url).
   */
  listener?: Listener;
  /**
   * How the gateway authenticates callers' bearer tokens.
   */
  authentication: Authentication;
  /**
   * Who may use the gateway. A request is allowed if any rule matches the authenticated caller (and, when the rule lists routes, the matched route). With no rules nobody is allowed: every authenticated request gets 403. Access rules decide who reaches a route; for apiserver routes in Impersonate mode, the caller's own RBAC then decides what it may do.
   */
  access?: AccessRule[];
  /**
   * Where requests go. Routes are tried in order and the first whose pathPrefix (and methods, when set) matches wins; a request no route matches gets 404. Each route forwards either to the Kubernetes apiserver (apiserver) or to an in-cluster Service (service).
   */
  routes: Route[];
  /**
   * Optional per-caller token-bucket rate limit: each authenticated identity gets its own bucket. A request over the limit gets 429 with Retry-After. When unset, requests are not rate limited.
   */
  rateLimit?: RateLimit;
  /**
   * Interactive sessions: the upgraded connections the gateway relays (kubectl exec, attach, cp and port-forward, WebSockets to a Service). Each gets a log line when it starts and when it ends, with bytes each way and its duration.
   */
  sessions?: AccessGatewaySpecSessions;
}

/**
 * Interactive sessions: the upgraded connections the gateway relays (kubectl exec, attach, cp and port-forward, WebSockets to a Service). Each gets a log line when it starts and when it ends, with bytes each way and its duration.
 */
export interface AccessGatewaySpecSessions {
  /**
   * Sessions open at once on this gateway (every replica counts its own). One over it is refused with 429 and Retry-After before the upstream is asked. Default 32; 0 refuses every upgrade.
   */
  maxConcurrent?: number;
  /**
   * A session with no data either way for this long is ended (pings and pongs do not count) and told why: a WebSocket close frame (1008) with the reason, or for exec and attach over SPDY a Status on the error stream (kubectl prints both); a SPDY port-forward is reset. Default 900 (15 minutes).
   */
  idleTimeoutSeconds?: number;
}

/**
 * Optional per-caller token-bucket rate limit: each authenticated identity gets its own bucket. A request over the limit gets 429 with Retry-After. When unset, requests are not rate limited.
 */
export interface RateLimit {
  /**
   * Sustained rate allowed per caller, in requests per second (the bucket's refill rate).
   */
  requestsPerSecond: number;
  /**
   * Largest burst allowed per caller (the bucket's size).
   */
  burst: number;
}

/**
 * One route, the requests it matches and the upstream it forwards them to.
 */
export interface Route {
  /**
   * Name of the route, unique within the gateway and shaped like a DNS label. Used by access rules, in metrics, in the access log and in status.routes.
   */
  name: string;
  /**
   * Requests whose path begins with this prefix, element by element, match the route (Gateway API PathPrefix): /a matches /a and /a/b but not /ab; a trailing slash is ignored (/a/ matches /a too); "/" matches everything. Compared against the request path decoded once, as the apiserver reads it: requests holding ".", "..", "//", encoded slashes or backslashes, or a percent-encoded "%" are refused with 400 before routing.
   */
  pathPrefix: string;
  /**
   * Optional. Replaces the matched pathPrefix before the request is forwarded, element by element, for example pathPrefix /ledger/ with rewritePrefix / sends /ledger/v1/x upstream as /v1/x and /ledger as /. When unset the path is forwarded unchanged. The services-proxy URL form (/api/v1/namespaces/NS/services/NAME/proxy/PATH) reaches a service route only for a PATH under its rewritePrefix (or pathPrefix), as if the caller had used the path form.
   */
  rewritePrefix?: string;
  /**
   * Optional. HTTP methods this route matches; when unset it matches every method. A request whose method is not listed falls through to the next route.
   */
  methods?: ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" | "TRACE")[];
  /**
   * Seconds to wait for the upstream's response headers before answering 504. Once headers arrive, streamed bodies (watches, chunked responses) and upgraded connections (exec, port-forward, WebSocket) are not cut off.
   */
  timeoutSeconds?: number;
  /**
   * How many times a request is retried on another upstream endpoint after a connection failure, or a 502/503 from an endpoint that went away. Only idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) are retried. Default 0: no retries.
   */
  retries?: number;
  /**
   * Forward to the Kubernetes apiserver, like kubectl proxy, but for an authenticated caller and never with the operator's own rights. Mutually exclusive with service. Set it to {} to take every default.
   */
  apiserver?: ApiserverUpstream;
  /**
   * Forward to the ready endpoints of an in-cluster Service, load balanced at L7 (like the apiserver's services/NAME/proxy, without the hop through the apiserver). Mutually exclusive with apiserver.
   */
  service?: ServiceUpstream;
}

/**
 * Forward to the ready endpoints of an in-cluster Service, load balanced at L7 (like the apiserver's services/NAME/proxy, without the hop through the apiserver). Mutually exclusive with apiserver.
 */
export interface ServiceUpstream {
  /**
   * Name of the Service.
   */
  name: string;
  /**
   * Namespace of the Service; default the gateway's own namespace. A Service in another namespace needs a ReferenceGrant (gateway.networking.k8s.io) in that namespace admitting AccessGateways from this one, else the gateway reports ResolvedRefs=False, reason RefNotPermitted.
   */
  namespace?: string;
  /**
   * The Service port, by name (spec.ports[].name) or by number (spec.ports[].port). The request goes to the matching ready endpoints of the Service's EndpointSlices.
   */
  port: number | string;
  /**
   * Protocol spoken to the endpoints. With https the endpoints' certificates are verified against caRef when set, else against the system trust store.
   */
  scheme?: "http" | "https";
  /**
   * Optional, https only: the CA bundle (PEM) used to verify the endpoints' certificates, read from a ConfigMap or Secret key in the gateway's namespace, labelled access-gateway.io/ca-bundle=true (the operator only watches labelled objects). Certificates are always verified, against the name SERVICE.NAMESPACE.svc; a missing reference makes the gateway ResolvedRefs=False, reason InvalidCertificateRef.
   */
  caRef?: CARef;
}

/**
 * Optional, https only: the CA bundle (PEM) used to verify the endpoints' certificates, read from a ConfigMap or Secret key in the gateway's namespace, labelled access-gateway.io/ca-bundle=true (the operator only watches labelled objects). Certificates are always verified, against the name SERVICE.NAMESPACE.svc; a missing reference makes the gateway ResolvedRefs=False, reason InvalidCertificateRef.
 */
export interface CARef {
  /**
   * Kind of the object holding the CA bundle.
   */
  kind: "ConfigMap" | "Secret";
  /**
   * Name of the ConfigMap or Secret, in the gateway's namespace.
   */
  name: string;
  /**
   * Key holding the PEM bundle, for example ca.crt.
   */
  key: string;
}

/**
 * Forward to the Kubernetes apiserver, like kubectl proxy, but for an authenticated caller and never with the operator's own rights. Mutually exclusive with service. Set it to {} to take every default.
 */
export interface ApiserverUpstream {
  /**
   * Whose identity the apiserver sees; the operator's own credentials never carry a team's request. Impersonate (default): the authenticated caller (Impersonate-User/Group/Uid/Extra), so the caller's own RBAC applies. ServiceAccount: the service account serviceAccountName of this gateway's namespace (system:serviceaccount:NAMESPACE:NAME and its groups), so callers get exactly that account's RBAC. Passthrough: the caller's token is forwarded unchanged (its audience must then be accepted by the apiserver). In every mode the apiserver's audit log names the gateway, the route and the original caller (Impersonate-Extra access-gateway.io/gateway, access-gateway.io/route, access-gateway.io/caller; Passthrough sends no extras). The value Gateway (the operator's own identity) was removed.
   */
  identity?: "Impersonate" | "ServiceAccount" | "Passthrough";
  /**
   * With identity ServiceAccount (and only then): the name of a service account in this gateway's namespace that the gateway impersonates. It cannot name an account of another namespace: only a name is given.
   */
  serviceAccountName?: string;
  /**
   * RE2 regular expressions (Go's syntax, as kubectl proxy --accept-paths; run in linear time), searched unanchored in the decoded request path; a request path must match at least one of them. Default ["^.*"], every path. An expression RE2 cannot compile (for example a lookaround or a backreference) makes the gateway Accepted=False, reason InvalidRegex.
   */
  acceptPaths?: string[];
  /**
   * RE2 regular expressions (kubectl proxy --reject-paths semantics), searched unanchored in the decoded request path (so /api/v1/namespaces/a/%73ecrets is seen as .../secrets); a request path matching any of them is refused with 403, even if it is accepted. Default: kubectl proxy's (pods' exec and attach) and pods' portforward, so interactive sessions are opt-in: a route that allows them lists what it still rejects (or [] to reject no path), and the caller's own RBAC (create on pods/exec, pods/attach, pods/portforward) still decides.
   */
  rejectPaths?: string[];
  /**
   * RE2 regular expressions (kubectl proxy --reject-methods semantics) searched in the HTTP method; a matching request is refused with 403. For a read-only gateway use ["^POST$", "^PUT$", "^PATCH$", "^DELETE$"] (a plain "POST" also matches, as a substring). Default [], no method is rejected (kubectl proxy's default "^$" rejects nothing either).
   */
  rejectMethods?: string[];
}

/**
 * One access rule: a set of subjects (service accounts, groups, users) and, optionally, the routes they may use. A caller matching any subject matches the rule.
 */
export interface AccessRule {
  /**
   * Service accounts that match this rule.
   */
  serviceAccounts?: ServiceAccountRef[];
  /**
   * Groups, as reported by authentication, that match this rule; for example system:serviceaccounts:team-payments matches every service account of that namespace.
   */
  groups?: string[];
  /**
   * Full usernames, as reported by authentication, that match this rule, for example system:serviceaccount:team-payments:billing.
   */
  users?: string[];
  /**
   * Names of the routes (spec.routes[].name) this rule grants, at most 16. Optional: when unset the rule grants every route.
   */
  routes?: string[];
  /**
   * A time-boxed grant: the rule matches only from this time on (RFC 3339, for example 2026-12-01T09:00:00Z). Optional.
   */
  notBefore?: string;
  /**
   * A time-boxed grant: the rule matches only before this time (RFC 3339); from then on it does not match, without a restart, and status.expiredAccessRules lists it; streams and interactive sessions that no other rule grants are ended then. Optional.
   */
  notAfter?: string;
}

/**
 * A service account, by namespace and name.
 */
export interface ServiceAccountRef {
  /**
   * Namespace of the service account.
   */
  namespace: string;
  /**
   * Name of the service account, or "*" for every service account in the namespace.
   */
  name: string;
}

/**
 * How the gateway authenticates callers' bearer tokens.
 */
export interface Authentication {
  /**
   * Token audiences this gateway accepts; a token must carry at least one of them. Use a dedicated audience (for example access-gateway) in the projected token volume, so the token the gateway sees is not usable against the apiserver itself.
   */
  audiences: string[];
  /**
   * OIDC issuers (people's identity providers) whose ID tokens this gateway accepts beside service-account tokens, by issuer URL. Only issuers the platform configured are usable (the operator's --authentication-config, the jwt list of an apiserver AuthenticationConfiguration): their claim mappings decide the username and groups, which never start with system: or team: (team:NS: names are a team client CA's). The token's audience is checked against the issuer's configured audiences. An issuer the platform did not configure makes the gateway ResolvedRefs=False, reason IssuerNotFound; one whose configuration is invalid, Accepted=False, reason InvalidIssuer with the compiler's message.
   */
  issuers?: string[];
  /**
   * How tokens are verified. TokenReview (default) asks the apiserver, which honours revocation of bound tokens (deleted pod or secret) when it is asked (a cached answer holds for cacheTTLSeconds). JWKS checks the signature offline against the keys published by the apiserver's OIDC discovery endpoint, and on every request, cached or not, that the token's service account and bound objects still exist (from the operator's watches) and its key is still published.
   */
  mode?: "TokenReview" | "JWKS";
  /**
   * How long a successful authentication is cached, in seconds; the effective lifetime is the smaller of this and the token's expiry. In TokenReview mode, a token still in use after 80% of it is reviewed again in the background (its requests do not wait), unless it expires first. 0 disables the cache. A refusal (401) is remembered for 5 s; "unavailable" (503) never.
   */
  cacheTTLSeconds?: number;
}

/**
 * Where the gateway listens. Every gateway replica serves the listener; in the cluster it is reachable through the Service agw-NAME in this namespace (see status.listener.url).
 */
export interface Listener {
  /**
   * Port the gateway pods listen on for this gateway. Optional: when unset a free port is allocated from the operator's --port-range and recorded in status.listener.port; an allocated port never changes while the gateway exists. A port already used by another gateway makes this one Accepted=False, reason PortConflict.
   */
  port?: number;
  /**
   * How the Service agw-NAME exposes the gateway. The platform decides what teams may ask for (operator flags --expose-types and --expose-annotations, chart values expose.*): a type or annotation it does not allow keeps the Service a plain ClusterIP without the annotations and makes the gateway Programmed=False, reason ExposureNotPermitted.
   */
  expose?: ListenerExpose;
  /**
   * Serve the listener over HTTPS. When unset the listener speaks plain HTTP.
   */
  tls?: ListenerTLS;
}

/**
 * Serve the listener over HTTPS. When unset the listener speaks plain HTTP.
 */
export interface ListenerTLS {
  /**
   * Name of a kubernetes.io/tls Secret in the gateway's namespace, labelled access-gateway.io/listener-tls=true (the operator only watches labelled Secrets). A renewed certificate is picked up without dropping connections.
   */
  secretName: string;
  /**
   * Client certificates as an identity (the apiserver's x509 rule: the subject's CN is the username, each O a group). The CA bundle comes from a ConfigMap or Secret key in the gateway's namespace, labelled access-gateway.io/ca-bundle=true. A CA of the team's namespace is a team identity source: the username and every group are prefixed with team:NAMESPACE: (CN alice of namespace payments is team:payments:alice), so the team's own RoleBindings grant them rights and they never name anyone else. A verified certificate is the caller's identity even when a bearer token is sent too; a missing reference makes the gateway ResolvedRefs=False, reason InvalidCertificateRef.
   */
  clientCA?: ListenerTLSClientCA;
}

/**
 * Client certificates as an identity (the apiserver's x509 rule: the subject's CN is the username, each O a group). The CA bundle comes from a ConfigMap or Secret key in the gateway's namespace, labelled access-gateway.io/ca-bundle=true. A CA of the team's namespace is a team identity source: the username and every group are prefixed with team:NAMESPACE: (CN alice of namespace payments is team:payments:alice), so the team's own RoleBindings grant them rights and they never name anyone else. A verified certificate is the caller's identity even when a bearer token is sent too; a missing reference makes the gateway ResolvedRefs=False, reason InvalidCertificateRef.
 */
export interface ListenerTLSClientCA {
  /**
   * Kind of the object holding the CA bundle.
   */
  kind: "ConfigMap" | "Secret";
  /**
   * Name of the ConfigMap or Secret, in the gateway's namespace.
   */
  name: string;
  /**
   * Key holding the PEM bundle, for example ca.crt.
   */
  key: string;
  /**
   * Optional (default): a caller without a verified certificate may still present a bearer token. Required: every request needs a verified client certificate (401 otherwise, naming why).
   */
  mode?: "Optional" | "Required";
}

/**
 * How the Service agw-NAME exposes the gateway. The platform decides what teams may ask for (operator flags --expose-types and --expose-annotations, chart values expose.*): a type or annotation it does not allow keeps the Service a plain ClusterIP without the annotations and makes the gateway Programmed=False, reason ExposureNotPermitted.
 */
export interface ListenerExpose {
  /**
   * Service type. Optional: the operator's --default-expose-type (ClusterIP unless the platform chose otherwise). With LoadBalancer, the address the load balancer gets is published in status.listener.url.
   */
  type?: "ClusterIP" | "NodePort" | "LoadBalancer";
  /**
   * Annotations of the Service (load-balancer settings, for example); each key must be allowed by the operator's --expose-annotations.
   */
  annotations?: Record<string, string>;
}
