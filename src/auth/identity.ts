// Who a caller is, as the apiserver's TokenReview says.
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
  review(token: string, audiences: string[], namespace?: string): Promise<ReviewResult>;
}

const saPrefix = 'system:serviceaccount:';

/** The namespace and name of a service-account username, or null. */
export function serviceAccountOf(username: string): { namespace: string; name: string } | null {
  if (!username.startsWith(saPrefix)) return null;
  const [namespace, name, ...rest] = username.slice(saPrefix.length).split(':');
  if (!namespace || !name || rest.length) return null;
  return { namespace, name };
}
