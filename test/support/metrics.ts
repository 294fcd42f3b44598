// Reading the operator's /metrics as a real scraper does (--metrics-auth kubernetes): a service
// account bound to a ClusterRole that allows `get` on the non-resource URL /metrics (the rule of
// the chart's <release>-metrics-reader), its token (the apiserver's audience, like a Prometheus
// pod's) as the bearer.
import { request } from 'undici';
import type { ControlPlane } from './control-plane.js';

const ns = 'agw-monitoring';
const readers = new WeakMap<ControlPlane, Promise<string>>();

/** The ClusterRole a scraper needs (the same rule as the chart's metrics-reader). */
export const metricsReaderRole = (name: string) => `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: ${name}}
rules:
  - nonResourceURLs: [/metrics]
    verbs: [get]
`;

/** Creates (once per control plane) the service account agw-monitoring/NAME bound to `clusterRole` and returns a fresh token of it. */
export async function metricsReaderToken(cp: ControlPlane, name = 'prometheus', clusterRole = 'test-metrics-reader'): Promise<string> {
  await cp.kubectl(['apply', '-f', '-'], `apiVersion: v1
kind: Namespace
metadata: {name: ${ns}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: ${name}, namespace: ${ns}}
---
${clusterRole === 'test-metrics-reader' ? `${metricsReaderRole(clusterRole)}---\n` : ''}apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: ${clusterRole}-${name}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: ${clusterRole}}
subjects: [{kind: ServiceAccount, name: ${name}, namespace: ${ns}}]
`);
  return cp.token(ns, name, []); // no audiences: the apiserver's own
}

/** GET /metrics of an operator's admin port with a metrics-reader token; throws unless 200. */
export async function scrapeMetrics(cp: ControlPlane, adminPort: number): Promise<string> {
  let token = readers.get(cp);
  if (!token) {
    token = metricsReaderToken(cp);
    readers.set(cp, token);
    token.catch(() => readers.delete(cp));
  }
  const r = await request(`http://127.0.0.1:${adminPort}/metrics`, { headers: { authorization: `Bearer ${await token}` } });
  const text = await r.body.text();
  if (r.statusCode !== 200) throw new Error(`GET /metrics: ${r.statusCode} ${text.slice(0, 200)}`);
  return text;
}
