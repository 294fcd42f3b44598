// The cache key of a bearer token: its SHA-256 (caches never hold the token). A keep-alive
// connection sends the same token again and again: the key is remembered per connection, beside
// the token it was made from (held only as long as that connection), so those requests cost a
// string comparison instead of a hash; a different token on the connection is hashed again.
import { createHash } from 'node:crypto';

const memo = new WeakMap<object, { token: string; key: string }>();

export function tokenKey(token: string, conn?: object): string {
  if (conn) {
    const m = memo.get(conn);
    if (m && m.token === token) return m.key;
  }
  const key = createHash('sha256').update(token).digest('base64url');
  if (conn) memo.set(conn, { token, key });
  return key;
}
