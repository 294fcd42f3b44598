// Prints the added latency of the gateway: N sequential GET /version through an Impersonate
// route (token cached) versus straight to the apiserver, on keep-alive connections.
// Run: npx tsc -p tsconfig.json && node dist/bench/proxy-latency.js [N]
import { Agent, request } from 'undici';
import { startControlPlane } from '../test/support/control-plane.js';
import { startOperator } from '../test/support/operator.js';
import { applyYaml, gatewayPort, installCRD, namespaceYaml } from '../test/support/cluster.js';

const n = Number(process.argv[2] ?? 2000);
const cp = await startControlPlane();
try {
  await installCRD(cp);
  await applyYaml(cp, namespaceYaml('bench', ['app']));
  const op = await startOperator(cp, { args: ['--log-level', 'warn'] });
  try {
    await applyYaml(cp, `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: bench, namespace: bench}
spec:
  authentication: {audiences: [gw], cacheTTLSeconds: 600}
  access: [{serviceAccounts: [{namespace: bench, name: app}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {acceptPaths: ["^/version$"]}}]
`);
    const port = await gatewayPort(cp, 'bench', 'bench');
    const token = await cp.token('bench', 'app', ['gw']);
    const direct = new Agent({ connect: { ca: cp.ca.cert, cert: cp.admin.cert, key: cp.admin.key } });
    const plain = new Agent();
    const measure = async (url: string, dispatcher: Agent, headers: Record<string, string>) => {
      for (let i = 0; i < 200; i++) await (await request(url, { dispatcher, headers })).body.text();
      const times: number[] = [];
      const t0 = performance.now();
      for (let i = 0; i < n; i++) {
        const s = performance.now();
        const r = await request(url, { dispatcher, headers });
        await r.body.text();
        if (r.statusCode !== 200) throw new Error(`status ${r.statusCode}`);
        times.push(performance.now() - s);
      }
      const total = performance.now() - t0;
      times.sort((a, b) => a - b);
      const q = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))]!.toFixed(3);
      return `p50 ${q(0.5)} ms  p99 ${q(0.99)} ms  ${(n / (total / 1000)).toFixed(0)} req/s`;
    };
    console.log(`requests: ${n} sequential GET /version, keep-alive`);
    console.log(`apiserver direct (admin cert):      ${await measure(cp.url + '/version', direct, {})}`);
    console.log(`through the gateway (Impersonate):  ${await measure(`http://127.0.0.1:${port}/version`, plain, { authorization: `Bearer ${token}` })}`);
    console.log(`operator RSS after run: ${(Number((await import('node:fs')).readFileSync(`/proc/${op.child.pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)?.[1] ?? 0) / 1024).toFixed(0)} MiB`);
    await direct.close(); await plain.close();
  } finally {
    await op.stop();
  }
} finally {
  await cp.stop();
}
