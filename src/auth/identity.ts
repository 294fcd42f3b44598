// Who a caller is, as the apiserver's TokenReview says.
import { isDnsLabel, isDnsSubdomain } from '../api/names.js';
export interface CallerIdentity {
  username: string;
  uid: string;
  groups: string[];
  extra: Record<string, string[]>;
}

export type ReviewResult =
  | { authenticated: true; user: CallerIdentity; audiences: string[] }
  | { authenticated: false; error: string };

/** Implemented by the kube layer; throws when the apiserver cannot answer. `namespace` is the
 * gateway's (the TokenReview limiter queues callers by it). */
export interface TokenReviewer {
  /** `namespace`: the gateway's (the limiter's fairness key); `source`: the client's address;
   * `background`: no request waits for it (made only if the limiter has a slot free now). */
  review(token: string, audiences: string[], namespace?: string, source?: string, background?: boolean): Promise<ReviewResult>;
  /** What a review from `address` for `namespace`'s gateway came to: a caller its spec.access
   * names (`admitted`), or not (refused, or another team's): its queue's first lane is for the former. */
  vouch?(namespace: string, address: string, admitted: boolean): void;
}

const saPrefix = 'system:serviceaccount:';

/** The same caller: name, UID, groups and extras (in order) equal. */
export function sameIdentity(a: CallerIdentity, b: CallerIdentity): boolean {
  if (a === b) return true;
  if (a.username !== b.username || a.uid !== b.uid || !sameList(a.groups, b.groups)) return false;
  const ka = Object.keys(a.extra), kb = Object.keys(b.extra);
  return sameList(ka, kb) && ka.every((k) => sameList(a.extra[k]!, b.extra[k] ?? []));
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export function hasServiceAccountPrefix(username: string): boolean {
  return username.startsWith(saPrefix);
}

/**
 * The namespace and name of a service-account username, split as the apiserver splits it
 * (SplitUsername: a namespace that is a DNS label, a name that is a DNS subdomain), or null: the
 * apiserver reads any other name, the prefix included, as a plain user.
 */
export function serviceAccountOf(username: string): { namespace: string; name: string } | null {
  if (!username.startsWith(saPrefix)) return null;
  const [namespace, name, ...rest] = username.slice(saPrefix.length).split(':');
  if (namespace === undefined || name === undefined || rest.length || !isDnsLabel(namespace) || !isDnsSubdomain(name)) return null;
  return { namespace, name };
}

/**
 * The first name of an identity that cannot be forwarded (`group "x" holds a comma`), or null: each
 * as unforwardableName says, and no group with a comma (a backend may split X-Remote-Group on
 * commas; Node joins repeated headers with ", ").
 */
export function unforwardableIdentity(id: CallerIdentity): string | null {
  for (const [what, names] of [['username', [id.username]], ['uid', id.uid ? [id.uid] : []], ['group', id.groups],
    ['extra value', Object.values(id.extra).flat()]] as const) {
    for (const n of names) {
      const why = unforwardableName(n) ?? (what === 'group' && n.includes(',') ? 'holds a comma' : null);
      if (why) return `${what} ${JSON.stringify(n)} ${why}`;
    }
  }
  return null;
}

const nonASCII = /[^\x00-\x7f]/;

/**
 * A name as a header value: its UTF-8 bytes, one character each (Node and undici write header
 * values as latin1, and the apiserver reads the bytes as UTF-8: "é" sent as is would arrive as
 * another name). ASCII is itself.
 */
export function toWire(v: string): string {
  return nonASCII.test(v) ? Buffer.from(v, 'utf8').toString('latin1') : v;
}

/**
 * A header value as the name the apiserver would read from its bytes (Node gives them as latin1),
 * or null when they are not UTF-8 (checked against another name than the one applied otherwise:
 * the bytes of "élice" read as latin1 are "Ã©lice").
 */
export function fromWire(v: string): string | null {
  if (!nonASCII.test(v)) return v;
  const bytes = Buffer.from(v, 'latin1');
  const name = bytes.toString('utf8');
  return Buffer.from(name, 'utf8').equals(bytes) ? name : null;
}

/**
 * Why a name an identity source mapped cannot be forwarded as an Impersonate-* or X-Remote-* value,
 * or null. Empty, surrounding whitespace (the apiserver's header parser trims it, so
 * " system:masters" would arrive as system:masters) and control characters are refused.
 */
export function unforwardableName(name: string): string | null {
  if (!name) return 'is empty';
  if (name !== name.trim()) return 'has surrounding whitespace';
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) return 'holds control characters';
  if (!(name as string & { isWellFormed(): boolean }).isWellFormed()) return 'is not well-formed Unicode (a lone surrogate)';
  return null;
}
