// JSON with object keys sorted: the apiserver re-orders keys, so objects are compared in this form.

export function canonical(v: unknown): string {
  return JSON.stringify(v ?? null, (_k, val) => (val && typeof val === 'object' && !Array.isArray(val)
    ? Object.fromEntries(Object.entries(val).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
    : val));
}
