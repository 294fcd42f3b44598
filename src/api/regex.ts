// Regular expressions written by teams (acceptPaths, rejectPaths, rejectMethods) run on RE2, a
// linear-time engine with Go's syntax (what kubectl proxy uses): matching is linear in the path.
// Linear is not cheap: a hostile pattern can cost microseconds per character (its DFA builds a
// state per character), so the size of a route's patterns is bounded here, each pattern's DFA
// memory too, and filter-checks.ts decides which checks may run on the event loop. The only
// place such expressions are compiled.
import { RE2JS } from 're2js';

export interface Regex {
  /** Unanchored search, as Go's regexp.MatchString. */
  test(s: string): boolean;
  /** RE2 instructions it compiled to: a match costs up to about this much per character. */
  readonly size: number;
  /** DFA states it keeps now (at most dfaKept between matches). */
  readonly states: number;
}

/** re2js's compiled form, as far as it is read here (re2js is pinned in package-lock; unit
 * tests check these are still there). */
interface Compiled { re2Input: { prog: { numInst(): number; getInst(i: number): { runes?: ArrayLike<number> | null } }; lazyDFA: DFA | null; dfa: DFA } }
interface DFA { stateCount: number; clearCache(): void }

/** Bytes of DFA states a pattern may build during one match (re2js: 8 MiB; past it, the DFA
 * starts again or gives way to the NFA). A hostile pattern builds one per character. */
export const dfaMemory = 32 * 1024;
/** States a pattern keeps between matches (filters a team means use a handful, most none). */
export const dfaKept = 64;
const DFAClass = ((RE2JS.compile('a') as unknown as Compiled).re2Input.dfa as object).constructor as new (prog: unknown, maxMem: number) => DFA;

/** The RE2 instructions `re` compiled to. */
function instructions(re: RE2JS): number {
  const n = (re as unknown as Partial<Compiled>).re2Input?.prog?.numInst?.();
  if (typeof n !== 'number') throw new Error('re2js: the compiled program size is not readable (its internals changed)');
  return n;
}

/** The rune-range bounds `re`'s character classes hold: building its DFA reads them all (a
 * Unicode class such as \p{L} holds ~1,400; a thousand repeats of one, a million and 145 ms). */
function runeBounds(re: RE2JS): number {
  const prog = (re as unknown as Compiled).re2Input.prog;
  let n = 0;
  for (let i = 0; i < prog.numInst(); i++) n += prog.getInst(i).runes?.length ?? 0;
  return n;
}

/** `re` with its DFA bounded to dfaMemory during a match and dfaKept states after one. */
function bounded(re: RE2JS): Regex {
  const inner = (re as unknown as Compiled).re2Input;
  const dfa = (inner.lazyDFA = new DFAClass(inner.prog, dfaMemory));
  return {
    size: instructions(re),
    get states() {
      return dfa.stateCount;
    },
    test(s: string): boolean {
      const found = re.test(s);
      if (dfa.stateCount > dfaKept) dfa.clearCache();
      return found;
    },
  };
}

/**
 * Compiles `pattern` for `owner` (the team: the gateway's namespace); throws with the engine's
 * message when RE2 cannot. A compiled RE2 keeps a match cache it fills and resets while matching,
 * so one program is shared only by the routes of one owner, never between teams (one team's
 * requests must not slow another's); sharing it within a team keeps thousands of gateways with
 * the same filters from holding thousands of copies (~4 KiB each). A program is dropped with the
 * last route that uses it.
 */
export function compileRegex(pattern: string, owner: string): Regex {
  const key = `${owner}\u0000${pattern}`;
  const cached = programs.get(key)?.deref();
  if (cached) return cached;
  const re = bounded(RE2JS.compile(pattern));
  programs.set(key, new WeakRef(re));
  unused.register(re, key);
  return re;
}

const programs = new Map<string, WeakRef<Regex>>();
const unused = new FinalizationRegistry<string>((key) => {
  if (programs.get(key)?.deref() === undefined) programs.delete(key);
});

/** Why `pattern` does not compile, or null. */
export function regexProblem(pattern: string): string | null {
  const info = regexInfo(pattern);
  return 'problem' in info ? info.problem : null;
}

/**
 * RE2 instructions a route's patterns may compile to in all, and a gateway's: matching costs up
 * to this much work per character of the path (RE2 is linear in the path, not in the pattern),
 * and compiling a spec's patterns blocks the process while it runs. Envoy bounds each pattern to
 * 100 instructions by default; kubectl proxy's default filters compile to 29 and 23.
 */
export const maxRouteProgram = 2048;
export const maxGatewayProgram = 8192;
/** Different patterns a gateway's routes may have: each compiled one holds ~4.5 KiB of the shared
 * process however small it is (26,000 tiny ones fit in 8,192 instructions per gateway). */
export const maxGatewayPatterns = 256;
/** Rune-range bounds a gateway's patterns may hold in all: compiling them (each route's DFA) costs
 * ~6 ns a bound on the event loop every team shares (100,000: ~0.6 ms; 70 uses of \p{L}). */
export const maxGatewayRunes = 100_000;

/**
 * A pattern's program size, or why it does not compile. Remembered per pattern (the same
 * patterns are checked on every reconcile), for the last `remembered` patterns asked about.
 */
export function regexInfo(pattern: string): { size: number; runes: number } | { problem: string } {
  const known = infos.get(pattern);
  if (known) return known;
  let info: { size: number; runes: number } | { problem: string };
  const estimate = programEstimate(pattern);
  try {
    // compiling is what costs (about 0.5 µs per instruction, on the event loop): a pattern whose
    // counted repetitions expand far past a route's bound is refused before it is compiled
    info = estimate > maxPatternEstimate
      ? { problem: `its repetitions would compile to about ${estimate} RE2 instructions, more than the ${maxRouteProgram} a route may have` }
      : sizes(RE2JS.compile(pattern));
  } catch (err) {
    info = { problem: (err as Error).message };
  }
  if (infos.size >= remembered) infos.delete(infos.keys().next().value!);
  infos.set(pattern, info);
  return info;
}
const remembered = 4096;
/** The largest estimate compiled (the estimate may run up to about twice the real size). */
const maxPatternEstimate = 2 * maxRouteProgram;
/** A POSIX class inside a bracket class, [:alpha:] or [:^alpha:]. */
const posixClass = /^\[:\^?[a-z]+:\]/;

/**
 * About how many RE2 instructions `p` compiles to, read from its text without compiling it, at or
 * above the real count: one per literal, class or operator, two per group, and a counted
 * repetition x{n,m} as n copies of x and m-n optional ones (what RE2's simplifier expands it
 * to). Malformed text gets some estimate; the compiler refuses it after.
 */
export function programEstimate(p: string): number {
  const open: { total: number; last: number }[] = [];
  let top = { total: 2, last: 0 };
  const atom = (n: number) => { top.total += n; top.last = n; };
  for (let i = 0; i < p.length; i++) {
    const c = p[i];
    if (c === '\\') {
      const n = p[i + 1];
      if (n === 'Q') { // \Q...\E: literal text
        const end = p.indexOf('\\E', i + 2), text = (end < 0 ? p.length : end) - i - 2;
        top.total += text;
        if (text > 0) top.last = 1; // an empty \Q\E leaves a repetition after it to what came before
        i = end < 0 ? p.length : end + 1;
        continue;
      }
      if ((n === 'p' || n === 'P' || n === 'x') && p[i + 2] === '{') i = p.indexOf('}', i + 3) < 0 ? p.length : p.indexOf('}', i + 3);
      else i += n === 'p' || n === 'P' ? 2 : 1;
      atom(1);
    } else if (c === '[') { // a class is one instruction; a ] right after [ or [^ is part of it
      let j = i + 1;
      if (p[j] === '^') j++;
      if (p[j] === ']') j++;
      for (; j < p.length && p[j] !== ']'; j++) {
        if (p[j] === '\\') j++;
        else if (p[j] === '[') j += (posixClass.exec(p.slice(j, j + 16))?.[0].length ?? 1) - 1; // [:alpha:], else a character
      }
      i = j;
      atom(1);
    } else if (c === '(') {
      if (p[i + 1] === '?') { // (?flags) sets flags; (?flags:...) and (?P<name>...) open a group
        const end = p.slice(i).search(/[:)>]/);
        if (end > 0 && p[i + end] === ')') { i += end; continue; }
        if (end > 0) i += end;
      }
      open.push(top);
      top = { total: 2, last: 0 };
    } else if (c === ')' && open.length) {
      const inner = top.total;
      top = open.pop()!;
      atom(inner);
    } else if (c === '|') {
      top.total += 1;
      top.last = 0;
    } else if (c === '*' || c === '+' || c === '?') {
      top.total += 1;
      top.last += 1; // x* is x and one instruction, which a repetition after it repeats
    } else {
      const m = c === '{' ? /^\{(\d{1,4})(,(\d{0,4}))?\}/.exec(p.slice(i, i + 12)) : null;
      if (!m) { atom(1); continue; }
      const min = Number(m[1]);
      const size = repeated(top.last, min, m[2] === undefined ? min : m[3] === '' ? null : Number(m[3]));
      top.total += size - top.last;
      top.last = size;
      i += m[0].length - 1;
    }
  }
  while (open.length) { const inner = top.total; top = open.pop()!; top.total += inner; }
  return top.total;
}

/** The size of x{min,max} for an x of size `x` (max null: x{min,}): min copies, then a loop or
 * max-min optional copies, each with one instruction more. */
function repeated(x: number, min: number, max: number | null): number {
  if (max === null) return Math.max(min, 1) * x + 1;
  return Math.max(1, min * x + Math.max(0, max - min) * (x + 1));
}

const infos = new Map<string, { size: number; runes: number } | { problem: string }>();

function sizes(re: RE2JS): { size: number; runes: number } {
  return { size: instructions(re), runes: runeBounds(re) };
}

/** A problem with filter patterns: the field, why, and the pattern when one does not compile. */
export interface PatternProblem { field: string; why: string; pattern?: string }

/** A PatternProblem in one line. */
export function describePatternProblem(p: PatternProblem): string {
  return p.pattern === undefined ? `${p.field}: ${p.why}` : `${p.field} ${JSON.stringify(p.pattern)}: ${p.why}`;
}

/**
 * The first problem with one route's filter patterns (`lists`: its fields and patterns), or the
 * instructions they compile to in all; more than maxRouteProgram is a problem, and so is more
 * than the gateway has left (`left`: maxGatewayProgram less its other routes'), and so are more
 * than maxGatewayPatterns different patterns (`seen`: its other routes', added to), and more
 * rune-range bounds than the gateway has left (`runesLeft`). Stops at the first pattern over a
 * bound: a spec of thousands of large patterns is not all compiled.
 */
export function routePatterns(lists: readonly (readonly [field: string, patterns: readonly string[]])[], field: string, left = maxGatewayProgram,
  seen = new Set<string>(), runesLeft = maxGatewayRunes): { size: number; runes: number } | PatternProblem {
  let size = 0;
  let runes = 0;
  for (const [f, patterns] of lists) {
    for (const [i, p] of patterns.entries()) {
      if (!seen.has(p) && seen.add(p).size > maxGatewayPatterns) {
        return { field: 'spec.routes', why: `the routes' acceptPaths, rejectPaths and rejectMethods hold more than the ${maxGatewayPatterns} different patterns a gateway may have (passed at ${f}[${i}])` };
      }
      const info = regexInfo(p);
      if ('problem' in info) return { field: `${f}[${i}]`, why: info.problem, pattern: p };
      size += info.size;
      runes += info.runes;
      if (runes > runesLeft) {
        return { field: 'spec.routes', why: `the routes' acceptPaths, rejectPaths and rejectMethods hold more than the ${maxGatewayRunes} character-class ranges a gateway's patterns may hold (compiling them blocks the operator every team shares; passed at ${field})` };
      }
      if (size > maxRouteProgram) {
        return { field, why: `its acceptPaths, rejectPaths and rejectMethods compile to more than the ${maxRouteProgram} RE2 instructions a route may have (each request's path is matched against them all)` };
      }
      if (size > left) {
        return { field: 'spec.routes', why: `the routes' acceptPaths, rejectPaths and rejectMethods compile to more than the ${maxGatewayProgram} RE2 instructions a gateway may have (passed at ${field})` };
      }
    }
  }
  return { size, runes };
}
