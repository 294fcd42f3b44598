// access-gateway kubeconfig: a kubeconfig for reaching a gateway as one of its namespace's service
// accounts, with a client-go exec credential plugin (access-gateway token) that mints a fresh,
// audience-bound token with the TokenRequest API using the person's own kubeconfig. Also runs as
// the kubectl plugin `kubectl access-gateway` (an executable named kubectl-access_gateway).
import { isDnsSubdomain } from '../api/names.js';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { ApiError, KubeClient, loadKubeConfig } from '../kube/client.js';
import { silentLogger } from '../observability/logger.js';
import { flag, parseFlags } from './flags.js';
import { writePrivate } from './private-file.js';

const kubeconfigFlags = {
  gateway: flag.string(),
  'service-account': flag.string(),
  'oidc-issuer': flag.optional(),
  'oidc-client-id': flag.optional(),
  'oidc-client-secret': flag.optional(),
  'oidc-certificate-authority': flag.optional(),
  server: flag.optional(),
  'certificate-authority': flag.optional(),
  audience: flag.optional(),
  'expiration-seconds': flag.int(3600, 600, 86400),
  kubeconfig: flag.optional(),
  output: flag.optional(),
};

/** Set while the token plugin runs: a second one started under it refuses (a loop). */
const pluginMarker = 'ACCESS_GATEWAY_IN_TOKEN_PLUGIN';

const tokenFlags = {
  namespace: flag.string(),
  'service-account': flag.string(),
  audience: flag.string(),
  'expiration-seconds': flag.int(3600, 600, 86400),
  kubeconfig: flag.optional(),
};


export async function runKubeconfig(args: string[]): Promise<number> {
  const f = parseFlags(args, kubeconfigFlags);
  const [ns, name, ...rest] = f.gateway.split('/');
  if (!ns || !name || rest.length) throw new Error('kubeconfig: --gateway NAMESPACE/NAME is required');
  const oidc = f['oidc-issuer'];
  if (oidc && f['service-account']) throw new Error('kubeconfig: --service-account and --oidc-issuer are two ways to log in: give one');
  if (oidc && !f['oidc-client-id']) throw new Error('kubeconfig: --oidc-issuer needs --oidc-client-id');
  if (!oidc && !isDnsSubdomain(f['service-account'])) throw new Error('kubeconfig: --service-account NAME (a service account of the gateway\'s namespace) or --oidc-issuer URL is required');
  // a kubeconfig holding the client secret is a secret: a shell's `> file` would leave it readable by others
  if (f['oidc-client-secret'] && !f.output) throw new Error('kubeconfig: a kubeconfig holding --oidc-client-secret is written only with --output FILE (mode 0600), never to stdout');
  const client = await KubeClient.create(loadKubeConfig(f.kubeconfig), silentLogger);
  const gw = await client.request<any>('GET', `/apis/access-gateway.io/v1alpha1/namespaces/${encodeURIComponent(ns)}/accessgateways/${encodeURIComponent(name)}`, { what: `AccessGateway ${ns}/${name}` })
    .catch((err) => { throw new Error(`kubeconfig: cannot read AccessGateway ${ns}/${name}: ${(err as Error).message}`); });
  const server = f.server ?? gw.status?.listener?.url;
  if (!server) throw new Error(`kubeconfig: AccessGateway ${ns}/${name} has no status.listener.url yet; give --server`);
  if (oidc && !server.startsWith('https://')) throw new Error(`kubeconfig: ${server} is not https: a person's ID token is not sent over plain HTTP`);
  const audience = f.audience ?? gw.spec?.authentication?.audiences?.[0];
  if (!audience) throw new Error(`kubeconfig: AccessGateway ${ns}/${name} names no audience; give --audience`);
  const ca = f['certificate-authority'] ? readFileSync(f['certificate-authority'], 'utf8') : await listenerCA(client, ns, gw.spec?.listener?.tls?.secretName);
  // the plugin runs this same program: it asks the apiserver with the kubeconfig used here (named
  // by its absolute path: not whatever KUBECONFIG says when kubectl runs it, which may be the file
  // written here), or logs the person in at the identity provider
  const source = sourceKubeconfig(f.kubeconfig);
  if (f.output && source?.split(':').includes(resolve(f.output))) throw new Error(`kubeconfig: --output ${f.output} is the kubeconfig the token plugin would read`);
  const plugin = oidc
    ? [resolve(process.argv[1]!), 'oidc-token', '--issuer', oidc, '--client-id', f['oidc-client-id']!,
      ...(f['oidc-certificate-authority'] ? ['--certificate-authority', resolve(f['oidc-certificate-authority'])] : [])]
    : [resolve(process.argv[1]!), 'token', '--namespace', ns, '--service-account', f['service-account'], '--audience', audience,
      '--expiration-seconds', String(f['expiration-seconds']), ...(source ? ['--kubeconfig', source] : [])];
  // a client secret goes in the plugin's environment, not its arguments (which every local user sees)
  const env = f['oidc-client-secret'] ? [{ name: 'ACCESS_GATEWAY_CLIENT_SECRET', value: f['oidc-client-secret'] }] : undefined;
  const who = oidc ? 'oidc' : f['service-account'];
  const ctx = `${ns}-${name}`;
  const config = {
    apiVersion: 'v1', kind: 'Config', 'current-context': ctx,
    clusters: [{ name: ctx, cluster: { server, ...(ca ? { 'certificate-authority-data': Buffer.from(ca).toString('base64') } : {}) } }],
    users: [{ name: `${ctx}-${who}`, user: { exec: {
      apiVersion: 'client.authentication.k8s.io/v1', command: process.execPath, args: plugin, ...(env ? { env } : {}), interactiveMode: 'Never',
      installHint: `access-gateway ${oidc ? 'oidc-token logs you in' : 'token mints the token'}: keep this Node.js and access-gateway where they are, or run access-gateway kubeconfig again`,
    } } }],
    contexts: [{ name: ctx, context: { cluster: ctx, user: `${ctx}-${who}`, namespace: ns } }],
  };
  const text = `${JSON.stringify(config, null, 2)}\n`;
  if (f.output) writePrivate(f.output, text);
  else process.stdout.write(text);
  return 0;
}

/** The kubeconfig this command reads, by absolute path(s) (as kubectl finds it: the flag, else
 * KUBECONFIG, else ~/.kube/config); undefined in a pod (its service account). */
function sourceKubeconfig(flagged: string | undefined): string | undefined {
  if (flagged) return resolve(flagged);
  const list = (process.env.KUBECONFIG ?? '').split(':').filter(Boolean).map((p) => resolve(p));
  if (list.length) return list.join(':');
  const home = join(homedir(), '.kube', 'config');
  return existsSync(home) ? home : undefined;
}

/**
 * The listener's CA from its TLS Secret (ca.crt, else the certificate itself, which a client-go
 * client trusts as given), when the kubeconfig may read it; else none (the system's roots).
 */
async function listenerCA(client: KubeClient, ns: string, secret: string | undefined): Promise<string | undefined> {
  if (!secret) return undefined;
  try {
    const s = await client.request<any>('GET', `/api/v1/namespaces/${ns}/secrets/${encodeURIComponent(secret)}`, { what: `Secret ${ns}/${secret}` });
    const pem = s?.data?.['ca.crt'] ?? s?.data?.['tls.crt'];
    return pem ? Buffer.from(pem, 'base64').toString('utf8') : undefined;
  } catch (err) {
    throw new Error(`kubeconfig: cannot read the listener's CA from Secret ${ns}/${secret} (${(err as Error).message}); give --certificate-authority FILE`);
  }
}

/** The exec credential plugin: prints an ExecCredential with a fresh token; errors never carry one. */
export async function runToken(args: string[]): Promise<number> {
  const f = parseFlags(args, tokenFlags);
  if (!f.namespace || !f['service-account'] || !f.audience) throw new Error('token: --namespace, --service-account and --audience are required');
  // its kubeconfig's own exec plugin would start it again, and again (a kubeconfig that names itself)
  if (process.env[pluginMarker]) throw new Error('token: its kubeconfig runs this plugin again (it reads the kubeconfig it serves); give --kubeconfig YOUR-KUBECONFIG when you make it');
  process.env[pluginMarker] = '1'; // seen by any plugin the kubeconfig read below starts
  const client = await KubeClient.create(loadKubeConfig(f.kubeconfig), silentLogger);
  const path = `/api/v1/namespaces/${encodeURIComponent(f.namespace)}/serviceaccounts/${encodeURIComponent(f['service-account'])}/token`;
  let res: any;
  try {
    res = await client.request<any>('POST', path, {
      body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { audiences: [f.audience], expirationSeconds: f['expiration-seconds'] } },
      what: 'TokenRequest',
    });
  } catch (err) {
    const status = err instanceof ApiError ? ` (HTTP ${err.status})` : '';
    throw new Error(`token: cannot mint a token for ${f.namespace}/${f['service-account']}${status}: ${(err as Error).message}`);
  }
  const st = res?.status ?? {};
  if (!st.token) throw new Error('token: the TokenRequest answer holds no token');
  process.stdout.write(`${JSON.stringify({ apiVersion: 'client.authentication.k8s.io/v1', kind: 'ExecCredential', status: { token: st.token, expirationTimestamp: st.expirationTimestamp } })}\n`);
  return 0;
}
