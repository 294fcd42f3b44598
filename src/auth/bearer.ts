// Bearer token extraction (RFC 6750 b64token syntax).
import { UnauthenticatedError } from '../errors.js';

const bearer = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i;

export function bearerToken(header: string | undefined): string {
  if (!header) throw new UnauthenticatedError('no bearer token: send Authorization: Bearer <projected service-account token>');
  const m = bearer.exec(header);
  if (!m) throw new UnauthenticatedError('malformed Authorization header: expected Bearer <token>');
  return m[1]!;
}

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
