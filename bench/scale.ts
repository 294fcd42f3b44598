// The scale benchmark: N AccessGateways created at once (in parallel, straight to the apiserver),
// the time until every one is Ready, and the operator's RSS idle, then with them all. The operator
// runs alone on CPU 1; the control plane and this process on CPU 0.
//   scripts/bench-scale [--gateways 1000,10000]
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { startControlPlane } from '../test/support/control-plane.js';
import { startOperator } from '../test/support/operator.js';
import { applyYaml, installCRD, namespaceYaml } from '../test/support/cluster.js';

const { values: opt } = parseArgs({ options: { gateways: { type: 'string', default: '1000,10000' } } });
const sizes = opt.gateways.split(',').map(Number);
const namespaces = 20;

function rssMiB(pid: number): number {
  return Math.round(Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024);
}

async function pool<T>(items: T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(Array.from({ length: n }, async () => { while (i < items.length) await fn(items[i++]!); }));
}

for (const size of sizes) {
  const cp = await startControlPlane();
  try {
    execFileSync('sh', ['-c', `for p in $(pgrep -f ${cp.dir}); do taskset -a -p -c 0 $p >/dev/null; done`]);
    execFileSync('taskset', ['-a', '-p', '-c', '0', String(process.pid)], { stdio: 'ignore' });
    await installCRD(cp);
    for (let n = 0; n < namespaces; n++) await applyYaml(cp, namespaceYaml(`scale-${n}`, []));
    const op = await startOperator(cp, { cpu: 1, portRange: [20000, 20000 + size + 99],
      args: ['--log-level', 'warn', '--metrics-auth', 'none', '--max-gateways-per-namespace', '0'] });
    const pid = op.child.pid!;
    const idle = rssMiB(pid);
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
    let ready = 0;
    for (;;) {
      const list = await cp.api('GET', '/apis/access-gateway.io/v1alpha1/accessgateways?resourceVersion=0');
      ready = (list.body.items as any[]).filter((g) => g.status?.conditions?.some((c: any) => c.type === 'Ready' && c.status === 'True')).length;
      if (ready === size || performance.now() - t0 > 600_000) break;
      await new Promise((r) => setTimeout(r, 1000));
    }
    const readyAfter = performance.now() - t0;
    await new Promise((r) => setTimeout(r, 2000));
    console.log(`${size} gateways: created in ${(created / 1000).toFixed(1)} s; ${ready} Ready ${(readyAfter / 1000).toFixed(1)} s after the first create; `
      + `operator RSS ${idle} MiB idle, ${rssMiB(pid)} MiB with them`);
    await op.stop();
  } finally {
    await cp.stop();
  }
}
