// Bearer token extraction (RFC 6750 b64token syntax).
import { UnauthenticatedError } from '../errors.js';

const bearer = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i;

/** The last header read on a connection, and its token (held only as long as the connection). */
const memo = new WeakMap<object, { header: string; token: string }>();

/** The token of `header`. `conn`: the client connection, whose keep-alive requests send the same
 * header again: those cost a string comparison instead of the pattern. */
export function bearerToken(header: string | undefined, conn?: object): string {
  if (!header) throw new UnauthenticatedError('no bearer token: send Authorization: Bearer <projected service-account token>');
  const last = conn && memo.get(conn);
  if (last && last.header === header) return last.token;
  const m = bearer.exec(header);
  if (!m) throw new UnauthenticatedError('malformed Authorization header: expected Bearer <token>');
  if (conn) memo.set(conn, { header, token: m[1]! });
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
