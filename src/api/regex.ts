// Regular expressions written by teams (acceptPaths, rejectPaths, rejectMethods) run on RE2, a
// linear-time engine with Go's syntax (what kubectl proxy uses): no input can make one team's
// expression stall the process. The only place such expressions are compiled.
import { RE2JS } from 're2js';

export interface Regex {
  /** Unanchored search, as Go's regexp.MatchString. */
  test(s: string): boolean;
}

// Compiled programs are immutable and shared: a thousand gateways with the kubectl-proxy default
// filters hold three programs, not three thousand (~15 KiB each). Bounded, oldest out first.
const compiled = new Map<string, Regex>();
const maxCompiled = 4096;

/** Compiles `pattern`; throws with the engine's message when RE2 cannot. */
export function compileRegex(pattern: string): Regex {
  let re = compiled.get(pattern);
  if (!re) {
    re = RE2JS.compile(pattern);
    if (compiled.size >= maxCompiled) compiled.delete(compiled.keys().next().value!);
    compiled.set(pattern, re);
  }
  return re;
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
