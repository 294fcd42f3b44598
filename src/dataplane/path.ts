// The request path in one canonical form, decoded once as the apiserver decodes it: routing,
// grants and filters all read that form, and the path sent upstream encodes exactly it. Also
// element-wise prefixes (Gateway API PathPrefix) and kubectl proxy's path/method filters.
import { textKey } from '../api/pem.js';
import { compileRegex, type Regex } from '../api/regex.js';

/** Longest request path accepted (414 beyond): bounds the work any one request can cause. */
export const maxPathLength = 4096;

export type CanonicalPath = { path: string; encoded: string } | { problem: string; tooLong?: true };

// Characters a path may carry unencoded (RFC 3986 pchar and "/"), as Go's url.PathEscape keeps them.
const plain = /^[A-Za-z0-9\-._~!$&'()*+,;=:@/]*$/;
const unsafe = /%(2f|5c|00|25)/i;
// a dot segment with parameters (`..;x`) counts too: Tomcat and Spring drop `;…` and then resolve it
const dotOrEmpty = /\/\/|\/\.\.?(\/|;|$)/;
// eslint-disable-next-line no-control-regex
const control = /[\x00-\x1f\x7f\\]/;
// a segment's `;` parameters, which Tomcat, Jetty, Spring and Undertow drop before routing
const params = /;[^/]*/g;

/**
 * The path decoded once, and its canonical encoding to forward; or why it is refused: `.`/`..`
 * segments (also with `;` parameters), empty segments (`//`, also once `;` parameters are dropped), backslashes and control characters, also percent-encoded;
 * encoded slashes; an encoded `%` (double encoding, which other hops may decode again); malformed
 * percent-encoding or UTF-8. What passes reads the same to the gateway and the apiserver.
 */
export function canonicalPath(raw: string): CanonicalPath {
  if (!raw.startsWith('/')) return { problem: 'path must start with /' };
  if (raw.length > maxPathLength) return { problem: `path longer than ${maxPathLength} characters`, tooLong: true };
  if (plain.test(raw)) {
    if (dotOrEmpty.test(raw)) return { problem: "'//', '.' or '..' segment in path" };
    if (emptyWithoutParams(raw)) return { problem: "'//' in path once its ';' parameters are dropped" };
    return { path: raw, encoded: raw };
  }
  if (/[^\x21-\x7e]/.test(raw)) return { problem: 'space or non-ASCII character in path (percent-encode it)' };
  if (unsafe.test(raw)) return { problem: 'encoded slash, backslash, NUL or percent sign in path' };
  let path: string;
  try {
    path = decodeURIComponent(raw);
  } catch {
    return { problem: 'malformed percent-encoding in path' };
  }
  if (control.test(path)) return { problem: 'backslash or control character in path' };
  if (dotOrEmpty.test(path)) return { problem: "'//', '.' or '..' segment in path (after decoding)" };
  if (emptyWithoutParams(path)) return { problem: "'//' in path once its ';' parameters are dropped (after decoding)" };
  return { path, encoded: encodePath(path) };
}

/** `path` as servers that drop `;` parameters read it (`/admin;x/users` is their `/admin/users`):
 * routing must choose the same route for both forms. */
export function withoutParams(path: string): string {
  return path.replace(params, '');
}

function emptyWithoutParams(path: string): boolean {
  return path.includes(';') && withoutParams(path).includes('//');
}

/** Percent-encodes what a path may not carry plainly (UTF-8), keeping every pchar and "/". */
export function encodePath(path: string): string {
  if (plain.test(path)) return path;
  let out = '';
  for (const ch of path) {
    if (plain.test(ch)) out += ch;
    else for (const b of Buffer.from(ch, 'utf8')) out += '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

/** A prefix in the form element-wise matching uses: without trailing slashes ("/" becomes ""). */
export function normalizePrefix(prefix: string): string {
  let end = prefix.length;
  while (end > 0 && prefix.charCodeAt(end - 1) === 47 /* / */) end--;
  return prefix.slice(0, end);
}

/** Does `path` lie under the normalized `prefix`, element by element? (/a: /a, /a/b; not /ab) */
export function underPrefix(path: string, prefix: string): boolean {
  if (prefix === '') return true;
  return path.startsWith(prefix) && (path.length === prefix.length || path.charCodeAt(prefix.length) === 47);
}

/** `path` (under `from`) with `from` replaced by `to`; both normalized. */
export function replacePrefix(path: string, from: string, to: string): string {
  return to + path.slice(from.length) || '/';
}

/** A route's filter patterns (RE2, Go syntax). */
export interface FilterSpec { acceptPaths: string[]; rejectPaths: string[]; rejectMethods: string[] }
/** Why a filter refused a request, and the field of the pattern that did. */
export interface FilterRefusal { why: string; field: string }
/** The acceptPaths pattern that let a request through. */
export interface FilterPass { accepted: { field: string; pattern: string } }

/** Methods whose rejectMethods verdict a filter remembers, at most (Node's parser knows 35). */
const rememberedMethods = 64;

/** kubectl proxy's filter: reject paths, then reject methods, then accept paths (RE2, unanchored search). */
export class PathFilter {
  private readonly accept: Regex[];
  private readonly rejectPaths: Regex[];
  private readonly rejectMethods: Regex[];
  /** By rejectMethods pattern: it names no upper-case letter (it is tried on the lower-case method too). */
  private readonly lowerOnly: boolean[];
  /** The rejectMethods pattern (index, or -1) refusing each method seen: a verdict depends on the method alone. */
  private readonly methodVerdicts = new Map<string, number>();
  /** RE2 instructions of all its patterns: checking a path costs up to this much per character. */
  readonly size: number;
  /** Its patterns, as one string: two filters with the same key give the same verdicts. */
  readonly key: string;
  private keyDigest: string | undefined;

  /** `owner`: the team (gateway namespace) whose routes may share compiled programs; `field`:
   * where the spec holds the patterns (spec.routes[N].apiserver), named in refusals. */
  constructor(readonly spec: FilterSpec, readonly owner: string, readonly field = 'apiserver') {
    const compile = (p: string) => compileRegex(p, owner);
    this.accept = spec.acceptPaths.map(compile);
    this.rejectPaths = spec.rejectPaths.map(compile);
    this.rejectMethods = spec.rejectMethods.map(compile);
    // (escapes aside: \A, \Q…\E, \S, \pL name no letter of a method)
    this.lowerOnly = spec.rejectMethods.map((p) => !/[A-Z]/.test(p.replace(/\\[pP]\{[^}]*\}|\\[pP][A-Za-z]|\\./g, '')));
    this.size = [...this.accept, ...this.rejectPaths, ...this.rejectMethods].reduce((n, r) => n + r.size, 0);
    this.key = JSON.stringify([spec.acceptPaths, spec.rejectPaths, spec.rejectMethods]);
  }

  /** Its key, hashed when long (textKey): what the filter thread keeps it by (a key may be ~135,000
   * characters of escaped patterns; 256 of them kept were 66 MiB of its heap). Made on first use:
   * only the event loop's filters are sent. */
  get digest(): string {
    return (this.keyDigest ??= textKey(this.key));
  }

  /** Why the request is rejected and by which pattern, or the acceptPaths pattern that lets it pass. */
  check(method: string, path: string): FilterRefusal | FilterPass {
    let i = this.rejectPaths.findIndex((r) => r.test(path));
    if (i >= 0) return this.refusal(`path ${path} is rejected by`, 'rejectPaths', i);
    i = this.methodVerdicts.get(method) ?? this.rejectedMethod(method);
    if (i >= 0) return this.refusal(`method ${method} is rejected by`, 'rejectMethods', i);
    i = this.accept.findIndex((r) => r.test(path));
    if (i < 0) return { why: `path ${path} is not accepted by any of ${this.field}.acceptPaths`, field: `${this.field}.acceptPaths` };
    return { accepted: { field: `${this.field}.acceptPaths[${i}]`, pattern: this.spec.acceptPaths[i]! } };
  }

  /** Drops its patterns' DFA states (the filter thread keeps none between checks). */
  forget(): void {
    for (const r of [...this.accept, ...this.rejectPaths, ...this.rejectMethods]) r.forget();
  }

  /** The first rejectMethods pattern matching `method` as Node gives it (upper case), or, for a
   * pattern with no upper-case letter, in lower case; or -1. RE2 is case-sensitive and the CRD
   * admits "delete", which would never match DELETE; a pattern that names upper-case letters is
   * taken as written (`^[^G]` rejects all but GET, not "get" too). (A mixed-case pattern,
   * "Delete", matches neither; compiling the patterns with (?i) instead would fold their class
   * ranges, work the bounds checked in translate do not count.) Remembered per method: a route's
   * requests test the patterns once per method, not each time. */
  private rejectedMethod(method: string): number {
    const upper = method.toUpperCase();
    const lower = method.toLowerCase();
    const i = this.rejectMethods.findIndex((r, k) => r.test(upper) || (this.lowerOnly[k]! && r.test(lower)));
    if (this.methodVerdicts.size < rememberedMethods) this.methodVerdicts.set(method, i);
    return i;
  }

  private refusal(what: string, list: 'rejectPaths' | 'rejectMethods', i: number): FilterRefusal {
    const field = `${this.field}.${list}[${i}]`;
    return { why: `${what} ${field} ${JSON.stringify(this.spec[list][i])}`, field };
  }
}
