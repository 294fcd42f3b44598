// The operator as the Helm chart installs it: the chart's rendered RBAC (and admission policy)
// applied to the test control plane, and the real operator running on a token of the chart's own
// ServiceAccount with the chart Deployment's flags — least privilege, never cluster-admin.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { repoRoot, type ControlPlane } from './control-plane.js';
import { applyYaml, namespaceYaml, tokenKubeconfig } from './cluster.js';
import { startOperator, type OperatorProc } from './operator.js';
import { waitFor } from './procs.js';

export const chartRelease = 'access-gateway';
export const chartNamespace = 'access-gateway';

export function helm(): string {
  return process.env.HELM ?? execFileSync(join(repoRoot, 'scripts', 'build-helm.sh'), { encoding: 'utf8' }).trim().split('\n').pop()!;
}

/** The chart rendered with `helm template` (extra `--set` values), as objects. */
export function renderChart(set: string[] = []): any[] {
  const text = execFileSync(helm(), ['template', chartRelease, join(repoRoot, 'charts', 'access-gateway'), '--namespace', chartNamespace,
    ...set.flatMap((s) => ['--set', s])], { encoding: 'utf8' });
  return parseAllDocuments(text).map((d) => d.toJS()).filter(Boolean);
}

/** The Node.js flags the chart gives the operator by default (values.yaml, operator.nodeOptions):
 * the benchmarks run it with them, as it runs in a cluster. */
export function chartNodeOptions(): string[] {
  const values = parse(readFileSync(join(repoRoot, 'charts', 'access-gateway', 'values.yaml'), 'utf8'));
  return String(values.operator.nodeOptions ?? '').split(' ').filter(Boolean);
}

/** The Deployment's NODE_OPTIONS, if it sets one. */
export function chartNodeEnv(rendered: any[]): NodeJS.ProcessEnv {
  const dep = rendered.find((o) => o.kind === 'Deployment');
  const v = (dep.spec.template.spec.containers[0].env ?? []).find((e: any) => e.name === 'NODE_OPTIONS')?.value;
  return v === undefined ? {} : { NODE_OPTIONS: v };
}

/** The Deployment's operator flags, less those the test harness sets (addresses, port range, drain, logs). */
export function chartArgs(rendered: any[]): string[] {
  const dep = rendered.find((o) => o.kind === 'Deployment');
  const args: string[] = dep.spec.template.spec.containers[0].args;
  const local = /^--(admin-address|port-range|listen-address|drain-seconds|log-level|log-format)(=|$)/;
  return args.filter((a) => a !== 'operator' && !local.test(a));
}

/** Each `apiGroup|resource|verb` a ClusterRole grants on resources (non-resource URLs aside). */
export function grantsOf(role: any): string[] {
  return [...new Set<string>(role.rules.flatMap((r: any) => (r.resources ?? []).flatMap((res: string) =>
    (r.apiGroups ?? []).flatMap((g: string) => (r.verbs ?? []).map((v: string) => `${g}|${res}|${v}`)))))];
}

/** The grants of the chart's ClusterRole last installed, per control plane. */
const installedGrants = new WeakMap<ControlPlane, string[]>();

/**
 * Waits until the apiserver's authorizer allows service account `sa` each of `allowed` and denies
 * each of `denied` (grantsOf's form; SubjectAccessReviews, cluster-wide): it reads a written
 * ClusterRole or binding a moment after the write.
 */
export async function grantsInEffect(cp: ControlPlane, sa: { namespace: string; name: string }, allowed: string[], denied: string[]): Promise<void> {
  const all = [...allowed, ...denied];
  let wrong: string[] = [];
  await waitFor('the ClusterRole in effect', async () => {
    const answers = await Promise.all(all.map(async (g) => {
      const [group, res, verb] = g.split('|') as [string, string, string];
      const slash = res.indexOf('/');
      const r = await cp.api('POST', '/apis/authorization.k8s.io/v1/subjectaccessreviews', {
        apiVersion: 'authorization.k8s.io/v1', kind: 'SubjectAccessReview',
        spec: {
          user: `system:serviceaccount:${sa.namespace}:${sa.name}`,
          groups: ['system:serviceaccounts', `system:serviceaccounts:${sa.namespace}`, 'system:authenticated'],
          resourceAttributes: { group, verb, resource: slash < 0 ? res : res.slice(0, slash), subresource: slash < 0 ? undefined : res.slice(slash + 1) },
        },
      });
      if (r.status !== 201) throw new Error(`SubjectAccessReview: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body.status?.allowed === true;
    }));
    wrong = all.filter((g, i) => answers[i] !== allowed.includes(g));
    return wrong.length === 0;
  }, 20_000).catch((e) => { throw new Error(`${e.message}: answered otherwise for ${wrong.join(', ')}`); });
}

/** Applies the chart's objects (no Deployment: the test runs the operator itself) and returns
 * a kubeconfig authenticated only as the chart's ServiceAccount. */
export async function installChart(cp: ControlPlane, rendered: any[], name = 'chart'): Promise<string> {
  await applyYaml(cp, namespaceYaml(chartNamespace, []));
  const objs = rendered.filter((o) => o.kind !== 'Deployment' && !['ServiceMonitor', 'PrometheusRule'].includes(o.kind));
  await cp.kubectl(['apply', '--server-side', '--force-conflicts', '--field-manager', 'chart-test', '-f', '-'], objs.map((o) => stringify(o)).join('---\n'));
  const sa = rendered.find((o) => o.kind === 'ServiceAccount');
  const saNs = sa.metadata.namespace ?? chartNamespace;
  // an operator started before the authorizer reads the role would meet the previous one
  const want = grantsOf(rendered.find((o) => o.kind === 'ClusterRole' && o.metadata.name === chartRelease));
  const before = installedGrants.get(cp) ?? [];
  await grantsInEffect(cp, { namespace: saNs, name: sa.metadata.name }, want, before.filter((g) => !want.includes(g)));
  installedGrants.set(cp, want);
  const token = await cp.token(saNs, sa.metadata.name, [cp.issuer]);
  return tokenKubeconfig(join(cp.dir, `${name}.kubeconfig`), cp.url, token, { ca: cp.ca.cert });
}

/** The real operator, as the chart's ServiceAccount with the chart's flags (plus `args`). */
export async function startChartOperator(cp: ControlPlane, opts: { set?: string[]; args?: string[]; name?: string; portRange?: [number, number] } = {}): Promise<OperatorProc & { kubeconfig: string; rendered: any[] }> {
  const name = opts.name ?? 'chart-operator';
  const rendered = renderChart(opts.set);
  const kubeconfig = await installChart(cp, rendered, name);
  const op = await startOperator({ ...cp, kubeconfig }, {
    logName: `${name}.log`, env: { ...process.env, ...chartNodeEnv(rendered), POD_NAMESPACE: chartNamespace, POD_NAME: name },
    args: [...chartArgs(rendered), ...(opts.args ?? [])], portRange: opts.portRange,
  });
  return Object.assign(op, { kubeconfig, rendered });
}

/** One ready "replica" of the chart's operator: a Pod matching the Deployment's selector, its
 * status set as a kubelet would (there is none here), so gateways are exposed in the cluster. */
export async function readyReplica(cp: ControlPlane, rendered: any[], ip = '198.18.255.2'): Promise<void> {
  const dep = rendered.find((o) => o.kind === 'Deployment');
  await applyYaml(cp, namespaceYaml(chartNamespace, ['default'])); // no controller-manager here to make it
  await applyYaml(cp, `apiVersion: v1
kind: Pod
metadata: {name: replica-0, namespace: ${chartNamespace}, labels: ${JSON.stringify(dep.spec.selector.matchLabels)}}
spec: {containers: [{name: operator, image: operator}]}`);
  await cp.api('PATCH', `/api/v1/namespaces/${chartNamespace}/pods/replica-0/status`, {
    status: { podIP: ip, podIPs: [{ ip }], conditions: [{ type: 'Ready', status: 'True' }] },
  }, 'application/merge-patch+json');
}
