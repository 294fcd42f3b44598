// JSON with object keys sorted: the apiserver re-orders keys, so objects are compared in this form.
import { createHash } from 'node:crypto';

export function canonical(v: unknown): string {
  return JSON.stringify(v ?? null, (_k, val) => (val && typeof val === 'object' && !Array.isArray(val)
    ? Object.fromEntries(Object.entries(val).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
    : val));
}

/** A short digest of the canonical form: what is kept to recognise an object later (not the object). */
export function digest(v: unknown): string {
  return createHash('sha256').update(canonical(v)).digest('base64url');
}
