// Where the apiserver is and how to prove who we are, found as kubectl finds it: --kubeconfig,
// else the files in KUBECONFIG (merged, the first to set a value wins), else ~/.kube/config,
// else the pod's own service account (in-cluster). A file named with --kubeconfig must exist;
// KUBECONFIG's entries that do not are skipped (client-go's loader does both). Credentials: client certificates, a token or
// token file, an exec plugin (client.authentication.k8s.io ExecCredential); a token file and an
// exec token are read again whenever they may have changed (a projected token rotates).
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { parse } from 'yaml';

export interface ExecConfig {
  command: string;
  args?: string[];
  env?: { name: string; value: string }[];
  apiVersion?: string;
}

/** The apiserver and the operator's own credentials. */
export interface ClusterAccess {
  server: URL;
  ca?: Buffer;
  insecureSkipTLSVerify: boolean;
  tlsServerName?: string;
  cert?: Buffer;
  key?: Buffer;
  /** The Authorization header to send now (a rotating token is read again when due). */
  authorization(): Promise<string | undefined>;
}

export interface LoadOptions {
  env?: NodeJS.ProcessEnv;
  /** The in-cluster service account directory (tests point it elsewhere). */
  serviceAccountDir?: string;
  home?: string;
}

type Named<T> = { name: string } & T;
interface KubeconfigFile {
  'current-context'?: string;
  clusters?: Named<{ cluster?: Record<string, any> }>[];
  users?: Named<{ user?: Record<string, any> }>[];
  contexts?: Named<{ context?: { cluster?: string; user?: string } }>[];
}

const tokenTtlMs = 60_000;

export function loadClusterAccess(file: string | undefined, opts: LoadOptions = {}): ClusterAccess {
  const env = opts.env ?? process.env;
  // named with --kubeconfig: each file must exist (client-go: a missing explicit path is an error)
  if (file) return fromFiles(file.split(':').filter(Boolean), true); // a list, as in KUBECONFIG
  // KUBECONFIG's entries that do not exist are skipped, one entry or several, as client-go does
  const list = (env.KUBECONFIG ?? '').split(':').filter(Boolean);
  if (list.length) return fromFiles(list, false);
  const home = join(opts.home ?? homedir(), '.kube', 'config');
  if (existsSync(home)) return fromFiles([home], true);
  const sa = opts.serviceAccountDir ?? '/var/run/secrets/kubernetes.io/serviceaccount';
  if (env.KUBERNETES_SERVICE_HOST && env.KUBERNETES_SERVICE_PORT && existsSync(join(sa, 'token'))) return inCluster(env, sa);
  throw new Error('no Kubernetes configuration: give --kubeconfig, set KUBECONFIG, create ~/.kube/config, or run in a pod');
}

function inCluster(env: NodeJS.ProcessEnv, dir: string): ClusterAccess {
  const host = env.KUBERNETES_SERVICE_HOST!;
  const server = new URL(`https://${host.includes(':') ? `[${host}]` : host}:${env.KUBERNETES_SERVICE_PORT}`);
  return {
    server, ca: readFileSync(join(dir, 'ca.crt')), insecureSkipTLSVerify: false,
    authorization: tokenFile(join(dir, 'token')),
  };
}

/** A token file, read again at most once a minute (kubelet rotates projected tokens well before expiry). */
function tokenFile(path: string): () => Promise<string | undefined> {
  let cached: { at: number; value: string } | undefined;
  return async () => {
    if (!cached || Date.now() - cached.at > tokenTtlMs) cached = { at: Date.now(), value: `Bearer ${readFileSync(path, 'utf8').trim()}` };
    return cached.value;
  };
}

/** A kubeconfig file's document; undefined if it does not exist and `explicit` is false. Every
 * error is one line that names the file. */
function readKubeconfig(f: string, explicit: boolean): KubeconfigFile | undefined {
  let text: string;
  try {
    text = readFileSync(f, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !explicit) return undefined;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory, not a kubeconfig file'
      : code === 'EACCES' ? 'permission denied' : `cannot read it (${code ?? (err as Error).message})`;
    throw new Error(`${f}: ${why}`);
  }
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (err) {
    // the yaml library's message runs over several lines (with an excerpt): keep its first
    throw new Error(`${f}: not valid YAML: ${String((err as Error).message).split('\n')[0]!.replace(/:\s*$/, '')}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new Error(`${f}: not a kubeconfig (a mapping of clusters, users and contexts)`);
  const d = doc as Record<string, unknown>;
  for (const field of ['clusters', 'users', 'contexts'] as const) {
    const v = d[field];
    if (v === null || v === undefined) continue;
    if (!Array.isArray(v)) throw new Error(`${f}: ${field} is not a list`);
    v.forEach((e, i) => {
      if (e === null || typeof e !== 'object' || Array.isArray(e)) throw new Error(`${f}: ${field}[${i}] is not a mapping`);
    });
  }
  const cur = d['current-context'];
  if (cur !== null && cur !== undefined && typeof cur !== 'string') throw new Error(`${f}: current-context is not a string`);
  return d as KubeconfigFile;
}

function fromFiles(files: string[], explicit: boolean): ClusterAccess {
  // merge as kubectl does: the first file to set a key wins; relative paths are relative to their file
  const contexts = new Map<string, { cluster?: string; user?: string }>();
  const clusters = new Map<string, { v: Record<string, any>; dir: string }>();
  const users = new Map<string, { v: Record<string, any>; dir: string }>();
  let current: string | undefined;
  const missing: string[] = [];
  for (const f of files) {
    const doc = readKubeconfig(f, explicit);
    if (!doc) { missing.push(f); continue; }
    const dir = dirname(f);
    current ??= doc['current-context'] || undefined;
    for (const c of doc.contexts ?? []) if (!contexts.has(c.name)) contexts.set(c.name, c.context ?? {});
    for (const c of doc.clusters ?? []) if (!clusters.has(c.name)) clusters.set(c.name, { v: c.cluster ?? {}, dir });
    for (const u of doc.users ?? []) if (!users.has(u.name)) users.set(u.name, { v: u.user ?? {}, dir });
  }
  const where = files.join(':');
  if (missing.length === files.length) {
    // (still "no current-context", as a kubectl with these files says; the cause after it)
    throw new Error(`${where}: no current-context (${files.length === 1 ? 'no such file' : 'none of these files exists'}; KUBECONFIG's missing files are skipped)`);
  }
  if (!current) throw new Error(`${where}: no current-context`);
  const ctx = contexts.get(current);
  if (!ctx) throw new Error(`${where}: context ${current} not found`);
  const cluster = ctx.cluster ? clusters.get(ctx.cluster) : undefined;
  if (!cluster?.v.server) throw new Error(`${where}: context ${current} names no cluster with a server`);
  const user = ctx.user ? users.get(ctx.user) : undefined;
  const c = cluster.v;
  const u = user?.v ?? {};
  const data = (inline: unknown, path: unknown, dir: string): Buffer | undefined => {
    if (typeof inline === 'string' && inline) return Buffer.from(inline, 'base64');
    if (typeof path === 'string' && path) return readFileSync(resolve(dir, path));
    return undefined;
  };
  if (u['auth-provider']) throw new Error(`${where}: user ${ctx.user}: auth-provider plugins are not supported; use an exec plugin`);
  let authorization: () => Promise<string | undefined>;
  if (typeof u.token === 'string' && u.token) {
    const value = `Bearer ${u.token}`;
    authorization = async () => value;
  } else if (typeof u.tokenFile === 'string' && u.tokenFile) {
    authorization = tokenFile(resolve(user!.dir, u.tokenFile));
  } else if (u.exec) {
    authorization = execToken(u.exec as ExecConfig, user!.dir);
  } else if (typeof u.username === 'string' && u.username) {
    const value = `Basic ${Buffer.from(`${u.username}:${u.password ?? ''}`).toString('base64')}`;
    authorization = async () => value;
  } else {
    authorization = async () => undefined;
  }
  const server = new URL(c.server);
  // requests are made from the root (as the data plane forwards): a prefix would be dropped
  if (server.pathname !== '/' || server.search) {
    throw new Error(`${where}: cluster ${ctx.cluster}: a server URL with a path (${server.pathname}${server.search}) is not supported; give the apiserver's own address`);
  }
  return {
    server,
    ca: data(c['certificate-authority-data'], c['certificate-authority'], cluster.dir),
    insecureSkipTLSVerify: c['insecure-skip-tls-verify'] === true,
    tlsServerName: typeof c['tls-server-name'] === 'string' ? c['tls-server-name'] : undefined,
    cert: user ? data(u['client-certificate-data'], u['client-certificate'], user.dir) : undefined,
    key: user ? data(u['client-key-data'], u['client-key'], user.dir) : undefined,
    authorization,
  };
}

/** An exec credential plugin's token, run again when it expires (or every minute without expiry). */
function execToken(exec: ExecConfig, dir: string): () => Promise<string | undefined> {
  let cached: { until: number; value: string } | undefined;
  return async () => {
    if (cached && Date.now() < cached.until) return cached.value;
    const apiVersion = exec.apiVersion ?? 'client.authentication.k8s.io/v1';
    const env = { ...process.env, ...Object.fromEntries((exec.env ?? []).map((e) => [e.name, e.value])),
      KUBERNETES_EXEC_INFO: JSON.stringify({ apiVersion, kind: 'ExecCredential', spec: { interactive: false } }) };
    const command = exec.command.includes('/') ? resolve(dir, exec.command) : exec.command;
    // the plugin's output holds the token: an error built here never carries it (execFile's
    // error has stdout, stderr and cmd; JSON.parse's quotes the input)
    let status: { token?: unknown; expirationTimestamp?: string };
    try {
      const { stdout } = await promisify(execFile)(command, exec.args ?? [], { env, timeout: 30_000, maxBuffer: 1 << 20 });
      status = JSON.parse(stdout)?.status ?? {};
    } catch (err) {
      const e = err as { code?: unknown; signal?: unknown; name?: string };
      const why = e.name === 'SyntaxError' ? 'its output is not JSON' : `exit ${String(e.code ?? e.signal ?? 'unknown')}`;
      throw new Error(`exec plugin ${exec.command}: ${why}`);
    }
    if (typeof status.token !== 'string' || !status.token) {
      throw new Error(`exec plugin ${exec.command}: no status.token in its ExecCredential (client certificates from exec plugins are not supported)`);
    }
    const exp = Date.parse(status.expirationTimestamp ?? '');
    cached = { until: Number.isFinite(exp) ? exp - 10_000 : Date.now() + tokenTtlMs, value: `Bearer ${status.token}` };
    return cached.value;
  };
}
