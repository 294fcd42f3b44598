// Regular expressions written by teams (acceptPaths, rejectPaths, rejectMethods) run on RE2, a
// linear-time engine with Go's syntax (what kubectl proxy uses): no input can make one team's
// expression stall the process. The only place such expressions are compiled.
import { RE2JS } from 're2js';

export interface Regex {
  /** Unanchored search, as Go's regexp.MatchString. */
  test(s: string): boolean;
}

/**
 * Compiles `pattern`; throws with the engine's message when RE2 cannot. Each call makes its own
 * program: a compiled RE2 keeps a match cache it fills and resets while matching, so a program
 * shared between teams' routes would let one team's requests slow another's.
 */
export function compileRegex(pattern: string): Regex {
  return RE2JS.compile(pattern);
}

/** Why `pattern` does not compile, or null. */
export function regexProblem(pattern: string): string | null {
  try {
    compileRegex(pattern);
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}
