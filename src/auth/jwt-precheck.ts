// Cheap checks before any TokenReview or signature work. They only ever refuse: a bearer string
// that is not a compact JWS with an asymmetric signing alg, or whose unverified claims are certainly
// invalid (expired beyond the leeway, audiences disjoint from the gateway's). Accepting still needs
// the apiserver's review or a verified signature.
import { UnauthenticatedError } from '../errors.js';

/** Asymmetric JWS algs (never `none`, never HS*): what the apiserver and OIDC issuers sign with. */
export const signingAlgs: ReadonlySet<string> = new Set([
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519',
]);

/** The apiserver's leeway on exp/nbf of service-account tokens (go-jose jwt.DefaultLeeway). */
export const apiserverLeewaySeconds = 60;

/** Default skew allowed between this process's clock and the apiserver's (`--jwks-clock-skew-seconds`). */
export const defaultClockSkewSeconds = 5;

export interface UnverifiedJwt {
  alg: string;
  kid: string | undefined;
  payload: Record<string, unknown>;
}

// base64url, unpadded or padded (Go's decoder strips '=' before decoding).
const segment = /^[A-Za-z0-9_-]+={0,2}$/;

function json(part: string, what: string): Record<string, unknown> {
  if (!segment.test(part) || part.replace(/=+$/, '').length % 4 === 1) {
    throw new UnauthenticatedError(`invalid bearer token: not a JWT (${what} is not base64url)`);
  }
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  } catch {
    throw new UnauthenticatedError(`invalid bearer token: not a JWT (${what} is not JSON)`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new UnauthenticatedError(`invalid bearer token: not a JWT (${what} is not a JSON object)`);
  }
  return v as Record<string, unknown>;
}

/** Header and payload of a compact JWS, unverified; throws 401 for anything else. */
export function parseUnverified(token: string): UnverifiedJwt {
  const parts = token.split('.');
  if (parts.length !== 3) throw new UnauthenticatedError('invalid bearer token: not a JWT (expected three dot-separated parts)');
  const { alg, kid } = json(parts[0]!, 'header');
  if (typeof alg !== 'string' || !signingAlgs.has(alg)) {
    // (an object is not stringified: its own toString may be anything, or throw)
    throw new UnauthenticatedError(`invalid bearer token: alg ${typeof alg === 'string' ? alg.slice(0, 16) : typeof alg === 'object' && alg !== null ? 'of a JSON object' : String(alg)} is not accepted`);
  }
  if (kid !== undefined && typeof kid !== 'string') throw new UnauthenticatedError('invalid bearer token: malformed kid');
  if (!segment.test(parts[2]!)) throw new UnauthenticatedError('invalid bearer token: not a JWT (signature is missing or not base64url)');
  return { alg, kid, payload: json(parts[1]!, 'payload') };
}

export interface ClaimPrecheck {
  audiences: readonly string[];
  nowMs: number;
  /** exp may be this far in the past. */
  leewaySeconds: number;
  /** JWKS: a token without exp or aud is invalid. TokenReview: the apiserver decides (legacy tokens). */
  required: boolean;
}

/** Refuses claims that are certainly invalid; never accepts anything. */
export function precheckClaims(payload: Record<string, unknown>, c: ClaimPrecheck): void {
  const { exp, aud } = payload;
  if (exp === undefined) {
    if (c.required) throw new UnauthenticatedError('invalid bearer token: no exp claim');
  } else if (typeof exp !== 'number' || !Number.isFinite(exp)) {
    throw new UnauthenticatedError('invalid bearer token: malformed exp claim');
  } else if (exp * 1000 < c.nowMs - c.leewaySeconds * 1000) {
    throw new UnauthenticatedError('invalid bearer token: token has expired');
  }
  if (aud === undefined) {
    if (c.required) throw new UnauthenticatedError('invalid bearer token: no aud claim');
    return;
  }
  const list = typeof aud === 'string' ? [aud] : aud;
  if (!Array.isArray(list) || !list.every((a) => typeof a === 'string')) {
    throw new UnauthenticatedError('invalid bearer token: malformed aud claim');
  }
  if (!list.some((a) => c.audiences.includes(a))) {
    throw new UnauthenticatedError("invalid bearer token: audiences do not include any of the gateway's");
  }
}
