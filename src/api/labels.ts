// Every label, annotation and extra key the project reads or writes, in one place.

/** Secrets the operator watches for listener certificates (value "true"). */
export const listenerTLSLabel = 'access-gateway.io/listener-tls';
/** Secrets and ConfigMaps the operator watches for upstream CA bundles (value "true"). */
export const caBundleLabel = 'access-gateway.io/ca-bundle';
/** Per-gateway access log: all | errors | none | sample:PERCENT. */
export const accessLogAnnotation = 'access-gateway.io/access-log';

/** On the agw-NAME Service and EndpointSlice: the gateway they expose. */
export const gatewayLabel = 'access-gateway.io/gateway';
export const managedByLabel = 'app.kubernetes.io/managed-by';
export const managedByValue = 'access-gateway';
/** The Service an EndpointSlice belongs to (Kubernetes'). */
export const serviceNameLabel = 'kubernetes.io/service-name';
/** Who manages an EndpointSlice (Kubernetes'), and our value of it. */
export const endpointSliceManagedByLabel = 'endpointslice.kubernetes.io/managed-by';
export const endpointSliceManagedByValue = 'operator.access-gateway.io';

/** Impersonate-Extra keys the gateway adds, so the apiserver's audit log names all three. */
export const extraGateway = 'access-gateway.io/gateway';
export const extraRoute = 'access-gateway.io/route';
export const extraCaller = 'access-gateway.io/caller';
/** The three, which no caller, authenticator or issuer may set (lower case: keys are compared so). */
export const gatewayExtraKeys: ReadonlySet<string> = new Set([extraGateway, extraRoute, extraCaller]);
