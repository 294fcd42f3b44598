// What the apiserver's authorizer will be asked about a request: the attributes its RequestInfo
// factory reads from the method and path (k8s.io/apiserver endpoints/request), for a
// SubjectAccessReview that asks the same question ahead of time.

import { createHash } from 'node:crypto';
import type { CallerIdentity } from './identity.js';
import type { Verdict } from './impersonation.js';

/** Asks the apiserver whether `subject` may make a request (a SubjectAccessReview); `namespace`
 * is the gateway's (fair queueing). Throws when it cannot answer. */
export interface RequestReviewer {
  reviewRequest(subject: CallerIdentity, attrs: RequestAttributes, namespace: string): Promise<Verdict>;
}

export interface ResourceAttributes {
  verb: string;
  group: string;
  version: string;
  resource: string;
  subresource?: string;
  namespace?: string;
  name?: string;
}

export type RequestAttributes =
  | { resourceAttributes: ResourceAttributes }
  | { nonResourceAttributes: { path: string; verb: string } };

const verbs: Record<string, string> = { POST: 'create', GET: 'get', HEAD: 'get', PUT: 'update', PATCH: 'patch', DELETE: 'delete' };
/** Subresources of a namespace itself (/api/v1/namespaces/NS/status), not namespaced resources. */
const namespaceSubresources = new Set(['status', 'finalize']);

/** The attributes of METHOD PATH?QUERY (path decoded, as the gateway forwards it). */
export function requestAttributes(method: string, path: string, query = ''): RequestAttributes {
  const nonResource = { nonResourceAttributes: { path, verb: method.toLowerCase() } };
  let parts = path.split('/').filter((p) => p !== '');
  let group: string;
  if (parts[0] === 'api' && parts.length >= 2) {
    group = '';
    parts = parts.slice(1);
  } else if (parts[0] === 'apis' && parts.length >= 3) {
    group = parts[1]!;
    parts = parts.slice(2);
  } else {
    return nonResource;
  }
  const version = parts.shift()!;
  let verb = verbs[method.toUpperCase()] ?? method.toLowerCase();
  if (parts[0] === 'watch') {
    verb = 'watch';
    parts = parts.slice(1);
  }
  if (!parts.length) return nonResource; // /api/v1, /apis/apps/v1: discovery
  let namespace: string | undefined;
  if (parts[0] === 'namespaces' && parts.length > 1) {
    namespace = parts[1];
    if (parts.length > 2 && !namespaceSubresources.has(parts[2]!)) parts = parts.slice(2);
  }
  let [resource, name, subresource] = parts as [string, string?, string?];
  const params = new URLSearchParams(query.startsWith('?') ? query.slice(1) : query);
  if (name === undefined) {
    if (verb === 'get') {
      // as the apiserver converts ?watch= to a bool: anything but "0" and "false" (any case) is true
      const watch = params.get('watch');
      verb = watch !== null && watch !== '0' && watch.toLowerCase() !== 'false' ? 'watch' : 'list';
      // and a field selector requiring metadata.name names the object asked about
      const selected = nameSelected(params.get('fieldSelector'));
      if (selected !== undefined) name = selected;
    }
    if (verb === 'delete') verb = 'deletecollection';
  }
  return {
    resourceAttributes: {
      verb, group, version, resource,
      ...(subresource !== undefined ? { subresource } : {}),
      ...(namespace !== undefined ? { namespace } : {}),
      ...(name !== undefined ? { name } : {}),
    },
  };
}

/** The name a field selector requires exactly (`metadata.name=X` or `==X`, any of its terms), when
 * it may be a path segment: as the apiserver's RequestInfo sets it for a list or watch. */
function nameSelected(selector: string | null): string | undefined {
  if (!selector) return undefined;
  for (const term of selector.split(',')) {
    const m = /^\s*metadata\.name\s*==?\s*(.*?)\s*$/.exec(term);
    if (!m || m[1]!.startsWith('=')) continue;
    const name = m[1]!;
    return name !== '' && name !== '.' && name !== '..' && !/[/%]/.test(name) ? name : undefined;
  }
  return undefined;
}

/** "list pods in team-a", "get /healthz": the question in words. */
export function describeAttributes(a: RequestAttributes): string {
  if ('nonResourceAttributes' in a) return `${a.nonResourceAttributes.verb} ${a.nonResourceAttributes.path}`;
  const r = a.resourceAttributes;
  const what = `${r.resource}${r.subresource ? `/${r.subresource}` : ''}${r.group ? `.${r.group}` : ''}`;
  return `${r.verb} ${what}${r.name ? ` ${r.name}` : ''}${r.namespace ? ` in namespace ${r.namespace}` : ''}`;
}

interface Answer { until: number; verdict: Promise<Verdict> }

/** Remembers answers (not failures) for `ttlMs` by subject and question, apart for each gateway
 * namespace: one team's questions cannot evict another's answers, nor learn from a fast answer
 * what the other asked. At most `maxPerNamespace` answers each; the oldest go first. */
export class CachingRequestReviewer implements RequestReviewer {
  /** Per namespace, answers in the order they were made: all live `ttlMs`, so expired ones lead. */
  private readonly namespaces = new Map<string, Map<string, Answer>>();
  private nextSweep = 0;

  constructor(private readonly reviewer: RequestReviewer, private readonly ttlMs = 10_000, private readonly maxPerNamespace = 1024,
    private readonly now: () => number = Date.now) {}

  reviewRequest(subject: CallerIdentity, attrs: RequestAttributes, namespace: string): Promise<Verdict> {
    // hashed: a question may name a path of up to 16 KiB
    const key = createHash('sha256').update(JSON.stringify([subject.username, subject.uid, subject.groups, subject.extra, attrs])).digest('base64');
    const now = this.now();
    if (now >= this.nextSweep) this.sweep(now);
    let answers = this.namespaces.get(namespace);
    const hit = answers?.get(key);
    if (hit && hit.until > now) return hit.verdict;
    if (!answers) this.namespaces.set(namespace, (answers = new Map()));
    answers.delete(key); // an expired answer made again goes to the back
    this.trim(answers, now, this.maxPerNamespace - 1);
    const verdict = this.reviewer.reviewRequest(subject, attrs, namespace);
    const entry = { until: now + this.ttlMs, verdict };
    answers.set(key, entry);
    verdict.catch(() => {
      if (answers.get(key) !== entry) return;
      answers.delete(key);
      if (answers.size === 0 && this.namespaces.get(namespace) === answers) this.namespaces.delete(namespace);
    });
    return verdict;
  }

  /** Answers held, over all namespaces, and the namespaces that hold any. */
  get size(): { answers: number; namespaces: number } {
    let n = 0;
    for (const a of this.namespaces.values()) n += a.size;
    return { answers: n, namespaces: this.namespaces.size };
  }

  /** Drops expired answers, and the oldest past `max`. */
  private trim(answers: Map<string, Answer>, now: number, max: number): void {
    for (const [k, a] of answers) {
      if (a.until > now && answers.size <= max) return;
      answers.delete(k);
    }
  }

  /** Once a TTL: forgets expired answers everywhere, and namespaces left with none. */
  private sweep(now: number): void {
    this.nextSweep = now + this.ttlMs;
    for (const [ns, answers] of this.namespaces) {
      this.trim(answers, now, this.maxPerNamespace);
      if (answers.size === 0) this.namespaces.delete(ns);
    }
  }
}
