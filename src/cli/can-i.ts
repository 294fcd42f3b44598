// access-gateway can-i: "may this caller make this request through this gateway, and if not, which
// step and rule say no?" Evaluated offline against the gateway's rules (the data plane's own
// admission functions, nothing forwarded), then, for apiserver routes, the apiserver's RBAC with
// a SubjectAccessReview made with the person's kubeconfig.
import { applyDefaults } from '../api/defaults.js';
import type { AccessGateway } from '../api/types.js';
import type { CallerIdentity } from '../auth/identity.js';
import { serviceAccountOf } from '../auth/identity.js';
import { explain, offlineTable, type Explanation } from '../dataplane/explain.js';
import { KubeClient, loadKubeConfig } from '../kube/client.js';
import { subjectAccessReview } from '../kube/access-review.js';
import { silentLogger } from '../observability/logger.js';
import { translate } from '../translate/translate.js';
import { printable } from '../printable.js';
import { flag, parseCommand } from './flags.js';

const canIFlags = {
  gateway: flag.string(),
  as: flag.string(),
  group: flag.list(),
  kubeconfig: flag.optional(),
  output: flag.oneOf(['text', 'json'] as const, 'text'),
};

/** kubectl's verbs, as the request a client would send. */
const verbMethods: Record<string, string> = {
  get: 'GET', list: 'GET', watch: 'GET', create: 'POST', update: 'PUT', patch: 'PATCH', delete: 'DELETE', deletecollection: 'DELETE',
};

export const canIUsage = `access-gateway can-i     --gateway NS/NAME --as USER|system:serviceaccount:NS:NAME [--group G]...
                           [--kubeconfig F] [--output text|json] VERB|METHOD PATH`;

/** Exit 0: yes; 1: no; 3: the gateway says yes and the apiserver's RBAC could not be asked; 2:
 * no answer (bad usage, the gateway not read or not evaluable), never taken for a "no". */
export async function runCanI(argv: string[]): Promise<number> {
  try {
    return await answer(argv);
  } catch (err) {
    process.stderr.write(printable(`access-gateway: ${(err as Error).message}\n`));
    return 2;
  }
}

async function answer(argv: string[]): Promise<number> {
  const { flags: f, args } = parseCommand(argv, canIFlags);
  const [ns, name, ...extra] = f.gateway.split('/');
  if (!ns || !name || extra.length) throw new Error(`can-i: --gateway NAMESPACE/NAME is required\nusage: ${canIUsage}`);
  if (!f.as) throw new Error(`can-i: --as USER (or system:serviceaccount:NS:NAME) is required\nusage: ${canIUsage}`);
  if (args.length !== 2) throw new Error(`can-i: expected VERB|METHOD and PATH\nusage: ${canIUsage}`);
  const [verb, path] = args as [string, string];
  const method = verbMethods[verb] ?? verb.toUpperCase();
  if (!/^[A-Z]{1,16}$/.test(method)) throw new Error(`can-i: ${JSON.stringify(verb)} is neither a kubectl verb nor an HTTP method`);
  if (!path.startsWith('/')) throw new Error(`can-i: PATH must start with / (got ${JSON.stringify(path)})`);
  const url = verb === 'watch' && !/[?&]watch=/.test(path) ? `${path}${path.includes('?') ? '&' : '?'}watch=true` : path;

  const client = await KubeClient.create(loadKubeConfig(f.kubeconfig), silentLogger);
  const gw = await client.request<AccessGateway>('GET', `/apis/access-gateway.io/v1alpha1/namespaces/${encodeURIComponent(ns)}/accessgateways/${encodeURIComponent(name)}`, { what: `AccessGateway ${ns}/${name}` })
    .catch((err) => { throw new Error(`can-i: cannot read AccessGateway ${ns}/${name}: ${(err as Error).message}`); });
  const plan = questionPlan(gw);
  if ('problem' in plan) {
    process.stderr.write(printable(`can-i: AccessGateway ${ns}/${name} cannot be evaluated: ${plan.problem}\n`));
    return 2;
  }
  const e = await explain(offlineTable(plan.plan), caller(f.as, f.group), method, url, {
    reviewRequest: (subject, attrs) => subjectAccessReview(client, subject, attrs),
  }, { errorDetail: true });
  // escaped, as everything printed here that the gateway's spec or the apiserver wrote (in JSON,
  // \uXXXX is the same string)
  process.stdout.write(printable(f.output === 'json' ? `${JSON.stringify(e, null, 2)}\n` : text(e)));
  return e.allowed === true ? 0 : e.allowed === false ? 1 : 3;
}

/** The gateway's plan for questions: the listener (TLS, client CA), the platform's OIDC issuers and
 * the Services' state are not part of a question about rules (the caller is given, not
 * authenticated), so they are taken as they should be (a Service route's backend is not checked). */
function questionPlan(gw: AccessGateway): { plan: NonNullable<ReturnType<typeof translate>['plan']> } | { problem: string } {
  const spec = { ...gw.spec, listener: { ...gw.spec.listener, tls: undefined } };
  const issuers = Object.fromEntries((gw.spec.authentication?.issuers ?? []).map((url) => [url, null]));
  const t = translate(applyDefaults({ ...gw, spec }), { port: { port: 1 }, issuers });
  if (!t.plan) return { problem: t.conditions.filter((c) => c.status === 'False').map((c) => `${c.type}=False ${c.reason}: ${c.message}`).join('; ') };
  for (const r of t.plan.routes) if (r.target.kind === 'service') r.target.problem = null;
  return { plan: t.plan };
}

/** The caller as a token would present it: a service account has its groups; everyone is authenticated. */
function caller(user: string, groups: string[]): CallerIdentity {
  const sa = serviceAccountOf(user);
  const implied = sa ? ['system:serviceaccounts', `system:serviceaccounts:${sa.namespace}`] : [];
  return { username: user, uid: '', groups: [...new Set([...groups, ...implied, 'system:authenticated'])], extra: {} };
}

function text(e: Explanation): string {
  const rows: [string, string, string, string][] = e.steps.map((s) => [s.step, s.allowed === null ? '?' : s.allowed ? 'yes' : 'no', s.field ?? '-', s.message]);
  const w = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i]!.length)));
  return [
    `gateway  ${e.gateway.namespace}/${e.gateway.name}`,
    `caller   ${e.caller.username} [${e.caller.groups.join(', ')}]`,
    `request  ${e.request.method} ${e.request.path}`,
    '',
    ...rows.map((r) => `${r[0].padEnd(w[0]!)}  ${r[1].padEnd(w[1]!)}  ${r[2].padEnd(w[2]!)}  ${r[3]}`),
    '',
    e.allowed === null ? 'unknown' : e.allowed ? 'yes' : 'no',
    '',
  ].join('\n');
}
