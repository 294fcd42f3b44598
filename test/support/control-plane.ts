// A real etcd + kube-apiserver (+ optional kube-controller-manager) on loopback ports, for
// integration tests and the demo. Binaries: KUBEBUILDER_ASSETS, else scripts/build-control-plane.sh.
import { execFileSync, execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, mkdirSync, readdirSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Agent, request } from 'undici';
import { makeCA, makeLeaf, type CertPair } from './certs.js';
import { startProc, freePort, waitFor, type Proc } from './procs.js';

const execFileP = promisify(execFile);
export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

let binDirMemo: string | undefined;
export function binDir(): string {
  if (binDirMemo) return binDirMemo;
  const out = execFileSync(join(repoRoot, 'scripts', 'build-control-plane.sh'), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  binDirMemo = out.trim().split('\n').pop()!;
  return binDirMemo;
}

export interface ControlPlane {
  url: string;
  dir: string;
  kubeconfig: string;
  ca: CertPair;
  admin: CertPair;
  /** PEM of the service-account signing key (tests forge expired tokens with it). */
  saSigningKey: string;
  issuer: string;
  /** With `audit`: the apiserver's audit log (JSON lines, level Metadata for every request). */
  auditLog?: string;
  kubectl(args: string[], input?: string): Promise<string>;
  /** An admin request; body is JSON-encoded; resolves with status and parsed JSON. */
  api(method: string, path: string, body?: unknown, contentType?: string): Promise<{ status: number; body: any }>;
  token(namespace: string, sa: string, audiences: string[], seconds?: number): Promise<string>;
  restartApiserver(): Promise<void>;
  stopApiserver(): Promise<void>;
  startApiserver(): Promise<void>;
  /** SIGSTOP, SIGCONT: the apiserver stops answering (its connections stay open), then goes on.
   * The pause resolves once every thread has stopped: one thread takes a stop signal for the
   * process, and until it has, the others run on (and can answer a request sent meanwhile). */
  pauseApiserver(): Promise<void>;
  resumeApiserver(): void;
  /** Whether every thread of the apiserver is stopped now. */
  apiserverStopped(): boolean;
  startControllerManager(): Promise<void>;
  stop(): Promise<void>;
}

/** `priorityAndFairness`: API Priority and Fairness on (off by default: no test but the chart's
 * FlowSchema's needs it, and it queues the benchmarks' load). `audit`: an audit log (auditLog). */
export async function startControlPlane(opts: { controllerManager?: boolean; priorityAndFairness?: boolean; audit?: boolean } = {}): Promise<ControlPlane> {
  const bins = binDir();
  const dir = mkdtempSync(join(tmpdir(), 'agw-cp-'));
  const certs = join(dir, 'certs');
  mkdirSync(certs);
  const ca = makeCA(certs, 'ca');
  const serving = makeLeaf(certs, ca, 'apiserver', { cn: 'kube-apiserver', dnsNames: ['localhost', 'kubernetes.default.svc'], ips: ['127.0.0.1'] });
  const admin = makeLeaf(certs, ca, 'admin', { cn: 'admin', orgs: ['system:masters'], client: true });
  // how the apiserver reaches nodes (exec, attach, port-forward, logs): a client certificate, and
  // nodes' serving certificates verified against the test CA (test/support/node.ts)
  const kubeletClient = makeLeaf(certs, ca, 'kubelet-client', { cn: 'kube-apiserver-kubelet-client', client: true });
  const sa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const saKey = sa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  writeFileSync(join(certs, 'sa.key'), saKey);
  writeFileSync(join(certs, 'sa.pub'), sa.publicKey.export({ type: 'spki', format: 'pem' }).toString());

  const [etcdPort, peerPort, apiPort] = [await freePort(), await freePort(), await freePort()];
  const procs: Proc[] = [];
  const etcd = startProc(join(bins, 'etcd'), [
    '--name', 'default', '--data-dir', join(dir, 'etcd'),
    '--listen-client-urls', `http://127.0.0.1:${etcdPort}`, '--advertise-client-urls', `http://127.0.0.1:${etcdPort}`,
    '--listen-peer-urls', `http://127.0.0.1:${peerPort}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
    '--initial-cluster', `default=http://127.0.0.1:${peerPort}`, '--unsafe-no-fsync', '--log-level', 'warn',
  ], join(dir, 'etcd.log'));
  procs.push(etcd);

  const url = `https://127.0.0.1:${apiPort}`;
  const issuer = 'https://kubernetes.default.svc.cluster.local';
  const apiArgs = [
    '--etcd-servers', `http://127.0.0.1:${etcdPort}`,
    '--secure-port', String(apiPort), '--bind-address', '127.0.0.1', '--advertise-address', '127.0.0.1',
    '--tls-cert-file', serving.certFile, '--tls-private-key-file', serving.keyFile,
    '--client-ca-file', ca.certFile,
    '--service-account-issuer', issuer,
    '--service-account-key-file', join(certs, 'sa.pub'),
    '--service-account-signing-key-file', join(certs, 'sa.key'),
    '--api-audiences', issuer,
    '--service-cluster-ip-range', '10.0.0.0/24',
    '--authorization-mode', 'RBAC',
    '--endpoint-reconciler-type', 'none',
    `--enable-priority-and-fairness=${opts.priorityAndFairness === true}`,
    '--kubelet-client-certificate', kubeletClient.certFile, '--kubelet-client-key', kubeletClient.keyFile,
    '--kubelet-certificate-authority', ca.certFile, '--kubelet-preferred-address-types', 'InternalIP',
    '--v', '1',
  ];
  const auditLog = opts.audit ? join(dir, 'audit.log') : undefined;
  if (auditLog) {
    writeFileSync(join(dir, 'audit-policy.yaml'), 'apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n');
    apiArgs.push('--audit-policy-file', join(dir, 'audit-policy.yaml'), '--audit-log-path', auditLog, '--audit-log-mode', 'blocking');
  }
  const agent = new Agent({ connect: { ca: ca.cert, cert: admin.cert, key: admin.key } });
  let apiserver: Proc = startProc(join(bins, 'kube-apiserver'), apiArgs, join(dir, 'apiserver.log'));

  const kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(kubeconfig, JSON.stringify({
    apiVersion: 'v1', kind: 'Config', 'current-context': 'test',
    clusters: [{ name: 'test', cluster: { server: url, 'certificate-authority-data': Buffer.from(ca.cert).toString('base64') } }],
    users: [{ name: 'admin', user: { 'client-certificate-data': Buffer.from(admin.cert).toString('base64'), 'client-key-data': Buffer.from(admin.key).toString('base64') } }],
    contexts: [{ name: 'test', context: { cluster: 'test', user: 'admin' } }],
  }));

  const api = async (method: string, path: string, body?: unknown, contentType = 'application/json') => {
    const res = await request(url + path, {
      dispatcher: agent, method: method as any,
      headers: body === undefined ? {} : { 'content-type': contentType },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.body.text();
    let parsed: unknown = text;
    try { parsed = JSON.parse(text); } catch { /* not JSON */ }
    return { status: res.statusCode, body: parsed as any };
  };
  const waitReady = () => waitFor('kube-apiserver /readyz', async () => {
    if (apiserver.child.exitCode !== null) throw new Error(`kube-apiserver exited; see ${apiserver.logFile}`);
    return (await api('GET', '/readyz')).status === 200;
  }, 90_000, 200);

  let kcm: Proc | undefined;
  const cp: ControlPlane = {
    url, dir, kubeconfig, ca, admin, saSigningKey: saKey, issuer, auditLog,
    api,
    async kubectl(args, input) {
      const p = execFileP('kubectl', ['--kubeconfig', kubeconfig, ...args], { maxBuffer: 16 << 20 });
      if (input !== undefined) { p.child.stdin!.end(input); }
      return (await p).stdout;
    },
    async token(namespace, sa, audiences, seconds = 3600) {
      const r = await api('POST', `/api/v1/namespaces/${namespace}/serviceaccounts/${sa}/token`, {
        apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { audiences, expirationSeconds: seconds },
      });
      if (r.status !== 201) throw new Error(`TokenRequest ${namespace}/${sa}: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body.status.token as string;
    },
    async restartApiserver() {
      await cp.stopApiserver();
      await cp.startApiserver();
    },
    async stopApiserver() {
      await apiserver.stop('SIGTERM', 10_000);
    },
    async startApiserver() {
      apiserver = startProc(join(bins, 'kube-apiserver'), apiArgs, join(dir, 'apiserver.log'));
      procs.push(apiserver);
      await waitReady();
    },
    async pauseApiserver() {
      apiserver.child.kill('SIGSTOP');
      await waitFor('every thread of the apiserver stopped', async () => cp.apiserverStopped(), 5_000, 1);
    },
    resumeApiserver() {
      apiserver.child.kill('SIGCONT');
    },
    apiserverStopped() {
      const task = `/proc/${apiserver.child.pid}/task`;
      return readdirSync(task).every((tid) => {
        try {
          return readFileSync(`${task}/${tid}/stat`, 'utf8').split(') ')[1]![0] === 'T';
        } catch {
          return true; // a thread that has gone
        }
      });
    },
    async startControllerManager() {
      if (kcm) return;
      kcm = startProc(join(bins, 'kube-controller-manager'), [
        '--kubeconfig', kubeconfig, '--leader-elect=false', '--controllers', '*',
        '--bind-address', '127.0.0.1', '--secure-port', String(await freePort()),
        '--service-account-private-key-file', join(certs, 'sa.key'), '--root-ca-file', ca.certFile,
        '--use-service-account-credentials=false', '--v', '1',
      ], join(dir, 'controller-manager.log'));
      procs.push(kcm);
    },
    async stop() {
      for (const p of procs.reverse()) await p.stop();
      await agent.close();
      if (!process.env.AGW_KEEP_TEST_DIRS) rmSync(dir, { recursive: true, force: true });
    },
  };
  procs.push(apiserver);
  try {
    await waitReady();
    if (opts.controllerManager) await cp.startControllerManager();
  } catch (err) {
    const tail = (f: string) => { try { return readFileSync(f, 'utf8').split('\n').slice(-30).join('\n'); } catch { return ''; } };
    const msg = `${String(err)}\n--- etcd\n${tail(etcd.logFile)}\n--- apiserver\n${tail(join(dir, 'apiserver.log'))}`;
    await cp.stop().catch(() => {});
    throw new Error(msg);
  }
  return cp;
}

/** The ReferenceGrant CRD from the Gateway API module (downloaded through the Go module proxy). */
export function referenceGrantCRD(version = 'v1.6.3'): string {
  const out = execFileSync('go', ['mod', 'download', '-json', `sigs.k8s.io/gateway-api@${version}`], {
    cwd: tmpdir(), encoding: 'utf8', env: { ...process.env, GOFLAGS: '-mod=mod', GO111MODULE: 'on' },
  });
  return join(JSON.parse(out).Dir, 'config', 'crd', 'standard', 'gateway.networking.k8s.io_referencegrants.yaml');
}

/** The first of the apiserver's audit events (`startControlPlane({ audit: true })`) with this ID at
 * a stage `at` accepts, once written (10 s). */
export function auditEvent(cp: ControlPlane, id: string, at: (stage: string) => boolean = () => true): Promise<any> {
  return waitFor(`audit event ${id}`, async () => readFileSync(cp.auditLog!, 'utf8').split('\n').filter(Boolean)
    .map((l) => JSON.parse(l)).find((e) => e.auditID === id && at(e.stage)), 10_000);
}
