// Bearer token extraction (RFC 6750 b64token syntax).
import { UnauthenticatedError } from '../errors.js';
import { perConnection } from './per-connection.js';

const bearer = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i;

/** The token of `header`. `conn`: the client connection (perConnection: the same header again is
 * not matched again). */
export function bearerToken(header: string | undefined, conn?: object): string {
  if (!header) throw new UnauthenticatedError('no bearer token: send Authorization: Bearer <projected service-account token>');
  return tokenOf(header, conn);
}

const tokenOf = perConnection((header) => {
  const m = bearer.exec(header);
  if (!m) throw new UnauthenticatedError('malformed Authorization header: expected Bearer <token>');
  return m[1]!;
});

/** The `exp` claim of a JWT, without verifying it (only to bound cache lifetimes). */
export function unverifiedExpiry(token: string): number | null {
  const part = token.split('.')[1];
  if (!part) return null;
  try {
    const exp = JSON.parse(Buffer.from(part, 'base64url').toString('utf8')).exp;
    return typeof exp === 'number' ? exp : null;
  } catch {
    return null;
  }
}
