// The cache key of a bearer token: its SHA-256 (caches never hold the token). Remembered per
// connection beside the token it was made from (perConnection): a different token on the
// connection is hashed again.
import { createHash } from 'node:crypto';
import { perConnection } from './per-connection.js';

export const tokenKey = perConnection((token) => createHash('sha256').update(token).digest('base64url'));
