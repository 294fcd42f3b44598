// CEL expressions of identity-provider configurations (claim mappings and validation rules), with
// the conformance-tested @bufbuild/cel: compiled once when the configuration is read, evaluated
// per new token. A CEL program always terminates; expressions are bounded in length here, and
// their inputs by the token's size (16 KiB of headers).
import { celEnv, isCelError, isCelList, isCelMap, parse, plan } from '@bufbuild/cel';

export const maxExpressionLength = 4096;
const env = celEnv();

export interface CelProgram {
  readonly source: string;
  /** The value, as plain JSON-like data; throws with CEL's message. */
  run(vars: Record<string, unknown>): unknown;
}

/** Compiles `source`, or throws with the parser's message. */
export function compileCel(source: string): CelProgram {
  if (source.length > maxExpressionLength) throw new Error(`expression longer than ${maxExpressionLength} characters`);
  const program = plan(env, parse(source));
  return {
    source,
    run(vars) {
      const v = program(vars as never);
      if (isCelError(v)) throw new Error(`CEL: ${v.message}`);
      return plain(v);
    },
  };
}

function plain(v: unknown): unknown {
  if (typeof v === 'bigint') return Number(v);
  if (isCelList(v)) return [...v].map(plain);
  if (isCelMap(v)) return Object.fromEntries([...v.entries()].map(([k, x]) => [String(k), plain(x)]));
  return v;
}
