// Regular expressions written by teams (acceptPaths, rejectPaths, rejectMethods) run on RE2, a
// linear-time engine with Go's syntax (what kubectl proxy uses): no input can make one team's
// expression stall the process. The only place such expressions are compiled.
import { RE2JS } from 're2js';

export interface Regex {
  /** Unanchored search, as Go's regexp.MatchString. */
  test(s: string): boolean;
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
  const re = RE2JS.compile(pattern);
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
  try {
    RE2JS.compile(pattern);
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}
