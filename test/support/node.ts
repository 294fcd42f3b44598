// A node for the tests: agw-test-node (test/node, built by scripts/build-test-node.sh) serves the
// kubelet's streaming endpoints on loopback, registered as a Node the apiserver streams to.
// Pods bound to it are marked Running; their containers are local processes.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeLeaf } from './certs.js';
import { repoRoot, type ControlPlane } from './control-plane.js';
import { freePort, startProc, waitFor, type Proc } from './procs.js';

let binary: string | undefined;
export function testNodeBinary(): string {
  binary ??= execFileSync(join(repoRoot, 'scripts', 'build-test-node.sh'), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
    .trim().split('\n').pop()!;
  return binary;
}

export interface TestContainer {
  name: string;
  /** The main process (started on the first attach or logs request). */
  command?: string[];
  stdin?: boolean;
  tty?: boolean;
}

export interface TestNode {
  name: string;
  /** Where the containers' logs are, and the working directory of their processes. */
  dir: string;
  proc: Proc;
  /** Creates a pod bound to this node and marks it Running. */
  runPod(namespace: string, name: string, containers?: TestContainer[]): Promise<void>;
  stop(): Promise<void>;
}

export async function startNode(cp: ControlPlane, name = 'node-a'): Promise<TestNode> {
  const dir = join(cp.dir, name);
  mkdirSync(dir, { recursive: true });
  const serving = makeLeaf(dir, cp.ca, 'serving', { cn: name, ips: ['127.0.0.1'] });
  const port = await freePort();
  const proc = startProc(testNodeBinary(), [
    '--listen', `127.0.0.1:${port}`, '--tls-cert', serving.certFile, '--tls-key', serving.keyFile,
    '--client-ca', cp.ca.certFile, '--dir', dir,
    '--apiserver', cp.url, '--apiserver-ca', cp.ca.certFile, '--apiserver-cert', cp.admin.certFile, '--apiserver-key', cp.admin.keyFile,
  ], join(dir, 'node.log'));
  await waitFor(`${name} listening`, async () => {
    if (proc.child.exitCode !== null) throw new Error(`agw-test-node exited; see ${proc.logFile}`);
    return readFileSync(proc.logFile, 'utf8').includes('listening');
  });
  await must(cp.api('POST', '/api/v1/nodes', { apiVersion: 'v1', kind: 'Node', metadata: { name } }), 201);
  const now = new Date().toISOString();
  await must(cp.api('PATCH', `/api/v1/nodes/${name}/status`, {
    status: {
      addresses: [{ type: 'InternalIP', address: '127.0.0.1' }, { type: 'Hostname', address: name }],
      daemonEndpoints: { kubeletEndpoint: { Port: port } },
      conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'agw-test-node', lastHeartbeatTime: now, lastTransitionTime: now }],
    },
  }, 'application/merge-patch+json'), 200);

  return {
    name, dir, proc,
    async runPod(namespace, pod, containers = [{ name: 'main', command: ['sleep', 'infinity'] }]) {
      const sa = await cp.api('GET', `/api/v1/namespaces/${namespace}/serviceaccounts/default`);
      if (sa.status === 404) {
        await must(cp.api('POST', `/api/v1/namespaces/${namespace}/serviceaccounts`, { metadata: { name: 'default' } }), 201);
      }
      await must(cp.api('POST', `/api/v1/namespaces/${namespace}/pods`, {
        apiVersion: 'v1', kind: 'Pod', metadata: { name: pod },
        spec: {
          nodeName: name, automountServiceAccountToken: false,
          containers: containers.map((c) => ({ name: c.name, image: 'agw-test-node/local', command: c.command, stdin: c.stdin, tty: c.tty })),
        },
      }), 201);
      const started = new Date().toISOString();
      await must(cp.api('PATCH', `/api/v1/namespaces/${namespace}/pods/${pod}/status`, {
        status: {
          phase: 'Running', podIP: '10.1.0.10', podIPs: [{ ip: '10.1.0.10' }], hostIP: '127.0.0.1', startTime: started,
          conditions: [{ type: 'Ready', status: 'True', lastTransitionTime: started }],
          containerStatuses: containers.map((c) => ({
            name: c.name, image: 'agw-test-node/local', imageID: '', ready: true, restartCount: 0, started: true,
            state: { running: { startedAt: started } },
          })),
        },
      }, 'application/merge-patch+json'), 200);
    },
    async stop() {
      await proc.stop();
    },
  };
}

async function must(p: Promise<{ status: number; body: any }>, status: number): Promise<void> {
  const res = await p;
  if (res.status !== status) throw new Error(`expected ${status}, got ${res.status}: ${JSON.stringify(res.body)}`);
}
