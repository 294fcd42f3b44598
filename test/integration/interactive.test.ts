// Interactive sessions through a gateway's TLS listener with the unmodified kubectl: exec, attach,
// cp, port-forward and logs -f, over WebSocket and SPDY, to a node the apiserver streams to
// (agw-test-node: the kubelet's streaming endpoints, test/support/node.ts). The chart's
// least-privilege operator impersonates the caller, so the caller's own RBAC decides.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { auditEvent, startControlPlane, type ControlPlane } from '../support/control-plane.js';
import { startChartOperator } from '../support/chart-operator.js';
import { logLines, waitForLogLines } from '../support/operator.js';
import { applyYaml, createListenerTLS, gatewayPort, installCRD, namespaceYaml, tokenKubeconfig } from '../support/cluster.js';
import { scrapeMetrics } from '../support/metrics.js';
import { startNode, type TestNode } from '../support/node.js';

let cp: ControlPlane;
let op: Awaited<ReturnType<typeof startChartOperator>>;
let node: TestNode;
let follow: { child: ReturnType<typeof spawn>; out: string; started: number };
const kubeconfigs: Record<string, string> = {};
/** The CA of team-a's listener certificate (secret shell-tls). */
let teamACA: string;

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

/** The operator's session lines (`session started`, `session ended`) since `from` (ms). */
const isSession = (from: number) => (l: any) => typeof l.msg === 'string' && l.msg.startsWith('session ') && l.time >= from;
const sessionLines = (from = 0): any[] => logLines(op, isSession(from));
const waitForLines = (from: number, n: number, pick: (l: any) => boolean = () => true) => waitForLogLines(op, n, (l) => isSession(from)(l) && pick(l));

/** kubectl did not fall back: every session since `from` (at least `n`) spoke the protocol asked for. */
async function assertProtocol(from: number, spdy: boolean, n: number): Promise<void> {
  const started = await waitForLines(from, n, (l) => l.msg === 'session started');
  assert.ok(started.length >= n, JSON.stringify(started));
  for (const l of started) assert.equal(l.protocol, spdy ? 'v4.channel.k8s.io' : 'v5.channel.k8s.io', JSON.stringify(l));
}

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const protocols = [['WebSocket', false], ['SPDY', true]] as const;

before(async () => {
  cp = await startControlPlane({ audit: true });
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
  for (const p of ['tty-ws', 'tty-spdy']) {
    await node.runPod('team-a', p, [{ name: 'main', stdin: true, tty: true, command: ['sh', '-c', 'while read l; do echo "got $l"; stty size; [ "$l" = bye ] && exit 0; done'] }]);
  }
  for (const p of ['echo-ws', 'echo-spdy']) {
    await node.runPod('team-a', p, [{ name: 'main', stdin: true, command: ['sh', '-c', 'while read l; do echo "got $l"; [ "$l" = bye ] && exit 0; done'] }]);
  }
  const ca = await createListenerTLS(cp, 'team-a', 'shell-tls');
  teamACA = ca.cert;
  // `shell` allows sessions (rejectPaths: []); `plain` keeps the default rejectPaths; `small`
  // allows four sessions at once, each ended after 12 s without data
  for (const [name, reject, sessions] of [['shell', 'rejectPaths: []', ''], ['plain', '', ''],
    ['small', 'rejectPaths: []', '  sessions: {maxConcurrent: 4, idleTimeoutSeconds: 12}\n']] as const) {
    await applyYaml(cp, `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: ${name}, namespace: team-a}
spec:
  listener: {tls: {secretName: shell-tls}}
  authentication: {audiences: [gw]}
  access: [{serviceAccounts: [{namespace: team-a, name: dev}, {namespace: team-a, name: viewer}]}]
${sessions}  routes:
    - {name: kube-api, pathPrefix: /, timeoutSeconds: 5, apiserver: {identity: Impersonate${reject ? ', ' + reject : ''}}}
`);
    const server = `https://127.0.0.1:${await gatewayPort(cp, 'team-a', name)}`;
    for (const sa of ['dev', 'viewer']) {
      kubeconfigs[`${sa}@${name}`] = tokenKubeconfig(join(cp.dir, `${sa}-${name}.kubeconfig`), server, await cp.token('team-a', sa, ['gw']), { namespace: 'team-a', ca: ca.cert });
    }
  }
  // team-b may open sessions through its own gateways, on its own pods only; `tiny` allows one at once
  const caB = await createListenerTLS(cp, 'team-b', 'shell-tls');
  const teamBGateway = async (name: string, sessions = '') => {
    await applyYaml(cp, `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: ${name}, namespace: team-b}
spec:
  listener: {tls: {secretName: shell-tls}}
  authentication: {audiences: [gw]}
  access: [{serviceAccounts: [{namespace: team-b, name: intruder}]}]
${sessions}  routes:
    - {name: kube-api, pathPrefix: /, apiserver: {identity: Impersonate, rejectPaths: []}}
`);
    kubeconfigs[`intruder@${name}`] = tokenKubeconfig(join(cp.dir, `intruder-${name}.kubeconfig`), `https://127.0.0.1:${await gatewayPort(cp, 'team-b', name)}`,
      await cp.token('team-b', 'intruder', ['gw']), { namespace: 'team-b', ca: caB.cert });
  };
  await teamBGateway('shell');
  await cp.kubectl(['create', 'role', 'pod-sessions', '-n', 'team-b', '--verb=create,get', '--resource=pods,pods/exec']);
  await cp.kubectl(['create', 'rolebinding', 'sessions', '-n', 'team-b', '--role=pod-sessions', '--serviceaccount=team-b:intruder']);
  await node.runPod('team-b', 'own');
  await teamBGateway('tiny', '  sessions: {maxConcurrent: 1}\n');
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
    const from = Date.now();
    const r = await kubectl('dev@shell', ['exec', 'app', '--', 'sh', '-c', 'echo out; echo err >&2; exit 3'], { spdy });
    assert.equal(r.code, 3, r.err);
    // the session's two lines: who, where, what, the protocol kubectl and the apiserver agreed on
    await waitForLines(from, 2);
    const [start, end] = sessionLines(from);
    // the apiserver's audit event of the session, in both lines: the ID the gateway gave it (an
    // upgrade's answer is the kubelet's, without the apiserver's Audit-Id)
    assert.match(start.auditId, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.equal(end.auditId, start.auditId);
    const event = await auditEvent(cp, start.auditId, (s) => s !== 'RequestReceived');
    assert.equal(event.objectRef.subresource, 'exec');
    assert.equal(event.impersonatedUser?.username, 'system:serviceaccount:team-a:dev', JSON.stringify(event));
    assert.deepEqual({ ...start, time: 0, pid: 0, hostname: '', auditId: '' }, {
      level: 30, time: 0, pid: 0, hostname: '', auditId: '', gateway: 'team-a/shell', caller: 'system:serviceaccount:team-a:dev', route: 'kube-api',
      kind: 'exec', pod: 'team-a/app', container: 'main', command: ['sh', '-c', 'echo out; echo err >&2; exit 3'],
      protocol: spdy ? 'v4.channel.k8s.io' : 'v5.channel.k8s.io', msg: 'session started',
    });
    assert.equal(end.msg, 'session ended');
    assert.equal(end.reason, 'closed');
    assert.ok(end.bytesToClient > 0 && end.durationMs >= 0, JSON.stringify(end));
    assert.equal(r.out.toString(), 'out\n');
    assert.match(r.err, /^err$/m);
    const input = randomBytes(2 << 20);
    const i = await kubectl('dev@shell', ['exec', '-i', 'app', '--', 'sha256sum'], { spdy, input });
    assert.equal(i.code, 0, i.err);
    assert.equal(i.out.toString().split(' ')[0], sha(input));
    await waitForLines(from, 4);
    const stdin = sessionLines(from).find((l) => l.msg === 'session ended' && l.command?.[0] === 'sha256sum');
    assert.ok(stdin.bytesFromClient > input.length, JSON.stringify(stdin));
  });
}

test('kubectl exec -it: a terminal of the size of kubectl\'s, resized during the session', async () => {
  // kubectl in a terminal of its own (script(1)); the terminal is resized once the container has
  // printed its first size, and the container waits (up to 20 s) to see the new one
  for (const [protocol, spdy] of protocols) {
    const env = { ...process.env, ...(spdy ? { KUBECTL_REMOTE_COMMAND_WEBSOCKETS: 'false' } : {}) };
    const flag = join(cp.dir, `resize-${protocol}`);
    const line = `stty cols 101 rows 33; (j=0; while [ ! -e ${flag} ] && [ $j -lt 600 ]; do sleep 0.05; j=$((j+1)); done; stty -F /dev/tty cols 120 rows 40) & `
      + `kubectl --kubeconfig ${kubeconfigs['dev@shell']} exec -it app -- sh -c '`
      + `tty; stty size; i=0; while [ "$(stty size)" = "33 101" ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; stty size; exit 7'`;
    const from = Date.now();
    const child = spawn('script', ['-qec', line, '/dev/null'], { env });
    let out = '';
    const onData = (d: Buffer) => {
      out += d.toString();
      if (out.includes('33 101') && !existsSync(flag)) writeFileSync(flag, '');
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const timer = setTimeout(() => child.kill('SIGKILL'), 45_000);
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    clearTimeout(timer);
    const lines = out.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
    assert.match(lines[0] ?? '', /^\/dev\/pts\/\d+$/, `${protocol}: ${out}`);
    assert.deepEqual(lines.slice(1, 3), ['33 101', '40 120'], `${protocol}: ${out}`);
    assert.match(out, /command terminated with exit code 7/, `${protocol}: ${out}`);
    assert.equal(code, 7, `${protocol}: ${out}`);
    await assertProtocol(from, spdy, 1);
  }
});

test('kubectl attach -it: the container\'s terminal, at the size of kubectl\'s', async () => {
  for (const [protocol, spdy] of protocols) {
    const env = { ...process.env, ...(spdy ? { KUBECTL_REMOTE_COMMAND_WEBSOCKETS: 'false' } : {}) };
    const from = Date.now();
    const line = `stty cols 90 rows 30; kubectl --kubeconfig ${kubeconfigs['dev@shell']} attach -it ${spdy ? 'tty-spdy' : 'tty-ws'}`;
    const child = spawn('script', ['-qec', line, '/dev/null'], { env });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    // typed once kubectl is attached (the session has started)
    await waitForLines(from, 1, (l) => l.msg === 'session started' && l.kind === 'attach');
    child.stdin.write('hello\n');
    for (let i = 0; i < 100 && !out.includes('got hello'); i++) await new Promise((r) => setTimeout(r, 50));
    child.stdin.write('bye\n');
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    clearTimeout(timer);
    const lines = out.split(/\r?\n/).map((l) => l.trim());
    assert.ok(lines.includes('got hello') && lines.includes('got bye'), `${protocol}: ${out}`);
    assert.ok(lines.includes('30 90'), `${protocol}: ${out}`);
    assert.equal(code, 0, `${protocol}: ${out}`);
    await assertProtocol(from, spdy, 1);
  }
});

for (const [protocol, spdy] of protocols) {
  test(`kubectl cp both ways over ${protocol}: 3 MiB, the same checksums`, async () => {
    const dir = join(cp.dir, `cp-${protocol}`);
    mkdirSync(dir);
    const data = randomBytes(3 << 20);
    writeFileSync(join(dir, 'up.bin'), data);
    const inPod = join(node.dir, `cp-${protocol}`);
    mkdirSync(inPod);
    const from = Date.now();
    const up = await kubectl('dev@shell', ['cp', join(dir, 'up.bin'), `app:${inPod}/in-pod.bin`], { spdy });
    assert.equal(up.code, 0, up.err);
    assert.equal(sha(readFileSync(join(inPod, 'in-pod.bin'))), sha(data));
    const down = await kubectl('dev@shell', ['cp', `app:${inPod}/in-pod.bin`, join(dir, 'down.bin')], { spdy });
    assert.equal(down.code, 0, down.err);
    assert.equal(sha(readFileSync(join(dir, 'down.bin'))), sha(data));
    await assertProtocol(from, spdy, 3); // cp runs test -d, tar x, tar c
  });

  test(`kubectl attach -i over ${protocol}: input reaches the container's main process, its output comes back`, async () => {
    const pod = spdy ? 'echo-spdy' : 'echo-ws';
    const from = Date.now();
    const r = await kubectl('dev@shell', ['attach', '-i', pod], { spdy, input: 'hello\nbye\n' });
    assert.equal(r.code, 0, r.err);
    assert.match(r.out.toString(), /got hello\ngot bye\n/);
    await assertProtocol(from, spdy, 1);
  });

  test(`kubectl port-forward over ${protocol}: 4 concurrent connections, 10 MiB each way, the same checksums`, async () => {
    const echo: Server = createServer((s) => s.pipe(s));
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
    const remote = (echo.address() as AddressInfo).port;
    const from = Date.now();
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
      pf.kill();
      const lines = await waitForLines(from, 2, (l) => l.kind === 'portforward');
      assert.equal(lines[0]?.protocol, spdy ? 'portforward.k8s.io' : 'SPDY/3.1+portforward.k8s.io');
      const end = lines.find((l) => l.msg === 'session ended');
      assert.ok(end.bytesFromClient > 4 * size && end.bytesToClient > 4 * size, JSON.stringify(end));
    } finally {
      pf.kill();
      echo.close();
    }
  });
}

/**
 * A SPDY upgrade request written by hand as `who` (its token, the gateway's CA), then bytes that
 * would be the first frame: what comes back, and whether the gateway closed the connection.
 */
async function rawUpgrade(who: string, path: string): Promise<{ head: string; closed: boolean }> {
  const kc = JSON.parse(readFileSync(kubeconfigs[who]!, 'utf8'));
  const server = new URL(kc.clusters[0].cluster.server);
  const ca = Buffer.from(kc.clusters[0].cluster['certificate-authority-data'], 'base64');
  const token = kc.users[0].user.token;
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: server.hostname, port: Number(server.port), ca, servername: 'localhost' }, () => {
      s.write(`POST ${path} HTTP/1.1\r\nHost: ${server.host}\r\nAuthorization: Bearer ${token}\r\nConnection: Upgrade\r\n`
        + `Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n`);
    });
    let head = '';
    s.on('data', (d: Buffer) => {
      head += d.toString();
      s.write(Buffer.alloc(64, 0x80)); // ignored: the refusal has ended the exchange
    });
    s.on('error', () => { /* a reset after the refusal is a close too */ });
    s.on('close', () => resolve({ head, closed: true }));
    setTimeout(() => { s.destroy(); resolve({ head, closed: false }); }, 10_000).unref();
    s.on('timeout', reject);
  });
}

/** The operator's access lines (`msg: request`) of gateway `gw` since `from` that `pick` keeps,
 * once there are `n` of them (or after 10 s). */
const accessLines = (gw: string, from: number, n: number, pick: (l: any) => boolean) =>
  waitForLogLines(op, n, (l) => l.msg === 'request' && l.time >= from && l.gateway === gw && pick(l));

test('sessions are refused by the default rejectPaths, with the rule named, before the apiserver is asked', async () => {
  const from = Date.now();
  const nodeLog = readFileSync(node.proc.logFile, 'utf8').length;
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
  // each refusal is an access line (a denied exec is an audit event), none reached the apiserver
  const refused = await accessLines('team-a/plain', from, 6, (l) => l.route === 'kube-api' && l.status === 403);
  assert.ok(refused.length >= 6, JSON.stringify(refused));
  assert.ok(refused.every((l) => l.error === 'AGW_ERR_FORBIDDEN' && l.upstream === '-' && l.caller === 'system:serviceaccount:team-a:dev'), JSON.stringify(refused));
  assert.equal(sessionLines(from).length, 0);
  assert.doesNotMatch(readFileSync(node.proc.logFile, 'utf8').slice(nodeLog), /\/(exec|attach|portForward)\//);
});

test("the caller's own RBAC decides: a viewer may not exec, another team may not reach team-a's pods", async () => {
  const from = Date.now();
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
  // the upgrade the apiserver refuses is answered and closed: nothing sent after it is relayed
  const raw = await rawUpgrade('viewer@shell', '/api/v1/namespaces/team-a/pods/app/exec?command=true&stdout=true');
  assert.match(raw.head, /^HTTP\/1\.1 403 /, raw.head);
  assert.ok(raw.closed, 'the connection is closed after the refusal');
  // the apiserver's refusals of the upgrades: access lines with its status, no session
  const refused = await accessLines('team-a/shell', from, 2, (l) => l.caller === 'system:serviceaccount:team-a:viewer' && l.status === 403);
  assert.ok(refused.length >= 2 && refused.every((l) => l.upstream === 'apiserver'), JSON.stringify(refused));
  // each names the apiserver's audit event of the refusal
  for (const l of refused) {
    const event = await auditEvent(cp, l.auditId, (s) => s === 'ResponseComplete');
    assert.equal(event.responseStatus.code, 403, JSON.stringify(event));
  }
  assert.equal(sessionLines(from).length, 0);
});

test("a gateway's session limit and idle timeout: one session over it gets 429, other gateways are not charged, idle ones are ended and told why", async () => {
  const from = Date.now();
  const held = [kubectl('dev@small', ['exec', 'app', '--', 'sleep', '60'], { timeoutMs: 70_000 }),
    kubectl('dev@small', ['exec', 'app', '--', 'sleep', '60'], { spdy: true, timeoutMs: 70_000 })];
  // port-forward over WebSocket (whose SPDY inside sends a PING every 10 s) and over SPDY (a PING
  // every 5 s; no frame can say why it ends: the connection is closed)
  const pfs = protocols.map(([, spdy]) => spawn('kubectl', ['--kubeconfig', kubeconfigs['dev@small']!, 'port-forward', 'pod/app', ':9'],
    { env: { ...process.env, KUBECTL_PORT_FORWARD_WEBSOCKETS: spdy ? 'false' : 'true' } }));
  try {
    await waitForLines(from, 4, (l) => l.gateway === 'team-a/small' && l.msg === 'session started');
    const open = await scrapeMetrics(cp, op.adminPort);
    assert.match(open, /^access_gateway_upgraded_connections\{namespace="team-a",gateway="small",route="kube-api"\} 4$/m);
    // another team's gateway, with a limit of one, is not charged for team-a's full one
    const other = await kubectl('intruder@tiny', ['exec', 'own', '--', 'echo', 'ok']);
    assert.equal(other.code, 0, other.err);
    assert.equal(other.out.toString(), 'ok\n');
    for (const [, spdy] of protocols) {
      const fifth = await kubectl('dev@small', ['exec', 'app', '--', 'true'], { spdy });
      assert.notEqual(fifth.code, 0);
      assert.match(fifth.err, /gateway team-a\/small has 4 interactive sessions open, its limit \(spec\.sessions\.maxConcurrent 4\)/, fifth.err);
    }
    // pings (kubectl's WebSocket pings every 5 s, SPDY PINGs inside or outside WebSocket) are not
    // activity: all four end after 12 s, not 60
    const [ws, spdy] = await Promise.all(held);
    assert.notEqual(ws!.code, 0, `${ws!.code} ${ws!.out} ${ws!.err}`);
    assert.match(ws!.err, /the session was idle for 12 s/, ws!.err);
    assert.notEqual(spdy!.code, 0, `${spdy!.code} ${spdy!.out} ${spdy!.err}`);
    assert.match(spdy!.err, /the session was idle for 12 s/, spdy!.err);
    const ended = await waitForLines(from, 4, (l) => l.gateway === 'team-a/small' && l.msg === 'session ended');
    assert.deepEqual(ended.map((l) => `${l.kind} ${l.reason}`).sort(), ['exec idle', 'exec idle', 'portforward idle', 'portforward idle']);
    for (const l of ended) assert.ok(l.durationMs >= 11_500 && l.durationMs < 25_000, JSON.stringify(l));
  } finally {
    for (const pf of pfs) pf.kill();
  }
  // tiny's own limit holds: a second session while its one is open gets 429
  const one = kubectl('intruder@tiny', ['exec', 'own', '--', 'sleep', '4']);
  await waitForLines(from, 1, (l) => l.gateway === 'team-b/tiny' && l.msg === 'session started' && l.command?.includes('sleep'));
  const second = await kubectl('intruder@tiny', ['exec', 'own', '--', 'true']);
  assert.notEqual(second.code, 0);
  assert.match(second.err, /gateway team-b\/tiny has 1 interactive sessions open, its limit \(spec\.sessions\.maxConcurrent 1\)/, second.err);
  assert.equal((await one)!.code, 0);
  // a session that keeps talking outlives the idle timeout
  const busy = await kubectl('dev@small', ['exec', 'app', '--', 'sh', '-c', 'for i in $(seq 1 15); do echo $i; sleep 1; done']);
  assert.equal(busy.code, 0, busy.err);
  assert.equal(busy.out.toString(), Array.from({ length: 15 }, (_, i) => `${i + 1}\n`).join(''));
  const text = await scrapeMetrics(cp, op.adminPort);
  assert.match(text, /^access_gateway_sessions_refused_total\{namespace="team-a",gateway="small"\} [2-9]$/m);
  assert.match(text, /^access_gateway_sessions_ended_total\{namespace="team-a",gateway="small",route="kube-api",reason="idle"\} 4$/m);
  assert.match(text, /^access_gateway_session_duration_seconds_count\{namespace="team-a",gateway="small",route="kube-api"\} 5$/m);
});

test('a session is logged as what the apiserver is asked: a percent-encoded exec is an exec', async () => {
  const from = Date.now();
  const raw = await rawUpgrade('dev@shell', '/api/v1/namespaces/team-a/pods/app/%65xec?command=echo&command=hidden&stdout=true');
  assert.match(raw.head, /^HTTP\/1\.1 101 /, raw.head);
  const [start] = await waitForLines(from, 1, (l) => l.msg === 'session started');
  assert.equal(start?.kind, 'exec', JSON.stringify(start));
  assert.equal(start?.pod, 'team-a/app');
  assert.deepEqual(start?.command, ['echo', 'hidden']);
});

test("a session or stream ends when the caller's grant does: at its rule's notAfter, or when spec.access drops the caller; others go on", async () => {
  const from = Date.now();
  const dev = '{serviceAccounts: [{namespace: team-a, name: dev}]', viewer = '{serviceAccounts: [{namespace: team-a, name: viewer}]}';
  const boxed = (access: string) => applyYaml(cp, `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: boxed, namespace: team-a}
spec:
  listener: {tls: {secretName: shell-tls}}
  authentication: {audiences: [gw]}
  access: ${access}
  routes:
    - {name: kube-api, pathPrefix: /, apiserver: {identity: Impersonate, rejectPaths: []}}
`);
  // whole seconds: the apiserver keeps date-times to the second
  const edge = Math.ceil((Date.now() + 15_000) / 1000) * 1000;
  const iso = new Date(edge).toISOString().replace(/\.\d+Z$/, 'Z');
  await boxed(`[${dev}, notAfter: "${iso}"}, ${viewer}]`);
  const server = `https://127.0.0.1:${await gatewayPort(cp, 'team-a', 'boxed')}`;
  for (const sa of ['dev', 'viewer']) {
    kubeconfigs[`${sa}@boxed`] = tokenKubeconfig(join(cp.dir, `${sa}-boxed.kubeconfig`), server, await cp.token('team-a', sa, ['gw']), { namespace: 'team-a', ca: teamACA });
  }
  const held = protocols.map(([, spdy]) => kubectl('dev@boxed', ['exec', 'app', '--', 'sleep', '60'], { spdy, timeoutMs: 70_000 }));
  const devLogs = kubectl('dev@boxed', ['logs', '-f', 'ticker'], { timeoutMs: 70_000 });
  // the viewer's grant has no window: its stream goes on through both changes below
  const viewerLogs = spawn('kubectl', ['--kubeconfig', kubeconfigs['viewer@boxed']!, 'logs', '-f', 'ticker']);
  let viewerOut = '';
  viewerLogs.stdout.on('data', (d: Buffer) => { viewerOut += d.toString(); });
  try {
    await waitForLines(from, 2, (l) => l.gateway === 'team-a/boxed' && l.msg === 'session started');
    assert.ok(Date.now() < edge - 1000, 'the sessions opened too late for this test');
    for (const r of await Promise.all(held)) {
      assert.notEqual(r!.code, 0, `${r!.code} ${r!.out} ${r!.err}`);
      assert.match(r!.err, new RegExp(`access ended: spec\\.access\\[0\\]'s notAfter ${iso.replace('Z', '.000Z')} has passed`), r!.err);
    }
    assert.ok(Date.now() >= edge, 'ended before the edge');
    const logs = await devLogs;
    assert.match(logs.out.toString(), /^tick \d+$/m, 'logs -f streamed before it was ended');
    assert.equal(logs.code, 0, 'a stream ends as a clean end of its body');
    assert.ok(Date.now() < edge + 10_000, 'logs -f ended at the edge, not at its timeout');
    // spec.access changes: one that still names dev keeps its session, one that drops dev ends it
    await boxed(`[${dev}}, ${viewer}]`);
    const third = kubectl('dev@boxed', ['exec', 'app', '--', 'sleep', '60'], { timeoutMs: 70_000 });
    await waitForLines(from, 3, (l) => l.gateway === 'team-a/boxed' && l.msg === 'session started');
    await boxed(`[${viewer}, ${dev}}]`);
    await new Promise((r) => setTimeout(r, 2000));
    await boxed(`[${viewer}]`);
    const dropped = Date.now();
    const r = await third;
    assert.notEqual(r!.code, 0, `${r!.code} ${r!.out} ${r!.err}`);
    assert.match(r!.err, /access ended: no rule of spec\.access names the caller now/, r!.err);
    assert.ok(Date.now() - dropped < 15_000, 'ended when spec.access dropped dev');
    const ended = await waitForLines(from, 3, (l) => l.gateway === 'team-a/boxed' && l.msg === 'session ended');
    assert.deepEqual(ended.map((l) => `${l.kind} ${l.reason}`), ['exec revoked', 'exec revoked', 'exec revoked']);
    const ticks = viewerOut.length;
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal(viewerLogs.exitCode, null, 'the viewer\'s logs -f goes on');
    assert.ok(viewerOut.length > ticks, 'and still streams');
    const text = await scrapeMetrics(cp, op.adminPort);
    assert.match(text, /^access_gateway_sessions_ended_total\{namespace="team-a",gateway="boxed",route="kube-api",reason="revoked"\} 3$/m);
  } finally {
    viewerLogs.kill();
    await cp.kubectl(['delete', 'accessgateway', 'boxed', '-n', 'team-a']);
  }
});

test('kubectl logs -f streams on past the route timeout and every idle timeout', async () => {
  // over two minutes: past the route's timeout (5 s) and the listener's keep-alive idle timeout (65 s)
  while (Date.now() - follow.started < 125_000) await new Promise((r) => setTimeout(r, 1000));
  const seconds = (Date.now() - follow.started) / 1000;
  assert.equal(follow.child.exitCode, null, 'logs -f is still running');
  const ticks = follow.out.split('\n').filter((l) => l.startsWith('tick ')).length;
  assert.ok(ticks >= seconds - 5, `${ticks} ticks in ${seconds} s`);
});

test('on shutdown, --drain-seconds ends open sessions with a last frame that says so', async () => {
  const from = Date.now();
  const held = protocols.map(([, spdy]) => kubectl('dev@shell', ['exec', 'app', '--', 'sleep', '60'], { spdy, timeoutMs: 70_000 }));
  const pf = spawn('kubectl', ['--kubeconfig', kubeconfigs['dev@shell']!, 'port-forward', 'pod/app', ':9'], { env: { ...process.env, KUBECTL_PORT_FORWARD_WEBSOCKETS: 'false' } });
  await waitForLines(from, 3, (l) => l.msg === 'session started');
  const pfExit = new Promise<number | null>((resolve) => pf.on('exit', resolve));
  await op.stop();
  const [ws, spdy] = await Promise.all(held);
  assert.notEqual(ws!.code, 0, `${ws!.code} ${ws!.out} ${ws!.err}`);
  assert.match(ws!.err, /the gateway is shutting down/, ws!.err);
  assert.notEqual(spdy!.code, 0, `${spdy!.code} ${spdy!.out} ${spdy!.err}`);
  assert.match(spdy!.err, /the gateway is shutting down/, spdy!.err);
  const ended = sessionLines(from).filter((l) => l.msg === 'session ended');
  assert.deepEqual(ended.map((l) => `${l.kind} ${l.reason}`).sort(), ['exec shutdown', 'exec shutdown', 'portforward shutdown']);
  // kubectl port-forward sees its connection closed and ends
  assert.notEqual(await pfExit, null);
});
