// "Why was I denied?": one request through the gateway's admission steps, each with its verdict
// and the rule that decided, without forwarding anything or counting metrics; then, for apiserver
// routes, the question the apiserver's RBAC will be asked (a SubjectAccessReview). Served on
// the listener for the caller itself (/.well-known/access-gateway/can-i) and by `access-gateway
// can-i` offline; both run the same functions as admission.
import type { OutgoingHttpHeaders } from 'node:http';
import { fromWire, serviceAccountOf, type CallerIdentity } from '../auth/identity.js';
import { describeAttributes, requestAttributes, type RequestAttributes, type RequestReviewer } from '../auth/request-info.js';
import { AgwError, type Step } from '../errors.js';
import { accessRefusal, findRoute, routeCheck, targetOf, type Checked } from './admission.js';
import type { FilterClient } from './filter-checks.js';
import { PoolRegistry } from './endpoints.js';
import { RouteTable, type CompiledRoute } from './route-table.js';
import { createMetrics } from '../observability/metrics.js';
import { silentLogger } from '../observability/logger.js';
import type { ApiserverTarget, GatewayPlan } from '../translate/plan.js';

export interface StepVerdict {
  step: Step | 'rbac';
  /** null: not asked (no reviewer, or the apiserver did not answer). */
  allowed: boolean | null;
  /** The spec field (rule) that decided, when one did. */
  field?: string;
  message: string;
}

export interface Explanation {
  kind: 'AccessGatewayReview';
  apiVersion: 'access-gateway.io/v1alpha1';
  gateway: { namespace: string; name: string };
  caller: { username: string; groups: string[] };
  request: { method: string; path: string };
  /** Every step allowed the request; null: the gateway would, and RBAC was not answered. */
  allowed: boolean | null;
  route?: string;
  steps: StepVerdict[];
}

const refused = (err: AgwError, step: Step): StepVerdict =>
  ({ step: err.step ?? step, allowed: false, ...(err.field ? { field: err.field } : {}), message: err.message });

type Explained = { explanation: Explanation; rbac?: { subject: CallerIdentity; attrs: RequestAttributes } };

/** The gateway's own steps for METHOD URL as `id`; `rbac` is what to ask the apiserver next, if
 * anything. `later`: the route's filters may run on the filter thread (a promise then). */
export function explainGateway(t: RouteTable, id: CallerIdentity, method: string, url: string): Explained;
export function explainGateway(t: RouteTable, id: CallerIdentity, method: string, url: string, later: boolean, client?: FilterClient): Explained | Promise<Explained>;
export function explainGateway(t: RouteTable, id: CallerIdentity, method: string, url: string, later = false, client?: FilterClient): Explained | Promise<Explained> {
  const steps: StepVerdict[] = [];
  const e: Explanation = {
    kind: 'AccessGatewayReview', apiVersion: 'access-gateway.io/v1alpha1',
    gateway: { namespace: t.plan.namespace, name: t.plan.name },
    caller: { username: id.username, groups: id.groups }, request: { method, path: url }, allowed: false, steps,
  };
  const done = (v: StepVerdict) => { steps.push(v); return { explanation: e }; };
  const target = targetOf(url);
  if (target instanceof AgwError) return done(refused(target, 'request'));
  const denied = accessRefusal(t, id);
  if (denied) return done(refused(denied, 'access'));
  const rules = t.policy.explain(id).matching;
  steps.push({ step: 'access', allowed: true, field: `spec.access[${rules[0]}]`, message: `${rules.map((i) => `spec.access[${i}]`).join(', ')} name${rules.length === 1 ? 's' : ''} the caller` });
  const found = findRoute(t, id, method, target.path);
  if (found instanceof AgwError) return done(refused(found, 'route'));
  const route = found.route;
  e.route = route.plan.name;
  steps.push({ step: 'route', allowed: true, field: route.field, message: `route ${route.plan.name} (${describeRoute(route)}) serves ${method} ${found.path}` });
  const rest = (checked: Checked): Explained => {
    if (checked instanceof AgwError) return done(refused(checked, 'filter'));
    const t2 = route.plan.target;
    if (t2.kind === 'service') {
      e.allowed = true;
      return done({ step: 'filter', allowed: true, message: `forwarded to Service ${t2.namespace}/${t2.name} as ${checked.upstream}` });
    }
    const accepted = checked.accepted!;
    steps.push({ step: 'filter', allowed: true, field: accepted.field,
      message: `${checked.upstream} is accepted by ${accepted.field} ${JSON.stringify(accepted.pattern)}; no rejectPaths or rejectMethods match` });
    e.allowed = true;
    return { explanation: e, rbac: { subject: apiserverSubject(t, id, route), attrs: requestAttributes(method, checked.upstream, target.query) } };
  };
  const checked = routeCheck(t, id, route, method, found.path, later ? 'later' : 'now', client);
  return checked instanceof Promise ? checked.then(rest) : rest(checked);
}

/** The gateway's steps, then the apiserver's RBAC through `reviewer` (absent: not asked).
 * `errorDetail`: say why a review failed (the CLI's own credentials; never on a listener). */
export async function explain(t: RouteTable, id: CallerIdentity, method: string, url: string, reviewer?: RequestReviewer,
  opts: { errorDetail?: boolean; client?: FilterClient } = {}): Promise<Explanation> {
  const { explanation: e, rbac } = await explainGateway(t, id, method, url, true, opts.client);
  if (!rbac) return e;
  const question = `${rbac.subject.username} may ${describeAttributes(rbac.attrs)}`;
  if (!reviewer) {
    e.steps.push({ step: 'rbac', allowed: null, message: `not asked (this process makes no SubjectAccessReviews): whether ${question}` });
    e.allowed = null;
    return e;
  }
  try {
    const v = await reviewer.reviewRequest(rbac.subject, rbac.attrs, t.plan.namespace);
    e.steps.push({ step: 'rbac', allowed: v.allowed, message: `the apiserver says ${v.allowed ? 'yes' : 'no'}: ${question}${v.reason ? ` (${v.reason})` : ''}` });
    e.allowed = v.allowed;
  } catch (err) {
    const why = opts.errorDetail ? (err as Error).message : 'the apiserver did not answer a SubjectAccessReview';
    e.steps.push({ step: 'rbac', allowed: null, message: `not answered (${why}): whether ${question}` });
    e.allowed = null;
  }
  return e;
}

function describeRoute(r: CompiledRoute): string {
  const t = r.plan.target;
  return t.kind === 'apiserver'
    ? `${r.field}: apiserver, identity ${t.identity}${t.identity === 'ServiceAccount' ? ` ${t.serviceAccountName}` : ''}`
    : `${r.field}: Service ${t.namespace}/${t.name} port ${t.port}`;
}

/** Who the apiserver will see for this caller on an apiserver route: the caller itself on a
 * Passthrough route, else what the gateway's Impersonate-* headers for it say (the table's own, so --audit-extras is taken as it is), read
 * as the apiserver reads them. */
function apiserverSubject(t: RouteTable, id: CallerIdentity, route: CompiledRoute): CallerIdentity {
  // (Passthrough sends the caller's own token: the apiserver sees whom it names, in
  // system:authenticated, which an OIDC issuer's claims do not name)
  if ((route.plan.target as ApiserverTarget).identity === 'Passthrough') {
    return id.groups.includes('system:authenticated') ? id : { ...id, groups: [...id.groups, 'system:authenticated'] };
  }
  const h: OutgoingHttpHeaders = {};
  t.impersonate(h, id, route);
  return impersonatedSubject(h);
}

const values = (v: OutgoingHttpHeaders[string]): string[] => (v === undefined ? [] : Array.isArray(v) ? v : [String(v)]).map((s) => fromWire(s) ?? s);

/** The user the apiserver's impersonation filter makes of these headers: a service account named
 * without groups gets its account's two; everyone but system:anonymous gets system:authenticated
 * (unless it has system:unauthenticated). */
export function impersonatedSubject(h: OutgoingHttpHeaders): CallerIdentity {
  const username = values(h['impersonate-user'])[0] ?? '';
  let groups = values(h['impersonate-group']);
  const sa = serviceAccountOf(username);
  if (sa && !groups.length) groups = ['system:serviceaccounts', `system:serviceaccounts:${sa.namespace}`];
  const wanted = username === 'system:anonymous' ? 'system:unauthenticated' : groups.includes('system:unauthenticated') ? '' : 'system:authenticated';
  if (wanted && !groups.includes(wanted)) groups = [...groups, wanted];
  const extra: Record<string, string[]> = {};
  for (const [k, v] of Object.entries(h)) {
    if (k.startsWith('impersonate-extra-')) extra[decodeURIComponent(k.slice('impersonate-extra-'.length))] = values(v);
  }
  return { username, uid: values(h['impersonate-uid'])[0] ?? '', groups, extra };
}

/** A gateway's route table for questions only (`access-gateway can-i`): it serves nothing, so its
 * metrics, pools and token reviewer are throwaway; authentication is not part of the question. */
export function offlineTable(plan: GatewayPlan, auditExtras = true): RouteTable {
  return RouteTable.build({ ...plan, auth: { ...plan.auth, mode: 'TokenReview' } }, {
    auditExtras,
    apiserver: undefined as never, // never called: nothing is forwarded
    reviewer: { review: () => Promise.reject(new Error('offline: no token reviews')) },
    log: silentLogger, accessLog: () => ({ write: () => {} }), pools: new PoolRegistry(), metrics: createMetrics(),
  });
}
