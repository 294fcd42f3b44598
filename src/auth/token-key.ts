// The cache key of a bearer token: its SHA-256 (the token itself is never kept). A keep-alive
// connection sends the same token again and again: the key is remembered per connection, so
// those requests cost a string comparison instead of a hash.
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
