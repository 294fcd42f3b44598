// Interactive sessions through a gateway's TLS listener with the unmodified kubectl: exec, attach,
// cp, port-forward and logs -f, over WebSocket and SPDY, to a node the apiserver streams to
// (agw-test-node: the kubelet's streaming endpoints, test/support/node.ts). The chart's
// least-privilege operator impersonates the caller, so the caller's own RBAC decides.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server } from 'node:net';
import { join } from 'node:path';
import { startControlPlane, type ControlPlane } from '../support/control-plane.js';
import { startChartOperator } from '../support/chart-operator.js';
import { applyYaml, createListenerTLS, gatewayPort, installCRD, namespaceYaml, tokenKubeconfig } from '../support/cluster.js';
import { startNode, type TestNode } from '../support/node.js';

let cp: ControlPlane;
let op: Awaited<ReturnType<typeof startChartOperator>>;
let node: TestNode;
let follow: { child: ReturnType<typeof spawn>; out: string; started: number };
const kubeconfigs: Record<string, string> = {};

interface Run { code: number | null; out: Buffer; err: string }

/** The real kubectl as `who` through gateway `gw`; `input` is its stdin. */
function kubectl(who: string, args: string[], opts: { input?: Buffer | string; spdy?: boolean; timeoutMs?: number } = {}): Promise<Run> {
  const env = { ...process.env, ...(opts.spdy ? { KUBECTL_REMOTE_COMMAND_WEBSOCKETS: 'false', KUBECTL_PORT_FORWARD_WEBSOCKETS: 'false' } : {}) };
  const child = spawn('kubectl', ['--kubeconfig', kubeconfigs[who]!, ...args], { env });
  const out: Buffer[] = [];
  let err = '';
  child.stdout.on('data', (d: Buffer) => out.push(d));
  child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  child.stdin.end(opts.input ?? '');
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
  return new Promise((resolve) => child.on('close', (code) => {
    clearTimeout(timer);
    resolve({ code, out: Buffer.concat(out), err });
  }));
}

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const protocols = [['WebSocket', false], ['SPDY', true]] as const;

before(async () => {
  cp = await startControlPlane();
  await installCRD(cp);
  await applyYaml(cp, namespaceYaml('team-a', ['dev', 'viewer']));
  await applyYaml(cp, namespaceYaml('team-b', ['intruder']));
  // dev may open every kind of session in team-a; viewer may only read pods and logs
  await cp.kubectl(['create', 'role', 'pod-reader', '-n', 'team-a', '--verb=get,list,watch', '--resource=pods,pods/log']);
  await cp.kubectl(['create', 'role', 'pod-sessions', '-n', 'team-a', '--verb=create,get', '--resource=pods/exec,pods/attach,pods/portforward']);
  await cp.kubectl(['create', 'rolebinding', 'readers', '-n', 'team-a', '--role=pod-reader', '--serviceaccount=team-a:dev', '--serviceaccount=team-a:viewer']);
  await cp.kubectl(['create', 'rolebinding', 'sessions', '-n', 'team-a', '--role=pod-sessions', '--serviceaccount=team-a:dev']);
  op = await startChartOperator(cp);
  node = await startNode(cp);
  await node.runPod('team-a', 'app');
  await node.runPod('team-a', 'ticker', [{ name: 'main', command: ['sh', '-c', 'i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 1; done'] }]);
  for (const p of ['echo-ws', 'echo-spdy']) {
    await node.runPod('team-a', p, [{ name: 'main', stdin: true, command: ['sh', '-c', 'while read l; do echo "got $l"; [ "$l" = bye ] && exit 0; done'] }]);
  }
  const ca = await createListenerTLS(cp, 'team-a', 'shell-tls');
  // `shell` allows sessions (rejectPaths: []); `plain` keeps the default rejectPaths
  for (const [name, reject] of [['shell', 'rejectPaths: []'], ['plain', '']] as const) {
    await applyYaml(cp, `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: ${name}, namespace: team-a}
spec:
  listener: {tls: {secretName: shell-tls}}
  authentication: {audiences: [gw]}
  access: [{serviceAccounts: [{namespace: team-a, name: dev}, {namespace: team-a, name: viewer}]}]
  routes:
    - {name: kube-api, pathPrefix: /, timeoutSeconds: 5, apiserver: {identity: Impersonate${reject ? ', ' + reject : ''}}}
`);
    const server = `https://127.0.0.1:${await gatewayPort(cp, 'team-a', name)}`;
    for (const sa of ['dev', 'viewer']) {
      kubeconfigs[`${sa}@${name}`] = tokenKubeconfig(join(cp.dir, `${sa}-${name}.kubeconfig`), server, await cp.token('team-a', sa, ['gw']), { namespace: 'team-a', ca: ca.cert });
    }
  }
  // team-b may open sessions through its own gateway, on its own pods only
  const caB = await createListenerTLS(cp, 'team-b', 'shell-tls');
  await applyYaml(cp, `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: shell, namespace: team-b}
spec:
  listener: {tls: {secretName: shell-tls}}
  authentication: {audiences: [gw]}
  access: [{serviceAccounts: [{namespace: team-b, name: intruder}]}]
  routes:
    - {name: kube-api, pathPrefix: /, apiserver: {identity: Impersonate, rejectPaths: []}}
`);
  kubeconfigs['intruder@shell'] = tokenKubeconfig(join(cp.dir, 'intruder.kubeconfig'), `https://127.0.0.1:${await gatewayPort(cp, 'team-b', 'shell')}`,
    await cp.token('team-b', 'intruder', ['gw']), { namespace: 'team-b', ca: caB.cert });
  // logs -f runs beside every other test, well past the route's 5 s timeout (checked last)
  const child = spawn('kubectl', ['--kubeconfig', kubeconfigs['viewer@shell']!, 'logs', '-f', 'ticker']);
  follow = { child, out: '', started: Date.now() };
  child.stdout!.on('data', (d: Buffer) => { follow.out += d.toString(); });
}, { timeout: 240_000 });

after(async () => {
  follow?.child.kill();
  await node?.stop();
  await op?.stop();
  await cp?.stop();
});

for (const [protocol, spdy] of protocols) {
  test(`kubectl exec over ${protocol}: stdin, stdout, stderr and the exit code come through`, async () => {
    const r = await kubectl('dev@shell', ['exec', 'app', '--', 'sh', '-c', 'echo out; echo err >&2; exit 3'], { spdy });
    assert.equal(r.code, 3, r.err);
    assert.equal(r.out.toString(), 'out\n');
    assert.match(r.err, /^err$/m);
    const input = randomBytes(2 << 20);
    const i = await kubectl('dev@shell', ['exec', '-i', 'app', '--', 'sha256sum'], { spdy, input });
    assert.equal(i.code, 0, i.err);
    assert.equal(i.out.toString().split(' ')[0], sha(input));
  });
}

for (const [protocol, spdy] of protocols) {
  test(`kubectl cp both ways over ${protocol}: 3 MiB, the same checksums`, async () => {
    const dir = join(cp.dir, `cp-${protocol}`);
    mkdirSync(dir);
    const data = randomBytes(3 << 20);
    writeFileSync(join(dir, 'up.bin'), data);
    const inPod = join(node.dir, `cp-${protocol}`);
    mkdirSync(inPod);
    const up = await kubectl('dev@shell', ['cp', join(dir, 'up.bin'), `app:${inPod}/in-pod.bin`], { spdy });
    assert.equal(up.code, 0, up.err);
    assert.equal(sha(readFileSync(join(inPod, 'in-pod.bin'))), sha(data));
    const down = await kubectl('dev@shell', ['cp', `app:${inPod}/in-pod.bin`, join(dir, 'down.bin')], { spdy });
    assert.equal(down.code, 0, down.err);
    assert.equal(sha(readFileSync(join(dir, 'down.bin'))), sha(data));
  });

  test(`kubectl attach -i over ${protocol}: input reaches the container's main process, its output comes back`, async () => {
    const pod = spdy ? 'echo-spdy' : 'echo-ws';
    const r = await kubectl('dev@shell', ['attach', '-i', pod], { spdy, input: 'hello\nbye\n' });
    assert.equal(r.code, 0, r.err);
    assert.match(r.out.toString(), /got hello\ngot bye\n/);
  });

  test(`kubectl port-forward over ${protocol}: 4 concurrent connections, 10 MiB each way, the same checksums`, async () => {
    const echo: Server = createServer((s) => s.pipe(s));
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
    const remote = (echo.address() as AddressInfo).port;
    const env = { ...process.env, ...(spdy ? { KUBECTL_PORT_FORWARD_WEBSOCKETS: 'false' } : {}) };
    const pf = spawn('kubectl', ['--kubeconfig', kubeconfigs['dev@shell']!, 'port-forward', 'pod/app', `:${remote}`], { env });
    let pfOut = '', pfErr = '';
    pf.stderr.on('data', (d: Buffer) => { pfErr += d.toString(); });
    try {
      const local = await new Promise<number>((resolve, reject) => {
        pf.stdout.on('data', (d: Buffer) => {
          pfOut += d.toString();
          const m = /Forwarding from 127\.0\.0\.1:(\d+)/.exec(pfOut);
          if (m) resolve(Number(m[1]));
        });
        pf.once('exit', () => reject(new Error(`port-forward exited: ${pfErr}`)));
      });
      const size = 10 << 20;
      await Promise.all([0, 1, 2, 3].map(() => new Promise<void>((resolve, reject) => {
        const data = randomBytes(size);
        const got: Buffer[] = [];
        let n = 0;
        const s = connect(local, '127.0.0.1', () => s.write(data));
        s.on('data', (d: Buffer) => {
          got.push(d);
          n += d.length;
          if (n >= size) {
            s.destroy();
            try { assert.equal(sha(Buffer.concat(got)), sha(data)); resolve(); } catch (e) { reject(e); }
          }
        });
        s.on('error', reject);
      })));
    } finally {
      pf.kill();
      echo.close();
    }
  });
}

test('sessions are refused by the default rejectPaths, with the rule named, before the apiserver is asked', async () => {
  const cases: [string[], RegExp][] = [
    [['exec', 'app', '--', 'true'], /rejectPaths\[0\] "\^\/api\/\.\*\/pods\/\.\*\/exec"/],
    [['attach', 'echo-ws'], /rejectPaths\[1\] "\^\/api\/\.\*\/pods\/\.\*\/attach"/],
    [['port-forward', 'pod/app', ':9'], /rejectPaths\[2\] "\^\/api\/\.\*\/pods\/\.\*\/portforward"/],
  ];
  for (const [args, why] of cases) {
    for (const [, spdy] of protocols) {
      const r = await kubectl('dev@plain', args, { spdy, timeoutMs: 20_000 });
      assert.notEqual(r.code, 0, `${args.join(' ')}: ${r.out}`);
      assert.match(r.err, why, `${args.join(' ')}: ${r.err}`);
    }
  }
});

test("the caller's own RBAC decides: a viewer may not exec, another team may not reach team-a's pods", async () => {
  for (const [, spdy] of protocols) {
    const v = await kubectl('viewer@shell', ['exec', 'app', '--', 'true'], { spdy });
    assert.notEqual(v.code, 0);
    assert.match(v.err, /User "system:serviceaccount:team-a:viewer" cannot create resource "pods\/exec"/, v.err);
    const b = await kubectl('intruder@shell', ['exec', '-n', 'team-a', 'app', '--', 'true'], { spdy });
    assert.notEqual(b.code, 0);
    assert.match(b.err, /User "system:serviceaccount:team-b:intruder" cannot (create|get) resource "pods(\/exec)?"/, b.err);
    const pf = await kubectl('intruder@shell', ['port-forward', '-n', 'team-a', 'pod/app', ':9'], { spdy, timeoutMs: 20_000 });
    assert.notEqual(pf.code, 0);
    assert.match(pf.err, /team-b:intruder" cannot (get|create) resource "pods(\/portforward)?"/, pf.err);
  }
});

test('kubectl logs -f streams on past the route timeout and every idle timeout', async () => {
  const seconds = (Date.now() - follow.started) / 1000;
  assert.ok(seconds > 20, `only ${seconds} s`);
  assert.equal(follow.child.exitCode, null, 'logs -f is still running');
  const ticks = follow.out.split('\n').filter((l) => l.startsWith('tick ')).length;
  assert.ok(ticks >= seconds - 5, `${ticks} ticks in ${seconds} s`);
});
