// Helpers over a test control plane: the CRD, gateways, and requests through listeners.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { makeCA, makeLeaf, type CertPair } from './certs.js';
import { repoRoot, type ControlPlane } from './control-plane.js';
import { waitFor } from './procs.js';

const execFileP = promisify(execFile);

export interface KubectlResult { code: number; out: string; err: string }

/** The real kubectl with `args`, its failure as a result (exit code, stderr), not a throw. */
export async function runKubectl(args: string[], env?: NodeJS.ProcessEnv): Promise<KubectlResult> {
  try {
    const r = await execFileP('kubectl', args, { env: env ?? process.env, timeout: 30_000 });
    return { code: 0, out: r.stdout, err: r.stderr };
  } catch (e: any) {
    return { code: typeof e.code === 'number' ? e.code : 1, out: e.stdout ?? '', err: e.stderr ?? String(e) };
  }
}

export async function installCRD(cp: ControlPlane): Promise<void> {
  await cp.kubectl(['apply', '--server-side', '-f', join(repoRoot, 'deploy', 'crds')]);
  await cp.kubectl(['wait', '--for=condition=Established', 'crd/accessgateways.access-gateway.io', '--timeout=60s']);
}

export async function applyYaml(cp: ControlPlane, yaml: string): Promise<void> {
  await cp.kubectl(['apply', '-f', '-'], yaml);
}

export async function getGateway(cp: ControlPlane, ns: string, name: string): Promise<any> {
  const r = await cp.api('GET', `/apis/access-gateway.io/v1alpha1/namespaces/${ns}/accessgateways/${name}`);
  return r.status === 200 ? r.body : undefined;
}

export function condition(gw: any, type: string): any {
  return gw?.status?.conditions?.find((c: any) => c.type === type);
}

/** Waits until the gateway's status describes its current generation, and returns it. */
export async function waitObserved(cp: ControlPlane, ns: string, name: string, timeoutMs = 15_000): Promise<any> {
  return waitFor(`${ns}/${name} observed`, async () => {
    const gw = await getGateway(cp, ns, name);
    const ready = condition(gw, 'Ready');
    return gw && gw.status?.observedGeneration === gw.metadata.generation && ready?.observedGeneration === gw.metadata.generation ? gw : undefined;
  }, timeoutMs);
}

export async function gatewayPort(cp: ControlPlane, ns: string, name: string, timeoutMs = 15_000): Promise<number> {
  const gw = await waitFor(`${ns}/${name} ready`, async () => {
    const g = await getGateway(cp, ns, name);
    return condition(g, 'Ready')?.status === 'True' && g.status.observedGeneration === g.metadata.generation ? g : undefined;
  }, timeoutMs);
  return gw.status.listener.port;
}

export interface CurlResult { status: number; body: string; headers: string }

/** The real curl; `args` come before the URL. */
export async function curl(url: string, args: string[] = []): Promise<CurlResult> {
  const { stdout } = await execFileP('curl', ['-sS', '--max-time', '20', '-D', '-', '-w', '\n%{http_code}', ...args, url], { maxBuffer: 16 << 20 })
    .catch((e) => { throw new Error(`curl ${url}: exit ${e.code}: ${e.stderr}`); });
  const nl = stdout.lastIndexOf('\n');
  const all = stdout.slice(0, nl);
  const split = all.indexOf('\r\n\r\n');
  return { status: Number(stdout.slice(nl + 1)), headers: all.slice(0, split), body: all.slice(split + 4) };
}

export function bearer(token: string): string[] {
  return ['-H', `Authorization: Bearer ${token}`];
}

export const namespaceYaml = (ns: string, sas: string[]) => [
  `apiVersion: v1\nkind: Namespace\nmetadata: {name: ${ns}}`,
  ...sas.map((s) => `apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: ${s}, namespace: ${ns}}`),
].join('\n---\n');

/** A labelled kubernetes.io/tls Secret for a listener on 127.0.0.1/localhost; returns the CA. */
export async function createListenerTLS(cp: ControlPlane, ns: string, name: string): Promise<CertPair> {
  const dir = mkdtempSync(join(cp.dir, 'tls-'));
  const ca = makeCA(dir, 'listener-ca');
  const leaf = makeLeaf(dir, ca, 'listener', { cn: 'access-gateway', dnsNames: ['localhost'], ips: ['127.0.0.1'] });
  await cp.kubectl(['create', 'secret', 'tls', name, '-n', ns, '--cert', leaf.certFile, '--key', leaf.keyFile]);
  await cp.kubectl(['label', 'secret', name, '-n', ns, 'access-gateway.io/listener-tls=true']);
  return ca;
}

/** Writes a kubeconfig that reaches `server` with a bearer token (and a CA, for https). */
export function tokenKubeconfig(file: string, server: string, token: string, opts: { ca?: string; namespace?: string } = {}): string {
  writeFileSync(file, JSON.stringify({
    apiVersion: 'v1', kind: 'Config', 'current-context': 'ctx',
    clusters: [{ name: 'c', cluster: { server, ...(opts.ca ? { 'certificate-authority-data': Buffer.from(opts.ca).toString('base64') } : {}) } }],
    users: [{ name: 'u', user: { token } }],
    contexts: [{ name: 'ctx', context: { cluster: 'c', user: 'u', ...(opts.namespace ? { namespace: opts.namespace } : {}) } }],
  }));
  return file;
}

/** Resolves once nothing accepts connections on 127.0.0.1:port any more. */
export async function waitListenerClosed(port: number, timeoutMs: number): Promise<void> {
  await waitFor(`listener on ${port} closed`, async () => {
    try {
      await fetch(`http://127.0.0.1:${port}/`, { headers: { connection: 'close' } });
      return false;
    } catch {
      return true;
    }
  }, timeoutMs);
}

/** The pod a test host stands for: EndpointSlices name it (targetRef), the operator checks its IPs. */
export const hostPod = (ip: string) => `host-${ip.replaceAll(/[.:]/g, '-')}`;

/** A selector-less Service NAME (port "http" 80) and its EndpointSlice: test hosts at 8080, each
 * endpoint naming its host's pod (backendPods); or `endpoints`, the slice's endpoints as written. */
export function serviceYaml(ns: string, name: string, ips: string[], endpoints?: string): string {
  return `apiVersion: v1
kind: Service
metadata: {name: ${name}, namespace: ${ns}}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ${name}-1, namespace: ${ns}, labels: {kubernetes.io/service-name: ${name}}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: ${endpoints ?? `[${ips.map((ip) => `{addresses: [${ip}], targetRef: {kind: Pod, name: ${hostPod(ip)}}}`).join(', ')}]`}
`;
}

/**
 * A running pod NAME in `ns` with `ip`, as a kubelet would report it (there is none here: the
 * status is written with the harness's admin credentials; teams cannot write pod status). Pods
 * need their ServiceAccount: `default` is created when absent.
 */
export async function runningPod(cp: ControlPlane, ns: string, name: string, ip: string, opts: { hostNetwork?: boolean } = {}): Promise<void> {
  await applyYaml(cp, `apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: default, namespace: ${ns}}\n---\n`
    + `apiVersion: v1\nkind: Pod\nmetadata: {name: ${name}, namespace: ${ns}}\nspec: {nodeName: test-hosts, automountServiceAccountToken: false, hostNetwork: ${opts.hostNetwork === true}, containers: [{name: host, image: test-host}]}\n`);
  const r = await cp.api('PATCH', `/api/v1/namespaces/${ns}/pods/${name}/status`,
    { status: { phase: 'Running', podIP: ip, podIPs: [{ ip }], ...(opts.hostNetwork ? { hostIP: ip, hostIPs: [{ ip }] } : {}) } }, 'application/merge-patch+json');
  if (r.status !== 200) throw new Error(`pod ${ns}/${name} status: ${r.status} ${JSON.stringify(r.body)}`);
}

/** A running pod in `ns` for each test host IP (`hostPod`). */
export async function backendPods(cp: ControlPlane, ns: string, ips: string[]): Promise<void> {
  for (const ip of ips) await runningPod(cp, ns, hostPod(ip), ip);
}

/** serviceYaml applied, with its hosts' pods. */
export async function applyService(cp: ControlPlane, ns: string, name: string, ips: string[]): Promise<void> {
  await backendPods(cp, ns, ips);
  await applyYaml(cp, serviceYaml(ns, name, ips));
}

