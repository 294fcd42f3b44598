// CEL expressions of identity-provider configurations (claim mappings and validation rules), with
// the conformance-tested @bufbuild/cel: compiled once when the configuration is read, evaluated
// per new token (results are cached per token). A CEL program always terminates; its work is
// bounded here by the expression's length and comprehension depth, and by its input: the claims of
// a token that passed its signature check, at most 16 KiB of headers.
import { celEnv, isCelError, isCelList, isCelMap, parse, plan } from '@bufbuild/cel';

export const maxExpressionLength = 4096;
const env = celEnv();

export interface CelProgram {
  readonly source: string;
  /** The value, as plain JSON-like data; throws with CEL's message. */
  run(vars: Record<string, unknown>): unknown;
}

/** Comprehensions (map, filter, all, exists...) inside one another, at most: one, so an
 * evaluation's work grows with the claims' size, never with its square (the apiserver bounds it
 * by a cost budget). */
export const maxComprehensionDepth = 1;
/** Elements of a result, at most (a list built from lists could still be large). */
export const maxResultElements = 1024;

/** Compiles `source`, or throws with the parser's message. */
export function compileCel(source: string): CelProgram {
  if (source.length > maxExpressionLength) throw new Error(`expression longer than ${maxExpressionLength} characters`);
  const parsed = parse(source);
  if (comprehensionDepth(parsed.expr) > maxComprehensionDepth) {
    throw new Error(`expression nests comprehensions (map, filter, all, exists) deeper than ${maxComprehensionDepth}: too costly per token`);
  }
  const program = plan(env, parsed);
  return {
    source,
    run(vars) {
      const v = program(vars as never);
      if (isCelError(v)) throw new Error(`CEL: ${v.message}`);
      const budget = { left: maxResultElements };
      return plain(v, budget);
    },
  };
}

function plain(v: unknown, budget: { left: number }): unknown {
  if (--budget.left < 0) throw new Error(`CEL: the result holds more than ${maxResultElements} elements`);
  if (typeof v === 'bigint') return Number(v);
  if (isCelList(v)) return [...v].map((x) => plain(x, budget));
  if (isCelMap(v)) return Object.fromEntries([...v.entries()].map(([k, x]) => [String(k), plain(x, budget)]));
  return v;
}

/** How deeply comprehensions nest in a parsed expression (walks every sub-expression). */
function comprehensionDepth(e: unknown): number {
  if (!e || typeof e !== 'object') return 0;
  const kind = (e as { exprKind?: { case?: string; value?: unknown } }).exprKind;
  const children = Object.values(kind?.value && typeof kind.value === 'object' ? kind.value : e).flatMap((v) => (Array.isArray(v) ? v : [v]));
  const below = Math.max(0, ...children.filter((c) => c && typeof c === 'object').map(comprehensionDepth));
  return below + (kind?.case === 'comprehensionExpr' ? 1 : 0);
}
