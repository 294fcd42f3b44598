// The data-plane benchmark (issue 10): one run measures, side by side on this machine, the same
// GET through every path — the upstream direct, nginx as a reverse proxy (1 worker), a bare Node
// proxy, the gateway's Service route (TokenReview and JWKS, access log all and none), kubectl
// proxy and the gateway's apiserver route — and prints req/s, p50, p99, the ratios the targets
// are about, and the operator's RSS. wrk, the upstream and the control plane run on CPU 0, the
// proxy under test alone on CPU 1. Absolute numbers on a noisy machine are not targets: ratios
// from the same run are.
//   scripts/bench [--rounds 3] [--seconds 5] [--connections 64] [--smoke] [--only CASES]
//                 [--profile CASE] [--apiserver-pprof CASE] [--node-args=FLAGS] [--operator-args=FLAGS] [--operator-role chart]
//                 [--cache-ttl 600] [--warmup 3]
// The neighbour cases (always, or with --only neighbour): another team's 4 connections, alone and
// while the first team floods its own gateway with requests (admitted, or refused), downloads or
// uploads long bodies, or opens new TLS connections; the first team's connections alone and beside
// another team's one caller; and another team's quiet caller, alone and beside the flood.
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { startControlPlane, repoRoot, type ControlPlane } from '../test/support/control-plane.js';
import { startOperator, type OperatorProc } from '../test/support/operator.js';
import { chartNodeOptions, chartRelease, renderChart } from '../test/support/chart-operator.js';
import { stringify } from 'yaml';
import { applyYaml, gatewayPort, installCRD, namespaceYaml, applyService, tokenKubeconfig } from '../test/support/cluster.js';
import { createTestNet, type TestNet } from '../test/support/netns.js';
import { freePort, startProc, waitFor, type Proc } from '../test/support/procs.js';
import { parseWrk, wrk, type WrkResult } from './wrk.js';
import { topSelfTime } from './profile-summary.js';
import { cpuMs, cpuTicks, pin, rssMiB, tree } from './procfs.js';

const { values: opt } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' }, seconds: { type: 'string', default: '5' }, connections: { type: 'string', default: '64' },
    smoke: { type: 'boolean', default: false },
    /** Profile the operator (node --cpu-prof) under this case only, and print its top self-time functions. */
    profile: { type: 'string' },
    /** Node/V8 flags for the operator (space-separated); default: the chart's operator.nodeOptions; '' for none */
    'node-args': { type: 'string' },
    /** The operator's ClusterRole: cluster-admin, or the chart's own (`chart`, least privilege). */
    'operator-role': { type: 'string', default: 'cluster-admin' },
    /** More operator flags (space-separated), e.g. '--requests-per-turn-per-namespace 0'. */
    'operator-args': { type: 'string', default: '' },
    /** Measure only the cases whose names contain one of these (comma-separated). */
    only: { type: 'string' },
    /** The gateways' cacheTTLSeconds (600: a review's cost stays out of the cases; 10: the default). */
    'cache-ttl': { type: 'string', default: '600' },
    /** Seconds of each case run once before the rounds, not measured: the JIT, pools and caches
     * warm (default 3; 0 with --smoke). */
    warmup: { type: 'string' },
    /** The apiserver's own CPU profile (pprof) under this case only; prints `go tool pprof -top` when Go is there. */
    'apiserver-pprof': { type: 'string' },
  },
});
const rounds = opt.smoke ? 1 : Number(opt.rounds);
const seconds = opt.smoke ? 1 : Number(opt.seconds);
const connections = Number(opt.connections);
const warmup = opt.warmup !== undefined ? Number(opt.warmup) : opt.smoke ? 0 : 3;
if (!(warmup >= 0)) throw new Error(`--warmup: a number of seconds (got ${opt.warmup})`);
// half of --max-connections-per-namespace's default (the smoke run only checks that it runs)
const floodConnections = opt.smoke ? 32 : 512;
const ns = 'bench';
const nsB = 'bench-b';
const body = 'x'.repeat(1024);
const node = process.execPath;

/** Runs `args` pinned to `cpu` (taskset), as a child that dies with this process. */
function pinned(cpu: number, cmd: string, args: string[], log: string): Proc {
  return startProc('taskset', ['-c', String(cpu), cmd, ...args], log);
}

async function ready(url: string, headers: Record<string, string> = {}): Promise<void> {
  await waitFor(url, async () => (await request(url, { headers })).statusCode === 200, 30_000, 100);
}

const gateway = (name: string, spec: string, annotations = '', namespace = ns, listener = '') => `
apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: ${name}, namespace: ${namespace}${annotations ? `, annotations: {${annotations}}` : ''}}
spec:
  authentication: {audiences: [gw], cacheTTLSeconds: ${Number(opt['cache-ttl'])}${spec.includes('JWKS') ? ', mode: JWKS' : ''}}
  access: [{serviceAccounts: [{namespace: ${namespace}, name: client}]}]
  routes: [${spec.replace('JWKS', '')}]
${listener ? `  listener: ${listener}\n` : ''}`;

interface Case { name: string; url: string; headers?: Record<string, string>; /** The process under test (CPU time per request). */ pid?: () => number[] }

async function main(): Promise<void> {
  const dir = mkdtempSync(join('/tmp', 'agw-bench-'));
  // the upstream's long answer, where its worker (not root) may read it: not in `dir` (kubeconfigs)
  const files = mkdtempSync(join('/tmp', 'agw-bench-files-'));
  chmodSync(files, 0o755);
  writeFileSync(join(files, 'big'), Buffer.alloc(1 << 20, 'x'), { mode: 0o644 });
  const cp: ControlPlane = await startControlPlane();
  let net: TestNet | undefined;
  const procs: Proc[] = [];
  let op: OperatorProc | undefined;
  try {
    // the control plane (and wrk, and the upstream) on CPU 0
    pin(execFileSync('pgrep', ['-f', cp.dir], { encoding: 'utf8' }).trim().split('\n').map(Number), 0);
    await installCRD(cp);
    await applyYaml(cp, namespaceYaml(ns, ['client']));

    // the upstream: nginx (1 worker) in a network namespace, answering 1 KiB
    net = await createTestNet({ hosts: 1 });
    const host = net.hosts[0]!;
    const upstreamConf = join(dir, 'upstream.conf');
    writeFileSync(upstreamConf, `worker_processes 1; daemon off; pid ${dir}/upstream.pid; error_log ${dir}/upstream.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; server { listen ${host.ip}:8080; location / { default_type text/plain; return 200 "${body}"; }
  location = /big { default_type application/octet-stream; alias ${files}/big; } } }
`);
    procs.push(host.start('taskset', ['-c', '0', 'nginx', '-c', upstreamConf], join(dir, 'upstream.log')));
    const upstream = `http://${host.ip}:8080`;
    await ready(`${upstream}/`);
    await applyService(cp, ns, 'upstream', [host.ip]);
    // another team, with a gateway of its own to the same upstream (the neighbour case)
    await applyYaml(cp, namespaceYaml(nsB, ['client']));
    await applyService(cp, nsB, 'upstream', [host.ip]);

    // the proxies under test, each alone on CPU 1
    const nginxPort = await freePort();
    const nginxConf = join(dir, 'proxy.conf');
    writeFileSync(nginxConf, `worker_processes 1; daemon off; pid ${dir}/proxy.pid; error_log ${dir}/proxy.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; upstream u { server ${host.ip}:8080; keepalive 128; }
  server { listen 127.0.0.1:${nginxPort}; location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
`);
    const nginxProxy = pinned(1, 'nginx', ['-c', nginxConf], join(dir, 'proxy.log'));
    procs.push(nginxProxy);
    const leanPort = await freePort();
    const profileLean = opt.profile?.startsWith('lean');
    const lean = pinned(1, node, [...(profileLean ? ['--cpu-prof', '--cpu-prof-dir', join(dir, 'profile')] : []),
      join(repoRoot, 'dist', 'bench', 'lean-proxy.js'), '--port', String(leanPort), '--upstream', upstream], join(dir, 'lean.log'));
    procs.push(lean);
    // The operator runs as it does in a cluster: as a service account with a token (the admin
    // client certificate would cost the apiserver an ECDSA chain verification on every request).
    // kubectl proxy runs both ways: with the admin certificate, and with a token of its own.
    const saKubeconfig = async (name: string, role = 'cluster-admin') => {
      await cp.kubectl(['create', 'serviceaccount', name, '-n', ns]);
      await cp.kubectl(['create', 'clusterrolebinding', `bench-${name}`, `--clusterrole=${role}`, `--serviceaccount=${ns}:${name}`]);
      return tokenKubeconfig(join(dir, `${name}.kubeconfig`), cp.url, await cp.token(ns, name, [cp.issuer]), { ca: cp.ca.cert });
    };
    if (!['chart', 'cluster-admin'].includes(opt['operator-role'])) throw new Error(`--operator-role: chart or cluster-admin, not ${opt['operator-role']}`);
    if (opt['operator-role'] === 'chart') {
      const role = renderChart().find((o) => o.kind === 'ClusterRole' && o.metadata.name === chartRelease);
      await cp.kubectl(['apply', '-f', '-'], stringify(role));
    }
    const operatorKubeconfig = await saKubeconfig('operator', opt['operator-role'] === 'chart' ? chartRelease : 'cluster-admin');
    const kubectlPort = await freePort();
    const kubectlProxy = pinned(1, 'kubectl', ['--kubeconfig', cp.kubeconfig, 'proxy', '--port', String(kubectlPort), '--address', '127.0.0.1'], join(dir, 'kubectl-proxy.log'));
    procs.push(kubectlProxy);
    const kubectlTokenPort = await freePort();
    const kubectlTokenProxy = pinned(1, 'kubectl', ['--kubeconfig', await saKubeconfig('kubectl'), 'proxy', '--port', String(kubectlTokenPort), '--address', '127.0.0.1'], join(dir, 'kubectl-proxy-token.log'));
    procs.push(kubectlTokenProxy);
    const profDir = join(dir, 'profile');
    const nodeArgs = opt['node-args'] === undefined ? chartNodeOptions() : opt['node-args'].split(' ').filter(Boolean);
    op = await startOperator({ ...cp, kubeconfig: operatorKubeconfig }, { cpu: 1, args: ['--metrics-auth', 'none', '--log-level', 'info', '--advertise-address', '198.18.255.1', ...opt['operator-args'].split(' ').filter(Boolean)],
      nodeArgs: [...nodeArgs, ...(opt.profile && !profileLean ? ['--cpu-prof', '--cpu-prof-dir', profDir] : [])] });
    if (nodeArgs.length) console.log(`operator node flags: ${nodeArgs.join(' ')}`);
    const opPid = op.child.pid!; // setpriv and taskset exec the operator: the same pid
    const idleRss = rssMiB(opPid);

    // a TLS listener in each namespace (the handshake neighbour case): RSA-2048, as cert-manager's default
    for (const n of [ns, nsB]) {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, `${n}.key`), '-out', join(dir, `${n}.crt`),
        '-days', '2', '-subj', '/CN=gw', '-addext', 'subjectAltName=DNS:gw'], { stdio: 'ignore' });
      await cp.kubectl(['create', 'secret', 'tls', 'listener', '-n', n, '--cert', join(dir, `${n}.crt`), '--key', join(dir, `${n}.key`)]);
      await cp.kubectl(['label', 'secret', 'listener', '-n', n, 'access-gateway.io/listener-tls=true']);
    }
    await applyYaml(cp, [
      gateway('svc-log-all', '{name: up, pathPrefix: /, service: {name: upstream, port: http}}'),
      gateway('svc-log-none', '{name: up, pathPrefix: /, service: {name: upstream, port: http}}', 'access-gateway.io/access-log: none'),
      gateway('svc-jwks', 'JWKS{name: up, pathPrefix: /, service: {name: upstream, port: http}}', 'access-gateway.io/access-log: none'),
      gateway('api', '{name: kube-api, pathPrefix: /, apiserver: {acceptPaths: ["^/version$"]}}', 'access-gateway.io/access-log: none'),
      gateway('svc', '{name: up, pathPrefix: /, service: {name: upstream, port: http}}', 'access-gateway.io/access-log: none', nsB),
      gateway('tls', '{name: up, pathPrefix: /, service: {name: upstream, port: http}}', 'access-gateway.io/access-log: none', ns, '{tls: {secretName: listener}}'),
      gateway('tls', '{name: up, pathPrefix: /, service: {name: upstream, port: http}}', 'access-gateway.io/access-log: none', nsB, '{tls: {secretName: listener}}'),
    ].join('\n---\n'));
    const port = (name: string) => gatewayPort(cp, ns, name, 60_000);
    const token = await cp.token(ns, 'client', ['gw']);
    const auth = { authorization: `Bearer ${token}` };
    const gw = { logAll: await port('svc-log-all'), logNone: await port('svc-log-none'), jwks: await port('svc-jwks'), api: await port('api') };
    const neighbour = { port: await gatewayPort(cp, nsB, 'svc', 60_000), auth: { authorization: `Bearer ${await cp.token(nsB, 'client', ['gw'])}` } };
    await ready(`http://127.0.0.1:${neighbour.port}/`, neighbour.auth);
    const tls = { a: await gatewayPort(cp, ns, 'tls', 60_000), b: await gatewayPort(cp, nsB, 'tls', 60_000) };
    for (const p of Object.values(gw)) await ready(`http://127.0.0.1:${p}/${p === gw.api ? 'version' : ''}`, auth);
    await ready(`http://127.0.0.1:${nginxPort}/`);
    await ready(`http://127.0.0.1:${leanPort}/`);
    await ready(`http://127.0.0.1:${kubectlPort}/version`);
    await ready(`http://127.0.0.1:${kubectlTokenPort}/version`);
    const readyRss = rssMiB(opPid);

    // one token, 1,000 concurrent first requests: one TokenReview
    const metrics = async () => (await request(`http://127.0.0.1:${op!.adminPort}/metrics`)).body.text();
    const reviews = async () => Number(/^access_gateway_token_reviews_total\{result="authenticated"\} (\d+)/m.exec(await metrics())?.[1] ?? NaN);
    const fresh = await cp.token(ns, 'client', ['gw']);
    const before = await reviews();
    // on connections of their own, closed after: 1,000 held open would pass --max-connections-per-namespace (1024) with wrk's
    const burst = new Agent({ connections: 1000 });
    await Promise.all(Array.from({ length: 1000 }, async () => (await request(`http://127.0.0.1:${gw.logNone}/`, { headers: { authorization: `Bearer ${fresh}` }, dispatcher: burst })).body.dump()));
    await burst.close();
    const firstRequests = (await reviews()) - before;

    const p = (x: Proc) => () => tree(x.child.pid!);
    const gwPid = () => [opPid];
    const cases: Case[] = [
      { name: 'direct (nginx upstream)', url: `${upstream}/` },
      { name: 'nginx reverse proxy (1 worker)', url: `http://127.0.0.1:${nginxPort}/`, pid: p(nginxProxy) },
      { name: 'lean Node proxy', url: `http://127.0.0.1:${leanPort}/`, pid: p(lean) },
      { name: 'lean Node proxy + Authorization', url: `http://127.0.0.1:${leanPort}/`, headers: auth, pid: p(lean) },
      { name: 'gateway Service route (TokenReview, log none)', url: `http://127.0.0.1:${gw.logNone}/`, headers: auth, pid: gwPid },
      { name: 'gateway Service route (TokenReview, log all)', url: `http://127.0.0.1:${gw.logAll}/`, headers: auth, pid: gwPid },
      { name: 'gateway Service route (JWKS, log none)', url: `http://127.0.0.1:${gw.jwks}/`, headers: auth, pid: gwPid },
      { name: 'kubectl proxy GET /version', url: `http://127.0.0.1:${kubectlPort}/version`, pid: p(kubectlProxy) },
      { name: 'kubectl proxy (token) GET /version', url: `http://127.0.0.1:${kubectlTokenPort}/version`, pid: p(kubectlTokenProxy) },
      { name: 'gateway apiserver route GET /version', url: `http://127.0.0.1:${gw.api}/version`, headers: auth, pid: gwPid },
      // last in each round: their garbage (1 MiB buffers) would weigh on the cases after them
      { name: 'lean Node proxy, 1 MiB answers', url: `http://127.0.0.1:${leanPort}/big`, pid: p(lean) },
      { name: 'gateway Service route (TokenReview, log none), 1 MiB answers', url: `http://127.0.0.1:${gw.logNone}/big`, headers: auth, pid: gwPid },
    ];
    if (opt.profile) {
      const c = cases.find((x) => x.name.includes(opt.profile!));
      if (!c) throw new Error(`--profile: no case named like ${opt.profile}`);
      const res = await wrk(c.url, { seconds: seconds * rounds, connections, cpu: 0, headers: c.headers });
      console.log(`${c.name}: ${Math.round(res.rps)} req/s, p99 ${res.p99.toFixed(2)} ms (under the profiler)`);
      await (profileLean ? lean : op).stop();
      const file = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
      if (!file) throw new Error('no CPU profile was written');
      console.log(`profile: ${join(profDir, file)}\n| self | function |\n| ---: | --- |`);
      for (const l of topSelfTime(JSON.parse(readFileSync(join(profDir, file), 'utf8')), 25)) console.log(l);
      return;
    }
    if (opt['apiserver-pprof']) {
      const c = cases.find((x) => x.name.includes(opt['apiserver-pprof']!));
      if (!c) throw new Error(`--apiserver-pprof: no case named like ${opt['apiserver-pprof']}`);
      const secs = seconds * rounds;
      const agent = new Agent({ connect: { ca: cp.ca.cert, cert: cp.admin.cert, key: cp.admin.key } });
      const [res, prof] = await Promise.all([
        wrk(c.url, { seconds: secs, connections, cpu: 0, headers: c.headers }),
        request(`${cp.url}/debug/pprof/profile?seconds=${secs}`, { dispatcher: agent }).then((r) => r.body.arrayBuffer()),
      ]);
      const file = join(dir, 'apiserver.pprof');
      writeFileSync(file, Buffer.from(prof));
      console.log(`${c.name}: ${Math.round(res.rps)} req/s, p99 ${res.p99.toFixed(2)} ms; apiserver profile: ${file}`);
      try {
        console.log(execFileSync('go', ['tool', 'pprof', '-top', '-cum', '-nodecount', '60', file], { encoding: 'utf8' }));
      } catch (err) {
        console.log(`(go tool pprof: ${(err as Error).message.split('\n')[0]})`);
      }
      return;
    }
    // the operator's garbage collection while it proxies (prom-client's GC histogram)
    const gcNow = async () => {
      const text = await metrics();
      const get = (what: string, kind: string) => Number(new RegExp(`^access_gateway_nodejs_gc_duration_seconds_${what}\\{kind="${kind}"\\} (\\S+)`, 'm').exec(text)?.[1] ?? 0);
      return { full: get('count', 'major'), fullS: get('sum', 'major'), minorS: get('sum', 'minor') };
    };
    // where a gateway case's tail is: its requests' durations, and the upstream's part (time to the
    // answer's headers), from the operator's histograms (every route's; one case runs at a time)
    const tailNow = async () => {
      const text = await metrics();
      const sum = (name: string, le: string) => {
        let n = 0;
        for (const m of text.matchAll(new RegExp(`^${name}_bucket\\{[^}]*le="${le.replace('+', '\\+')}"\\} (\\S+)`, 'gm'))) n += Number(m[1]);
        return n;
      };
      const lag = (what: string) => 1000 * Number(new RegExp(`^access_gateway_nodejs_eventloop_lag_${what}_seconds (\\S+)`, 'm').exec(text)?.[1] ?? NaN);
      // (the event loop's delay since the last scrape: prom-client resets it on each)
      return { buckets: ['0.025', '0.05', '+Inf'].flatMap((le) => ['access_gateway_request_duration_seconds', 'access_gateway_upstream_duration_seconds'].map((h) => sum(h, le))), lagP99: lag('p99'), lagMax: lag('max') };
    };
    const tails = new Map<string, { buckets: number[]; lagP99: number[]; lagMax: number }>();
    const gc = { full: 0, fullS: 0, minorS: 0, requests: 0 };
    const results = new Map<string, WrkResult[]>();
    const chosen = opt.only ? cases.filter((c) => opt.only!.split(',').some((o) => c.name.includes(o))) : cases;
    // (a process's first seconds under load are not its steady state: the gateway's code is not
    // yet optimised, and its first requests open the pools' connections; kubectl proxy has no JIT.
    // Their figures are printed apart: a cold start's cost stays visible, out of the medians.)
    const warm = new Map<string, WrkResult>();
    if (warmup > 0) for (const c of chosen) warm.set(c.name, await wrk(c.url, { seconds: warmup, connections, cpu: 0, headers: c.headers }));
    for (let r = 0; r < rounds; r++) {
      for (const c of chosen) {
        const pids = c.pid?.() ?? [];
        const gc0 = c.pid === gwPid ? await gcNow() : undefined;
        const tail0 = c.pid === gwPid ? await tailNow() : undefined;
        const cpu0 = cpuMs(pids);
        const res = await wrk(c.url, { seconds, connections, cpu: 0, headers: c.headers });
        // the proxy's CPU first: the GC figures below cost the operator a /metrics answer
        res.cpuUsPerReq = pids.length ? ((cpuMs(pids) - cpu0) * 1000) / (res.rps * seconds) : NaN;
        // (a round with no answer at all would make its ratios Infinity or NaN, not a failure)
        if (res.non2xx > 0 || res.errors > 0 || !(res.requests > 0)) {
          throw new Error(`${c.name} (round ${r + 1}): ${res.requests} answers, ${res.non2xx} non-2xx, ${res.errors} socket errors`);
        }
        if (tail0) {
          const now = await tailNow();
          const t = tails.get(c.name) ?? tails.set(c.name, { buckets: now.buckets.map(() => 0), lagP99: [], lagMax: 0 }).get(c.name)!;
          now.buckets.forEach((x, i) => { t.buckets[i]! += x - tail0.buckets[i]!; });
          t.lagP99.push(now.lagP99);
          t.lagMax = Math.max(t.lagMax, now.lagMax);
        }
        if (gc0) {
          const gc1 = await gcNow();
          gc.full += gc1.full - gc0.full;
          gc.fullS += gc1.fullS - gc0.fullS;
          gc.minorS += gc1.minorS - gc0.minorS;
          gc.requests += res.rps * seconds;
        }
        (results.get(c.name) ?? results.set(c.name, []).get(c.name)!).push(res);
      }
    }
    // One team floods its gateway; another team's few callers: how much less they get (the tenancy
    // invariant: a team cannot slow another's gateway). All wrk on CPU 0, the operator on CPU 1.
    // Twice: a flood of requests on kept connections, and a flood of new TLS connections (each
    // request on a connection of its own: a full handshake each, no session resumed).
    // (while the few callers measure beside the flood: how busy the operator was, of its CPU 1,
    // and CPU 0, where every wrk, the upstream and the control plane run: a flood that fills CPU 0
    // slows the few callers' wrk and upstream too, whatever the operator does)
    type Neighbour = { alone: WrkResult; flooded: WrkResult; flood: WrkResult; opBusy: number; cpu0Busy: number };
    const neighbourRounds = async (what: string, few: { url: string; headers: Record<string, string>; connections?: number },
      flood: () => Promise<WrkResult>, refused = false, admitted = 0): Promise<Neighbour[]> => {
      const runs: Neighbour[] = [];
      if (opt.only && !opt.only.split(',').some((o) => what.includes(o))) return runs;
      const mine = { seconds, connections: few.connections ?? 4, cpu: 0, headers: few.headers };
      for (let r = 0; r < rounds; r++) {
        const alone = await wrk(few.url, mine);
        const flooding = flood();
        flooding.catch(() => {}); // seen when awaited below; not an unhandled rejection meanwhile
        await new Promise((res) => setTimeout(res, 1000));
        const op0 = cpuMs([opPid]), c0 = cpuTicks(0), t0 = performance.now();
        const flooded = await wrk(few.url, mine);
        const opBusy = (cpuMs([opPid]) - op0) / (performance.now() - t0), c1 = cpuTicks(0);
        const cpu0Busy = (c1.busy - c0.busy) / (c1.total - c0.total);
        const flooder = await flooding;
        for (const [name, x] of [['alone', alone], ['flooded', flooded], ['flood', flooder]] as const) {
          // a refused flood: each connection admitted (an answer 2xx each at least), the rest refused
          const bad = name === 'flood' && refused ? (x.non2xx === 0 || x.requests - x.non2xx < admitted) : (x.non2xx > 0 || x.errors > 0);
          if (bad) throw new Error(`${what} (${name}): ${x.non2xx} non-2xx answers, ${x.errors} socket errors`);
        }
        runs.push({ alone, flooded, flood: flooder, opBusy, cpu0Busy });
      }
      return runs;
    };
    const flood = { seconds: seconds + 2, cpu: 0 };
    const neighbourRuns = await neighbourRounds('neighbour', { url: `http://127.0.0.1:${neighbour.port}/`, headers: neighbour.auth },
      () => wrk(`http://127.0.0.1:${gw.logNone}/`, { ...flood, connections: floodConnections, headers: auth }));
    // the same flood refused: each connection's first request is admitted (its token), later ones
    // carry a token that is not (401, the connection kept). A refusal costs the event loop too. The
    // first 2 × connections requests carry the good token: wrk asks for one before it connects (to
    // check it), and a connection's first may come after another's second.
    const refusedScript = join(dir, 'refused.lua');
    writeFileSync(refusedScript, `local good, first, n = os.getenv("AGW_GOOD"), tonumber(os.getenv("AGW_FIRST")), 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, { Authorization = n <= first and good or "Bearer refused" })
end
`);
    const refusedRuns = await neighbourRounds('refused neighbour', { url: `http://127.0.0.1:${neighbour.port}/`, headers: neighbour.auth },
      () => wrk(`http://127.0.0.1:${gw.logNone}/`, { ...flood, connections: floodConnections, script: refusedScript, env: { AGW_GOOD: auth.authorization, AGW_FIRST: String(2 * floodConnections) } }), true, floodConnections);
    // the same team downloading 1 MiB answers on 64 connections: a long answer's pieces
    const downloadRuns = await neighbourRounds('download neighbour', { url: `http://127.0.0.1:${neighbour.port}/`, headers: neighbour.auth },
      () => wrk(`http://127.0.0.1:${gw.logNone}/big`, { ...flood, connections: 64, headers: auth }));
    // ...and uploading 1 MiB bodies (buffered for retries: a Service route buffers up to 1 MiB; read
    // in the same turns as a streamed body)
    const uploadScript = join(dir, 'upload.lua');
    writeFileSync(uploadScript, 'wrk.method = "POST"\nwrk.body = string.rep("x", 1048576)\n');
    const uploadRuns = await neighbourRounds('upload neighbour', { url: `http://127.0.0.1:${neighbour.port}/`, headers: neighbour.auth },
      () => wrk(`http://127.0.0.1:${gw.logNone}/`, { ...flood, connections: 64, headers: auth, script: uploadScript }));
    const tlsNeighbour = { url: `https://127.0.0.1:${tls.b}/`, headers: neighbour.auth };
    // node:tls, not wrk: wrk resumes the TLS session on every other new connection (no signature).
    // A full handshake costs the client about what it costs the server (~0.7 ms of CPU, measured):
    // the flood runs at the lowest priority, on what CPU 0 has left after the measured wrk, the
    // upstream and the control plane, so that the other team's numbers are the operator's doing
    const handshakeRuns = await neighbourRounds('handshake neighbour', tlsNeighbour, async () => parseWrk((await promisify(execFile)('taskset',
      ['-c', '0', 'nice', '-n', '19', node, join(repoRoot, 'dist', 'bench', 'handshake-flood.js'), '--port', String(tls.a), '--connections', '64', '--seconds', String(flood.seconds)],
      { env: { ...process.env, AGW_FLOOD_TOKEN: token } })).stdout));
    // the other side of the share: team bench's 64 connections alone, and beside team bench-b's one
    // caller (each request sent when the last is answered), which holds bench to about its own
    // starts per turn: what a busy team gives up for a team with few callers
    const besideRuns = await neighbourRounds('neighbour beside one caller', { url: `http://127.0.0.1:${gw.logNone}/`, headers: auth, connections },
      () => wrk(`http://127.0.0.1:${neighbour.port}/`, { ...flood, connections: 1, headers: neighbour.auth }));
    // another team's caller that is quiet for longer than a namespace's alone window between
    // requests (a kubectl user: a new TLS connection, a full handshake and one request each): alone,
    // and while team bench floods its gateway (which then starts 4 times the bound a turn until
    // that caller's connection comes). Each request's time, from connect to the answer's end.
    const quietRuns: Array<{ alone: number[]; flooded: number[] }> = [];
    if (!opt.only || opt.only.split(',').some((o) => 'quiet neighbour'.includes(o))) {
      const calls = opt.smoke ? 2 : 6, gapMs = 1200;
      const quiet = async (): Promise<number[]> => {
        const ms: number[] = [];
        for (let i = 0; i < calls; i++) {
          await new Promise((r) => setTimeout(r, gapMs));
          const agent = new Agent({ connect: { rejectUnauthorized: false } });
          try {
            const t = performance.now();
            const r = await request(`https://127.0.0.1:${tls.b}/`, { dispatcher: agent, headers: neighbour.auth });
            await r.body.arrayBuffer();
            ms.push(performance.now() - t);
            if (r.statusCode !== 200) throw new Error(`quiet neighbour: ${r.statusCode}`);
          } finally {
            await agent.destroy();
          }
        }
        return ms;
      };
      for (let r = 0; r < rounds; r++) {
        const alone = await quiet();
        const flooding = wrk(`http://127.0.0.1:${gw.logNone}/`, { seconds: Math.ceil((calls * gapMs) / 1000) + 3, cpu: 0, connections: floodConnections, headers: auth });
        flooding.catch(() => {});
        await new Promise((res) => setTimeout(res, 1000));
        const flooded = await quiet();
        const f = await flooding;
        // a flood that failed would leave an idle loop: figures "beside the flood" without one
        if (f.requests === 0 || f.non2xx > 0 || f.errors > 0) throw new Error(`quiet neighbour (flood): ${f.requests} answers, ${f.non2xx} non-2xx, ${f.errors} socket errors`);
        quietRuns.push({ alone, flooded });
      }
    }
    const loadRss = rssMiB(opPid);

    const median = (xs: number[]) => {
      const s = [...xs].sort((a, b) => a - b), m = s.length >> 1;
      return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
    };
    const row = (name: string) => {
      const rs = results.get(name)!;
      return { rps: median(rs.map((x) => x.rps)), p50: median(rs.map((x) => x.p50)), p99: median(rs.map((x) => x.p99)), cpu: median(rs.map((x) => x.cpuUsPerReq ?? NaN)) };
    };
    console.log(`\n${rounds} round(s) of ${seconds} s per case${warmup > 0 ? ` after ${warmup} s of each not measured` : ''}, wrk 1 thread, ${connections} connections, 1 KiB answers; medians`);
    console.log('| path | req/s | p50 ms | p99 ms | CPU µs/req (proxy) |\n| --- | ---: | ---: | ---: | ---: |');
    for (const c of chosen) {
      const x = row(c.name);
      console.log(`| ${c.name} | ${Math.round(x.rps)} | ${x.p50.toFixed(2)} | ${x.p99.toFixed(2)} | ${Number.isNaN(x.cpu) ? '—' : Math.round(x.cpu)} |`);
    }
    if (warm.size) {
      console.log(`\nthe first ${warmup} s of each case (not measured above): req/s, p99 ms, answers not 2xx and socket errors`);
      console.log(chosen.map((c) => {
        const w = warm.get(c.name)!;
        return `${c.name}: ${Math.round(w.rps)}, ${w.p99.toFixed(2)}${w.non2xx || w.errors ? `, ${w.non2xx} not 2xx, ${w.errors} errors` : ''}`;
      }).join('; '));
    }
    // Each round's two cases ran minutes apart at most, while this machine's speed drifts by tens
    // of percent over a run: the ratio is the median of the rounds' own ratios (and their range).
    const ratio = (a: string, b: string, target: string, p99Target?: string) => {
      const xs = results.get(a), ys = results.get(b);
      if (!xs || !ys) return;
      const paired = (f: (x: WrkResult, y: WrkResult) => number, unit: string, target?: string) => {
        const rs = xs.map((x, i) => f(x, ys[i]!));
        const notes = [...(rs.length > 1 ? [`rounds ${Math.min(...rs).toFixed(2)}–${Math.max(...rs).toFixed(2)}`] : []), ...(target ? [`target ${target}`] : [])];
        return `${median(rs).toFixed(2)}×${unit}${notes.length ? ` (${notes.join('; ')})` : ''}`;
      };
      console.log(`| ${a} / ${b} | ${paired((x, y) => x.rps / y.rps, ' req/s', target)} | p99 ${paired((x, y) => x.p99 / y.p99, '', p99Target)} | ${paired((x, y) => y.cpuUsPerReq! / x.cpuUsPerReq!, '')} |`);
    };
    console.log('\n| ratio | throughput | latency | CPU efficiency (requests per proxy CPU second) |\n| --- | --- | --- | --- |');
    ratio('gateway Service route (TokenReview, log none)', 'lean Node proxy', '≥ 0.9', '≤ 1.5');
    ratio('gateway apiserver route GET /version', 'kubectl proxy GET /version', '≥ 1.0', '≤ 1.0');
    ratio('gateway apiserver route GET /version', 'kubectl proxy (token) GET /version', '—', '—');
    ratio('gateway Service route (TokenReview, log none)', 'lean Node proxy + Authorization', '≥ 0.95 (authentication on vs off)');
    ratio('gateway Service route (TokenReview, log all)', 'gateway Service route (TokenReview, log none)', '≥ 0.95');
    ratio('gateway Service route (JWKS, log none)', 'gateway Service route (TokenReview, log none)', '—');
    ratio('gateway Service route (TokenReview, log none), 1 MiB answers', 'lean Node proxy, 1 MiB answers', '—');
    const printNeighbour = (title: string, runs: Neighbour[], [few, other] = [nsB, `${ns} (the flood)`]) => {
      if (!runs.length) return;
      const m = (f: (x: Neighbour) => number) => median(runs.map(f));
      const range = (f: (x: Neighbour) => number) => runs.length > 1
        ? ` (rounds ${Math.min(...runs.map(f)).toFixed(2)}–${Math.max(...runs.map(f)).toFixed(2)})` : '';
      const share = (x: Neighbour) => x.flooded.rps / x.alone.rps;
      const p99 = (x: Neighbour) => x.flooded.p99 / x.alone.p99;
      console.log(`\n${title}:`);
      const line = (who: string, f: (x: Neighbour) => WrkResult) =>
        `| ${who} | ${Math.round(m((x) => f(x).rps))} | ${m((x) => f(x).p50).toFixed(2)} | ${m((x) => f(x).p99).toFixed(2)} | ${m((x) => f(x).max).toFixed(1)} |`;
      console.log('| team | req/s | p50 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: | ---: |');
      console.log(line(`${few}, alone`, (x) => x.alone));
      console.log(line(`${few}, meanwhile`, (x) => x.flooded));
      console.log(line(other, (x) => x.flood));
      console.log(`${few} meanwhile / alone: ${m(share).toFixed(2)}× req/s${range(share)}, p99 ${m(p99).toFixed(2)}×${range(p99)}`);
      console.log(`meanwhile busy: the operator ${Math.round(m((x) => x.opBusy) * 100)}% of its CPU, CPU 0 (every wrk, the upstream, the control plane) ${Math.round(m((x) => x.cpu0Busy) * 100)}%`);
    };
    printNeighbour(`another team's 4 connections to its own gateway, alone and while team ${ns} floods its gateway (${floodConnections} connections)`, neighbourRuns);
    printNeighbour(`another team's 4 connections to its own gateway, alone and while team ${ns} sends its gateway requests it refuses (401) on ${floodConnections} connections, each admitted once`, refusedRuns);
    printNeighbour(`another team's 4 connections to its own gateway, alone and while team ${ns} downloads 1 MiB answers through its gateway on 64 connections`, downloadRuns);
    printNeighbour(`another team's 4 connections to its own gateway, alone and while team ${ns} uploads 1 MiB bodies through its gateway on 64 connections`, uploadRuns);
    printNeighbour(`another team's 4 TLS connections to its own gateway, alone and while team ${ns} opens new TLS connections to its own (64 at a time, a full handshake per request; RSA-2048 keys)`, handshakeRuns);
    printNeighbour(`team ${ns}'s ${connections} connections to its gateway, alone and beside another team's one caller`, besideRuns, [ns, `${nsB} (one connection)`]);
    if (quietRuns.length) {
      const all = (f: (x: { alone: number[]; flooded: number[] }) => number[]) => quietRuns.flatMap(f).sort((a, b) => a - b);
      const show = (xs: number[]) => `median ${median(xs).toFixed(1)} ms, max ${xs.at(-1)!.toFixed(1)} ms`;
      console.log(`\nanother team's quiet caller (a new TLS connection and one request every 1.2 s, ${all((x) => x.alone).length} requests): `
        + `alone ${show(all((x) => x.alone))}; while team ${ns} floods its gateway (${floodConnections} connections) ${show(all((x) => x.flooded))}`);
    }
    console.log(`\none token, 1,000 concurrent first requests: ${firstRequests} TokenReview(s) (target 1)`);
    if (tails.size) {
      console.log('\nwhere the gateway cases\' tails are (the operator\'s histograms): requests over 25 and 50 ms, and those whose upstream alone took that long');
      console.log('(event loop delay: its p99 in each round, and its longest, from the operator\'s nodejs_eventloop_lag)');
      console.log('| case | requests | over 25 ms | upstream over 25 ms | over 50 ms | upstream over 50 ms | event loop delay p99, max ms |\n| --- | ---: | ---: | ---: | ---: | ---: | --- |');
      for (const [name, { buckets: [r25, u25, r50, u50, r, u], lagP99, lagMax }] of tails) {
        const pct = (x: number, of: number) => (of ? `${((100 * (of - x)) / of).toFixed(2)}%` : '—');
        console.log(`| ${name} | ${r} | ${pct(r25!, r!)} | ${pct(u25!, u!)} | ${pct(r50!, r!)} | ${pct(u50!, u!)} | ${lagP99.map((x) => x.toFixed(1)).join(', ')}; ${lagMax.toFixed(1)} |`);
      }
    }
    if (gc.requests) {
      const per = (x: number) => ((x * 1e6) / gc.requests).toFixed(1);
      console.log(`operator GC while it proxied: ${gc.full} full GCs (${per(gc.fullS)} µs per request), young generation ${per(gc.minorS)} µs per request`);
    }
    console.log(`operator RSS: ${idleRss} MiB idle, ${readyRss} MiB with the 7 gateways, ${loadRss} MiB after the run`);
  } finally {
    await op?.stop();
    for (const p of procs) await p.stop('SIGTERM', 3000).catch(() => {});
    await net?.destroy();
    await cp.stop();
    rmSync(files, { recursive: true, force: true });
  }
}

await main();
