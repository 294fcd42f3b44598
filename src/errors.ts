// Errors with stable codes, mapped once to HTTP answers with a Kubernetes `Status` body.

/** Which admission step refused a request: the gateway's handler chain, in order. */
export type Step = 'request' | 'authentication' | 'access' | 'rateLimit' | 'route' | 'filter' | 'impersonation';

export interface AgwErrorOptions {
  cause?: unknown;
  /** The step that refused, and the spec field (rule) that decided, for the Status body. */
  step?: Step;
  field?: string;
}

export class AgwError extends Error {
  readonly code: string = 'AGW_ERR_INTERNAL';
  readonly status: number = 500;
  readonly reason: string = 'InternalError';
  /** Set once: by the thrower, or by the step that passes the error on (see refusedAt). */
  step: Step | undefined;
  field: string | undefined;
  /** When the client may try again, in seconds (a Retry-After header), if the refusal knows. */
  readonly retryAfterSeconds: number | undefined = undefined;
  constructor(message: string, options?: AgwErrorOptions) {
    super(message, options);
    this.name = 'AgwError';
    this.step = options?.step;
    this.field = options?.field;
  }
}

function define(name: string, code: string, status: number, reason: string) {
  const cls = class extends AgwError {
    override readonly code = code;
    override readonly status = status;
    override readonly reason = reason;
    constructor(message: string, options?: AgwErrorOptions) {
      super(message, options);
      this.name = name;
    }
  };
  Object.defineProperty(cls, 'name', { value: name });
  return cls;
}

export const BadPathError = define('BadPathError', 'AGW_ERR_BAD_PATH', 400, 'BadRequest');
export const BadRequestError = define('BadRequestError', 'AGW_ERR_BAD_REQUEST', 400, 'BadRequest');
export const UriTooLongError = define('UriTooLongError', 'AGW_ERR_URI_TOO_LONG', 414, 'RequestURITooLong');
export const TooManyHeadersError = define('TooManyHeadersError', 'AGW_ERR_TOO_MANY_HEADERS', 431, 'RequestHeaderFieldsTooLarge');
export const UnauthenticatedError = define('UnauthenticatedError', 'AGW_ERR_UNAUTHENTICATED', 401, 'Unauthorized');
export const ForbiddenError = define('ForbiddenError', 'AGW_ERR_FORBIDDEN', 403, 'Forbidden');
export const RouteNotFoundError = define('RouteNotFoundError', 'AGW_ERR_NO_ROUTE', 404, 'NotFound');
export const MethodNotAllowedError = define('MethodNotAllowedError', 'AGW_ERR_METHOD_NOT_ALLOWED', 405, 'MethodNotAllowed');
export class RateLimitedError extends AgwError {
  override readonly code: string = 'AGW_ERR_RATE_LIMITED';
  override readonly status = 429;
  override readonly reason = 'TooManyRequests';
  constructor(message: string, override readonly retryAfterSeconds: number) {
    super(message, { step: 'rateLimit', field: 'spec.rateLimit' });
    this.name = 'RateLimitedError';
  }
}
/** 429: the gateway's interactive sessions are all open (spec.sessions.maxConcurrent). */
export class TooManySessionsError extends RateLimitedError {
  override readonly code = 'AGW_ERR_TOO_MANY_SESSIONS';
  constructor(message: string, retryAfterSeconds: number) {
    super(message, retryAfterSeconds);
    this.field = 'spec.sessions.maxConcurrent';
    this.name = 'TooManySessionsError';
  }
}
/** 503: the gateway's namespace has --max-connections-per-namespace admitted connections open. */
export class TooManyConnectionsError extends AgwError {
  override readonly code = 'AGW_ERR_TOO_MANY_CONNECTIONS';
  override readonly status = 503;
  override readonly reason = 'ServiceUnavailable';
  override readonly retryAfterSeconds = 1;
  constructor(message: string) {
    super(message, { step: 'access' });
    this.name = 'TooManyConnectionsError';
  }
}
export const UpstreamUnreachableError = define('UpstreamUnreachableError', 'AGW_ERR_UPSTREAM_UNREACHABLE', 502, 'BadGateway');
/** The upstream answered an upgrade with a protocol other than the one asked for. */
export const UpstreamProtocolError = define('UpstreamProtocolError', 'AGW_ERR_UPSTREAM_PROTOCOL', 502, 'BadGateway');
/** 503, fail closed, with when to try again if known (`retryAfterSeconds`: a Retry-After header). */
abstract class UnavailableError extends AgwError {
  override readonly status = 503;
  override readonly reason = 'ServiceUnavailable';
  override readonly retryAfterSeconds: number | undefined;
  constructor(message: string, options?: AgwErrorOptions & { retryAfterSeconds?: number }) {
    super(message, options);
    this.retryAfterSeconds = options?.retryAfterSeconds;
  }
}
/** Authentication cannot answer now (apiserver away, keys or caches not loaded, TokenReview
 * limiter full). */
export class AuthUnavailableError extends UnavailableError {
  override readonly code = 'AGW_ERR_AUTH_UNAVAILABLE';
  override readonly name = 'AuthUnavailableError';
}
/** The thread that runs path filters failed while checking this request, or the namespace's checks
 * are refused for a while after one ran too long (`retryAfterSeconds` then). */
export class FilterUnavailableError extends UnavailableError {
  override readonly code = 'AGW_ERR_FILTER_UNAVAILABLE';
  override readonly name = 'FilterUnavailableError';
}
/** 429: a namespace's path-filter checks waiting for the filter thread are at their bound. */
export class FiltersBusyError extends AgwError {
  override readonly code = 'AGW_ERR_FILTERS_BUSY';
  override readonly status = 429;
  override readonly reason = 'TooManyRequests';
  override readonly retryAfterSeconds = 1;
  constructor(message: string, field: string) {
    super(message, { step: 'filter', field });
    this.name = 'FiltersBusyError';
  }
}
export const NoEndpointsError = define('NoEndpointsError', 'AGW_ERR_NO_ENDPOINTS', 503, 'ServiceUnavailable');
export const UpstreamTimeoutError = define('UpstreamTimeoutError', 'AGW_ERR_UPSTREAM_TIMEOUT', 504, 'Timeout');

/** Names the step (and rule) that refused, unless the thrower did; returns the error. */
export function refusedAt<E>(err: E, step: Step, field?: string): E {
  if (err instanceof AgwError && err.step === undefined) {
    err.step = step;
    err.field = field;
  }
  return err;
}

/** The Status cause: the error code, the step that refused (message) and the rule (field). */
function cause(err: AgwError): { reason: string; message?: string; field?: string } {
  return { reason: err.code, ...(err.step ? { message: `refused by the gateway at step ${err.step}` } : {}), ...(err.field ? { field: err.field } : {}) };
}

/** The JSON `Status` body the apiserver would send for the same situation. */
export function statusBody(err: AgwError): string {
  return JSON.stringify({
    kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure',
    message: err.message, reason: err.reason, details: { causes: [cause(err)] }, code: err.status,
  });
}

export function toAgwError(err: unknown): AgwError {
  return err instanceof AgwError ? err : new AgwError('internal error', { cause: err });
}
