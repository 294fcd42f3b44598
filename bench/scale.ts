// The scale benchmark: N AccessGateways created at once (in parallel, straight to the apiserver),
// the time until every one is Ready, and the operator's RSS idle, then with them all. The operator
// runs alone on CPU 1; the control plane and this process on CPU 0.
//   scripts/bench scale [--gateways 1000,10000] [--node-args=FLAGS]
import { execFileSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { cpuMs, cpuTicks, pin, rssMiB } from './procfs.js';
import { request } from 'undici';
import { ApiError, KubeClient, loadKubeConfig } from '../src/kube/client.js';
import { silentLogger } from '../src/observability/logger.js';
import { startControlPlane } from '../test/support/control-plane.js';
import { startOperator } from '../test/support/operator.js';
import { chartNodeOptions } from '../test/support/chart-operator.js';
import { applyYaml, installCRD, namespaceYaml, tokenKubeconfig } from '../test/support/cluster.js';
import { join } from 'node:path';

const { values: opt } = parseArgs({ options: {
  gateways: { type: 'string', default: '1000,10000' },
  /** Node/V8 flags for the operator (space-separated); default: the chart's operator.nodeOptions; '' for none */
  'node-args': { type: 'string' },
} });
const nodeArgs = opt['node-args'] === undefined ? chartNodeOptions() : opt['node-args'].split(' ').filter(Boolean);
if (nodeArgs.length) console.log(`operator node flags: ${nodeArgs.join(' ')}`);
const sizes = opt.gateways.split(',').map(Number);
const namespaces = 20;

const cpuSeconds = (pid: number) => cpuMs([pid]) / 1000;

async function pool<T>(items: T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(Array.from({ length: n }, async () => { while (i < items.length) await fn(items[i++]!); }));
}

/**
 * Calls `on` for every watch event on AccessGateways until aborted. From resourceVersion 0 a watch
 * starts with the current objects, so a watch that starts (or restarts) late misses nothing.
 */
function watchGateways(client: KubeClient, on: (type: string, obj: any) => void): AbortController {
  const ac = new AbortController();
  void (async () => {
    while (!ac.signal.aborted) {
      await client.watch('/apis/access-gateway.io/v1alpha1/accessgateways?watch=1&resourceVersion=0', ac.signal, 600_000, undefined,
        (ev) => { if (ev.type !== 'ERROR' && ev.type !== 'BOOKMARK') on(ev.type, ev.object); })
        .catch(async (err) => {
          // a new CRD's watch cache answers 429 while it starts; anything else ends the benchmark
          if (ac.signal.aborted || (err instanceof ApiError && err.status === 429)) return new Promise((r) => setTimeout(r, 200));
          console.error(err);
          process.exit(1);
        });
    }
  })();
  return ac;
}

for (const size of sizes) {
  const cp = await startControlPlane();
  try {
    pin([...execFileSync('pgrep', ['-f', cp.dir], { encoding: 'utf8' }).trim().split('\n').map(Number), process.pid], 0);
    await installCRD(cp);
    for (let n = 0; n < namespaces; n++) await applyYaml(cp, namespaceYaml(`scale-${n}`, []));
    // Ready is counted from a watch: polling lists of thousands of gateways would load the apiserver
    const ready = new Set<string>();
    const watching = watchGateways(await KubeClient.create(loadKubeConfig(cp.kubeconfig), silentLogger), (type, g) => {
      const key = `${g.metadata.namespace}/${g.metadata.name}`;
      if (type !== 'DELETED' && g.status?.conditions?.some((c: any) => c.type === 'Ready' && c.status === 'True')) ready.add(key);
      else ready.delete(key);
    });
    // The operator authenticates as in a cluster: a service account's token (an hour's), not the
    // admin certificate (whose chain the apiserver verifies on every request); bound to
    // cluster-admin here, not to the chart's ClusterRole.
    await cp.kubectl(['create', 'serviceaccount', 'operator', '-n', 'default']);
    await cp.kubectl(['create', 'clusterrolebinding', 'bench-operator', '--clusterrole=cluster-admin', '--serviceaccount=default:operator']);
    const kubeconfig = tokenKubeconfig(join(cp.dir, 'operator.kubeconfig'), cp.url, await cp.token('default', 'operator', [cp.issuer]), { ca: cp.ca.cert });
    const op = await startOperator({ ...cp, kubeconfig }, { cpu: 1, portRange: [20000, 20000 + size + 99], nodeArgs,
      args: ['--log-level', 'warn', '--metrics-auth', 'none', '--max-gateways-per-namespace', '0'] });
    const pid = op.child.pid!;
    const idle = rssMiB(pid);
    const apiPid = Number(execFileSync('pgrep', ['-f', `kube-apiserver.*${cp.dir}`], { encoding: 'utf8' }).trim().split('\n')[0]);
    const etcdPid = Number(execFileSync('pgrep', ['-f', `etcd --name default --data-dir ${cp.dir}`], { encoding: 'utf8' }).trim().split('\n')[0]);
    const cpu0 = { op: cpuSeconds(pid), api: cpuSeconds(apiPid), etcd: cpuSeconds(etcdPid), self: cpuSeconds(process.pid), ticks: cpuTicks(0) };
    const t0 = performance.now();
    await pool(Array.from({ length: size }, (_, i) => i), 32, async (i) => {
      const r = await cp.api('POST', `/apis/access-gateway.io/v1alpha1/namespaces/scale-${i % namespaces}/accessgateways`, {
        apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: `gw-${i}` },
        spec: { authentication: { audiences: ['gw'] }, access: [{ groups: ['system:serviceaccounts'] }],
          routes: [{ name: 'kube-api', pathPrefix: '/', apiserver: { acceptPaths: ['^/api/.*'] } }] },
      });
      if (r.status !== 201) throw new Error(`create gw-${i}: ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
    });
    const created = performance.now() - t0;
    while (ready.size < size && performance.now() - t0 < 600_000) await new Promise((r) => setTimeout(r, 100));
    const readyAfter = performance.now() - t0;
    const ticks = cpuTicks(0);
    const cpu = { op: cpuSeconds(pid) - cpu0.op, api: cpuSeconds(apiPid) - cpu0.api, etcd: cpuSeconds(etcdPid) - cpu0.etcd,
      self: cpuSeconds(process.pid) - cpu0.self, cpu0Busy: (ticks.busy - cpu0.ticks.busy) / (ticks.total - cpu0.ticks.total) };
    await new Promise((r) => setTimeout(r, 2000));
    const atReady = rssMiB(pid);
    await new Promise((r) => setTimeout(r, 30_000));
    const settled = rssMiB(pid);
    const s0 = performance.now();
    let bytes = 0;
    for await (const c of (await request(`http://127.0.0.1:${op.adminPort}/metrics`)).body) bytes += c.length;
    const scrapeMs = performance.now() - s0;
    console.log(`${size} gateways: created in ${(created / 1000).toFixed(1)} s; ${ready.size} Ready ${(readyAfter / 1000).toFixed(1)} s after the first create; `
      + `CPU until then: operator ${cpu.op.toFixed(1)} s, apiserver ${cpu.api.toFixed(1)} s, etcd ${cpu.etcd.toFixed(1)} s, `
      + `this benchmark's client ${cpu.self.toFixed(1)} s (CPU 0 busy ${Math.round(cpu.cpu0Busy * 100)}% of the time); `
      + `operator RSS ${idle} MiB idle, ${atReady} MiB 2 s after all Ready, ${settled} MiB 30 s later; `
      + `a /metrics scrape: ${(bytes / 1048576).toFixed(1)} MiB in ${Math.round(scrapeMs)} ms, RSS ${rssMiB(pid)} MiB after it`);
    await op.stop();
    watching.abort();
  } finally {
    await cp.stop();
  }
}
