// access-gateway kubeconfig: a kubeconfig for reaching a gateway as one of its namespace's service
// accounts, with a client-go exec credential plugin (access-gateway token) that mints a fresh,
// audience-bound token with the TokenRequest API using the person's own kubeconfig. Also runs as
// the kubectl plugin `kubectl access-gateway` (an executable named kubectl-access_gateway).
import { isDnsSubdomain } from '../api/names.js';
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { ApiError, KubeClient, loadKubeConfig } from '../kube/client.js';
import { silentLogger } from '../observability/logger.js';
import { flag, parseFlags } from './flags.js';

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
  const client = await KubeClient.create(loadKubeConfig(f.kubeconfig), silentLogger);
  const gw = await client.request<any>('GET', `/apis/access-gateway.io/v1alpha1/namespaces/${ns}/accessgateways/${name}`, { what: `AccessGateway ${ns}/${name}` })
    .catch((err) => { throw new Error(`kubeconfig: cannot read AccessGateway ${ns}/${name}: ${(err as Error).message}`); });
  const server = f.server ?? gw.status?.listener?.url;
  if (!server) throw new Error(`kubeconfig: AccessGateway ${ns}/${name} has no status.listener.url yet; give --server`);
  if (oidc && !server.startsWith('https://')) throw new Error(`kubeconfig: ${server} is not https: a person's ID token is not sent over plain HTTP`);
  const audience = f.audience ?? gw.spec?.authentication?.audiences?.[0];
  if (!audience) throw new Error(`kubeconfig: AccessGateway ${ns}/${name} names no audience; give --audience`);
  const ca = f['certificate-authority'] ? readFileSync(f['certificate-authority'], 'utf8') : await listenerCA(client, ns, gw.spec?.listener?.tls?.secretName);
  // the plugin runs this same program: it asks the apiserver with the kubeconfig used here, or
  // logs the person in at the identity provider
  const plugin = oidc
    ? [resolve(process.argv[1]!), 'oidc-token', '--issuer', oidc, '--client-id', f['oidc-client-id']!,
      ...(f['oidc-client-secret'] ? ['--client-secret', f['oidc-client-secret']] : []),
      ...(f['oidc-certificate-authority'] ? ['--certificate-authority', resolve(f['oidc-certificate-authority'])] : [])]
    : [resolve(process.argv[1]!), 'token', '--namespace', ns, '--service-account', f['service-account'], '--audience', audience,
      '--expiration-seconds', String(f['expiration-seconds']), ...(f.kubeconfig ? ['--kubeconfig', resolve(f.kubeconfig)] : [])];
  const who = oidc ? 'oidc' : f['service-account'];
  const ctx = `${ns}-${name}`;
  const config = {
    apiVersion: 'v1', kind: 'Config', 'current-context': ctx,
    clusters: [{ name: ctx, cluster: { server, ...(ca ? { 'certificate-authority-data': Buffer.from(ca).toString('base64') } : {}) } }],
    users: [{ name: `${ctx}-${who}`, user: { exec: {
      apiVersion: 'client.authentication.k8s.io/v1', command: process.execPath, args: plugin, interactiveMode: 'Never',
      installHint: `access-gateway ${oidc ? 'oidc-token logs you in' : 'token mints the token'}: keep this Node.js and access-gateway where they are, or run access-gateway kubeconfig again`,
    } } }],
    contexts: [{ name: ctx, context: { cluster: ctx, user: `${ctx}-${who}`, namespace: ns } }],
  };
  const text = `${JSON.stringify(config, null, 2)}\n`;
  if (f.output) writeFileSync(f.output, text, { mode: 0o600 });
  else process.stdout.write(text);
  return 0;
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
