// Schema defaults, applied the way the apiserver applies them (so objects read from files
// behave like objects read from the cluster). Driven by the CRD schema: nothing to drift.
import { schema } from './schema.js';
import type { AccessGateway } from './types.js';

type S = { type?: string; properties?: Record<string, S>; items?: S; default?: unknown };

function fill(value: unknown, s: S): unknown {
  if (s.type === 'object' && s.properties && value && typeof value === 'object' && !Array.isArray(value)) {
    const obj = value as Record<string, unknown>;
    for (const [k, p] of Object.entries(s.properties)) {
      if (obj[k] === undefined && p.default !== undefined) obj[k] = structuredClone(p.default);
      if (obj[k] !== undefined) obj[k] = fill(obj[k], p);
    }
    return obj;
  }
  if (s.type === 'array' && s.items && Array.isArray(value)) return value.map((v) => fill(v, s.items!));
  return value;
}

/** A defaulted copy; the input is not changed. */
export function applyDefaults(gw: AccessGateway): AccessGateway {
  const copy = structuredClone(gw);
  return fill(copy, schema as S) as AccessGateway;
}
