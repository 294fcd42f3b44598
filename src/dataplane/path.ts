// Canonical-path check and kubectl proxy's path/method filters.

const maxDecodes = 3;

/**
 * Why a path is not canonical, or null. Refuses `.`/`..` segments, empty segments (`//`),
 * backslashes and NUL, also when percent-encoded (once or several times), and encoded slashes.
 */
export function nonCanonical(path: string): string | null {
  if (!path.startsWith('/')) return 'path must start with /';
  let p = path;
  for (let i = 0; i <= maxDecodes; i++) {
    if (/%2f|%5c|%00/i.test(p)) return 'encoded slash, backslash or NUL in path';
    if (p.includes('\\') || p.includes('\0')) return 'backslash or NUL in path';
    if (/\/\/|\/\.\.?(\/|$)/.test(p)) return "'//', '.' or '..' segment in path";
    if (!p.includes('%')) return null;
    let next: string;
    try {
      next = decodeURIComponent(p);
    } catch {
      return 'malformed percent-encoding in path';
    }
    if (next === p) return null;
    p = next;
  }
  return 'path is percent-encoded too many times';
}

/** kubectl proxy's filter: reject paths, then reject methods, then accept paths (regex search). */
export class PathFilter {
  private readonly accept: RegExp[];
  private readonly rejectPaths: RegExp[];
  private readonly rejectMethods: RegExp[];

  constructor(spec: { acceptPaths: string[]; rejectPaths: string[]; rejectMethods: string[] }) {
    this.accept = spec.acceptPaths.map((s) => new RegExp(s));
    this.rejectPaths = spec.rejectPaths.map((s) => new RegExp(s));
    this.rejectMethods = spec.rejectMethods.map((s) => new RegExp(s));
  }

  /** Why the request is rejected, or null when it may pass. */
  check(method: string, path: string): string | null {
    if (this.rejectPaths.some((r) => r.test(path))) return `path ${path} is rejected by this route's rejectPaths`;
    if (this.rejectMethods.some((r) => r.test(method))) return `method ${method} is rejected by this route's rejectMethods`;
    if (!this.accept.some((r) => r.test(path))) return `path ${path} is not accepted by this route's acceptPaths`;
    return null;
  }
}
