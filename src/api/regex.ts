// Regular expressions written by teams (acceptPaths, rejectPaths, rejectMethods) run on RE2, a
// linear-time engine with Go's syntax (what kubectl proxy uses): matching is linear in the path.
// Linear is not cheap: a hostile pattern can cost microseconds per character (its DFA builds a
// state per character), so the size of a route's patterns is bounded here, each pattern's DFA
// memory too, and filter-checks.ts decides which checks may run on the event loop. The only
// place such expressions are compiled.
import { RE2JS } from 're2js';
import { oneLine } from '../printable.js';

export interface Regex {
  /** Unanchored search, as Go's regexp.MatchString. */
  test(s: string): boolean;
  /** RE2 instructions it compiled to: a match costs up to about this much per character. */
  readonly size: number;
  /** DFA states it keeps now (at most dfaKept between matches). */
  readonly states: number;
  /** Bytes of DFA states it keeps now (re2js's count), charged to its owner's dfaKeptPerOwner. */
  readonly keptBytes: number;
  /** Drops its DFA states (they are built again as a match needs them). */
  forget(): void;
}

/** re2js's compiled form, as far as it is read here (re2js is pinned in package-lock; unit
 * tests check these are still there). */
interface Compiled { re2Input: { prog: { numInst(): number; getInst(i: number): { runes?: ArrayLike<number> | null } }; lazyDFA: DFA | null; dfa: DFA } }
interface DFA { stateCount: number; memBudget: number; clearCache(): void }

/** Bytes of DFA states a pattern may build during one match (re2js: 8 MiB; past it, the DFA
 * starts again or gives way to the NFA). A hostile pattern builds one per character. */
export const dfaMemory = 32 * 1024;
/** States a pattern keeps between matches (filters a team means use a handful, most none). */
export const dfaKept = 64;
/** Bytes of DFA states all of one owner's patterns keep between matches. Each pattern's 32 KiB
 * times a team's thousands of patterns was ~128 MiB of the shared heap; a pattern a team means
 * keeps 0-18 KiB. Past this, the pattern that has just matched drops its states. */
export const dfaKeptPerOwner = 4 * 1024 * 1024;
/** Bytes of DFA states kept, by owner (owners keeping none are not here). */
const keptByOwner = new Map<string, number>();

/** What one compiled pattern keeps and for whom (held apart from the pattern, for its finalizer). */
interface Account { owner: string | undefined; kept: number }

function charge(acc: Account, bytes: number): void {
  if (acc.owner !== undefined && bytes !== acc.kept) {
    const total = (keptByOwner.get(acc.owner) ?? 0) + bytes - acc.kept;
    if (total > 0) keptByOwner.set(acc.owner, total);
    else keptByOwner.delete(acc.owner);
  }
  acc.kept = bytes;
}

/** Bytes of DFA states `owner`'s patterns keep now. */
export function dfaKeptBy(owner: string): number {
  return keptByOwner.get(owner) ?? 0;
}
const DFAClass = ((RE2JS.compile('a') as unknown as Compiled).re2Input.dfa as object).constructor as new (prog: unknown, maxMem: number) => DFA;

/** The RE2 instructions `re` compiled to. */
function instructions(re: RE2JS): number {
  const n = (re as unknown as Partial<Compiled>).re2Input?.prog?.numInst?.();
  if (typeof n !== 'number') throw new Error('re2js: the compiled program size is not readable (its internals changed)');
  return n;
}

/** The character ranges `re`'s instructions hold: building its DFA reads them all (\p{L} holds
 * 684; a thousand repeats of a large Unicode class, 1.5 million and 145 ms). */
function runeRanges(re: RE2JS): number {
  const prog = (re as unknown as Compiled).re2Input.prog;
  let n = 0;
  for (let i = 0; i < prog.numInst(); i++) n += prog.getInst(i).runes?.length ?? 0;
  return Math.ceil(n / 2); // each range is its two ends (a literal, one)
}

/**
 * At most the code points re2js walks one by one to case-fold `pattern`'s class ranges (those
 * within 0x41-0x1E943, less the shortcut for a range that spans them all; ~25 ns each, before any
 * bound on its program can be checked: `(?i)[B-\x{1E942}]` is 125,000). Counted from the text,
 * high: when the pattern sets i anywhere, every `X-Y` in it (in a class or not) is a range, and a
 * Perl or POSIX class (folded as a whole) is 64. The characters are read as leniently as re2js
 * reads them (any number of hex digits in \x{...}; a `[:` that is no class is two characters).
 */
export function foldedSpan(pattern: string): number {
  if (!/\(\?[A-Za-z-]*i/.test(pattern)) return 0;
  const cs = Array.from(pattern, (c) => c.codePointAt(0)!);
  /** The pattern as characters (code points) and classes (null), escapes read. */
  const items: (number | null)[] = [];
  let n = 0;
  for (let i = 0; i < cs.length;) {
    const c = cs[i]!;
    if (c === 91 && cs[i + 1] === 58) { // [:name:] (or [:^name:]) when it is one
      const end = cs.indexOf(58, i + 2);
      const name = end < 0 ? '' : String.fromCodePoint(...cs.slice(i + 2, end)).replace(/^\^/, '');
      if (end > 0 && cs[end + 1] === 93 && /^[a-z]+$/.test(name)) {
        items.push(null);
        n += 64;
        i = end + 2;
        continue;
      }
    }
    if (c !== 92) {
      items.push(c);
      i++;
      continue;
    }
    const e = cs[i + 1];
    if (e === undefined) break;
    const ch = String.fromCodePoint(e);
    if (ch === 'Q') { // \Q...\E: literal characters
      i += 2;
      while (i < cs.length && !(cs[i] === 92 && cs[i + 1] === 69)) items.push(cs[i++]!);
      i += 2;
    } else if (ch === 'x' && cs[i + 2] === 123) { // \x{HEX}: any number of digits
      const end = cs.indexOf(125, i + 3);
      const hex = String.fromCodePoint(...cs.slice(i + 3, end < 0 ? cs.length : end));
      items.push(/^[0-9A-Fa-f]+$/.test(hex) ? Math.min(parseInt(hex, 16), 0x10ffff) : null);
      i = end < 0 ? cs.length : end + 1;
    } else if (ch === 'x') {
      const hex = String.fromCodePoint(...cs.slice(i + 2, i + 4));
      items.push(/^[0-9A-Fa-f]{2}$/.test(hex) ? parseInt(hex, 16) : null);
      i += 4;
    } else if (ch >= '0' && ch <= '7') {
      let r = e - 48;
      let j = i + 2;
      for (let k = 1; k < 3 && cs[j] !== undefined && cs[j]! >= 48 && cs[j]! <= 55; k++) r = r * 8 + cs[j++]! - 48;
      items.push(r);
      i = j;
    } else if (ch === 'p' || ch === 'P') { // a Unicode class (bounded apart)
      const end = cs.indexOf(125, i + 2);
      i = cs[i + 2] !== 123 ? i + 3 : end < 0 ? cs.length : end + 1;
      items.push(null);
    } else if ('dDsSwW'.includes(ch)) {
      items.push(null);
      n += 64;
      i += 2;
    } else {
      items.push(({ a: 7, f: 12, n: 10, r: 13, t: 9, v: 11 } as Record<string, number>)[ch] ?? e);
      i += 2;
    }
  }
  for (let k = 1; k + 1 < items.length; k++) {
    const lo = items[k - 1];
    const hi = items[k + 1];
    if (items[k] === 45 && lo != null && hi != null && hi >= lo) n += foldWalk(lo, hi);
  }
  return n;
}

/** What re2js's appendFoldedRange walks of lo-hi (its Unicode.MIN_FOLD and MAX_FOLD). */
function foldWalk(lo: number, hi: number): number {
  const min = 0x41;
  const max = 0x1e943;
  if ((lo <= min && hi >= max) || hi < min || lo > max) return 0;
  return Math.min(hi, max) - Math.max(lo, min) + 1;
}

/** The Unicode classes (\p, \P) in a pattern's text: parsing one, case-folded and negated
 * especially, costs up to ~0.5 ms, whatever it compiles to. */
export function unicodeClasses(pattern: string): number {
  let n = 0;
  for (let i = 0; i < pattern.length; i++) {
    if (pattern[i] !== '\\') continue;
    if (pattern[i + 1] === 'p' || pattern[i + 1] === 'P') n++;
    i++; // the escaped character
  }
  return n;
}

/** `re` with its DFA bounded to dfaMemory during a match, and after one to dfaKept states and
 * its owner's share of dfaKeptPerOwner (the owner is set when compileRegex takes it). */
function bounded(re: RE2JS, acc: Account = { owner: undefined, kept: 0 }): Regex & { acc: Account } {
  const inner = (re as unknown as Compiled).re2Input;
  const dfa = (inner.lazyDFA = new DFAClass(inner.prog, dfaMemory));
  const forget = () => {
    dfa.clearCache();
    charge(acc, 0);
  };
  return {
    acc,
    size: instructions(re),
    get states() {
      return dfa.stateCount;
    },
    get keptBytes() {
      return acc.kept;
    },
    forget,
    test(s: string): boolean {
      const found = re.test(s);
      const bytes = dfaMemory - dfa.memBudget;
      if (dfa.stateCount > dfaKept || (acc.owner !== undefined && dfaKeptBy(acc.owner) - acc.kept + bytes > dfaKeptPerOwner)) forget();
      else charge(acc, bytes);
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
  const made = fresh.get(pattern); // regexInfo's, when it checked this pattern just now
  fresh.delete(pattern); // (never matched before it is taken: it keeps no DFA state)
  const re = made ?? bounded(RE2JS.compile(pattern));
  re.acc.owner = owner;
  programs.set(key, new WeakRef(re));
  unused.register(re, { key, acc: re.acc });
  return re;
}

const programs = new Map<string, WeakRef<Regex>>();
/** Patterns regexInfo compiled (with their DFA), not yet taken by compileRegex (a translate, then
 * its apply): each is parsed once, and in the translate's step for its route, not in the apply's
 * one block. As many as one gateway may have; unshared until taken. */
const fresh = new Map<string, Regex & { acc: Account }>();

function compiledFresh(pattern: string): RE2JS {
  const re = RE2JS.compile(pattern);
  if (fresh.size >= maxGatewayPatterns) fresh.delete(fresh.keys().next().value!);
  fresh.set(pattern, bounded(re));
  return re;
}
const unused = new FinalizationRegistry<{ key: string; acc: Account }>(({ key, acc }) => {
  if (programs.get(key)?.deref() === undefined) programs.delete(key);
  charge(acc, 0); // its states went with it
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
/** Character ranges a gateway's patterns may hold in all: building each route's DFA costs ~12 ns
 * a range on the event loop every team shares (50,000: ~0.6 ms; 73 uses of \p{L}). */
export const maxGatewayRanges = 50_000;
/** Unicode classes (\p, \P) a gateway's patterns may name in all (parsing 32: ~16 ms at worst). */
export const maxGatewayUnicodeClasses = 32;
/** Code points of case-insensitive class ranges a gateway's patterns may fold (foldedSpan: ~0.5 ms). */
export const maxGatewayFoldedSpan = 20_000;

/** What a gateway's routes' patterns hold so far: instructions, ranges, Unicode classes, and the
 * different patterns. */
export interface PatternTotals { size: number; ranges: number; classes: number; folded: number; patterns: Set<string> }

export function patternTotals(): PatternTotals {
  return { size: 0, ranges: 0, classes: 0, folded: 0, patterns: new Set() };
}

/**
 * A pattern's program size, or why it does not compile. Remembered per pattern (the same
 * patterns are checked on every reconcile), for the last `remembered` patterns asked about.
 */
export function regexInfo(pattern: string): { size: number; ranges: number } | { problem: string } {
  const known = infos.get(pattern);
  if (known) return known;
  let info: { size: number; ranges: number } | { problem: string };
  const estimate = programEstimate(pattern);
  try {
    // compiling is what costs (about 0.5 µs per instruction, on the event loop): a pattern whose
    // counted repetitions expand far past a route's bound is refused before it is compiled
    info = estimate > maxPatternEstimate
      ? { problem: `its repetitions would compile to about ${estimate} RE2 instructions, more than the ${maxRouteProgram} a route may have` }
      : sizes(compiledFresh(pattern));
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

const infos = new Map<string, { size: number; ranges: number } | { problem: string }>();

function sizes(re: RE2JS): { size: number; ranges: number } {
  return { size: instructions(re), ranges: runeRanges(re) };
}

/** A problem with filter patterns: the field, why, and the pattern when one does not compile. */
export interface PatternProblem { field: string; why: string; pattern?: string }

/** A PatternProblem in one line (the parser's `why` repeats the pattern raw: its control characters are escaped). */
export function describePatternProblem(p: PatternProblem): string {
  return p.pattern === undefined ? `${p.field}: ${p.why}` : `${p.field} ${JSON.stringify(p.pattern)}: ${oneLine(p.why)}`;
}

/**
 * The first problem with one route's filter patterns (`lists`: its fields and patterns), or what
 * they hold, added to `totals` (the gateway's other routes' so far). A problem: more than
 * maxRouteProgram instructions in the route; past a gateway's bound of instructions, different
 * patterns, character ranges or Unicode classes. Stops at the first pattern over a bound (a spec
 * of thousands of large patterns is not all compiled); a Unicode class is counted before its
 * pattern is compiled.
 */
export function routePatterns(lists: readonly (readonly [field: string, patterns: readonly string[]])[], field: string,
  totals: PatternTotals = patternTotals()): { size: number } | PatternProblem {
  const gateway = (what: string) => ({ field: 'spec.routes', why: `the routes' acceptPaths, rejectPaths and rejectMethods ${what} (passed at ${field})` });
  let size = 0;
  let ranges = 0;
  let classes = 0;
  let folded = 0;
  for (const [f, patterns] of lists) {
    for (const [i, p] of patterns.entries()) {
      if (!totals.patterns.has(p) && totals.patterns.add(p).size > maxGatewayPatterns) {
        return { field: 'spec.routes', why: `the routes' acceptPaths, rejectPaths and rejectMethods hold more than the ${maxGatewayPatterns} different patterns a gateway may have (passed at ${f}[${i}])` };
      }
      classes += unicodeClasses(p);
      if (totals.classes + classes > maxGatewayUnicodeClasses) {
        return gateway(`name more than the ${maxGatewayUnicodeClasses} Unicode classes (\\p, \\P) a gateway's patterns may name (parsing them blocks the operator every team shares)`);
      }
      folded += foldedSpan(p);
      if (totals.folded + folded > maxGatewayFoldedSpan) {
        return gateway(`case-fold more than the ${maxGatewayFoldedSpan} code points of class ranges a gateway's patterns may fold (parsing them blocks the operator every team shares)`);
      }
      const info = regexInfo(p);
      if ('problem' in info) return { field: `${f}[${i}]`, why: info.problem, pattern: p };
      size += info.size;
      ranges += info.ranges;
      if (totals.ranges + ranges > maxGatewayRanges) {
        return gateway(`hold more than the ${maxGatewayRanges} character ranges a gateway's patterns may hold (compiling them blocks the operator every team shares)`);
      }
      if (size > maxRouteProgram) {
        return { field, why: `its acceptPaths, rejectPaths and rejectMethods compile to more than the ${maxRouteProgram} RE2 instructions a route may have (each request's path is matched against them all)` };
      }
      if (totals.size + size > maxGatewayProgram) {
        return gateway(`compile to more than the ${maxGatewayProgram} RE2 instructions a gateway may have`);
      }
    }
  }
  totals.size += size;
  totals.ranges += ranges;
  totals.classes += classes;
  totals.folded += folded;
  return { size };
}
