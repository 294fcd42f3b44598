// The demo: a local control plane, the CRD, the examples, the operator, and ready-to-paste
// commands that go through the gateway with freshly minted tokens. Runs until Ctrl-C.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { startControlPlane, repoRoot } from './control-plane.js';
import { startOperator } from './operator.js';
import { createListenerTLS, tokenKubeconfig } from './cluster.js';
import { waitFor } from './procs.js';
import { metricsReaderToken } from './metrics.js';

const cp = await startControlPlane();
const stopAll = async () => { await op?.stop(); await cp.stop(); process.exit(0); };
process.on('SIGINT', () => void stopAll());
process.on('SIGTERM', () => void stopAll());
let op: Awaited<ReturnType<typeof startOperator>> | undefined;
console.log(`control plane up: ${cp.url} (kubeconfig ${cp.kubeconfig})`);
await cp.kubectl(['apply', '--server-side', '-f', join(repoRoot, 'deploy', 'crds')]);
await cp.kubectl(['wait', '--for=condition=Established', 'crd/accessgateways.access-gateway.io', '--timeout=30s']);
await cp.kubectl(['apply', '-f', join(repoRoot, 'deploy', 'examples', 'namespace.yaml')]);
const ca = await createListenerTLS(cp, 'team-payments', 'payments-gw-tls');
await cp.kubectl(['apply', '-f', join(repoRoot, 'deploy', 'examples')]);
op = await startOperator(cp, { logName: 'operator.log' });
await cp.kubectl(['wait', '--for=condition=Ready', 'agw/payments', '-n', 'team-payments', '--timeout=30s']);
const port = JSON.parse(await cp.kubectl(['get', 'agw/payments', '-n', 'team-payments', '-o', 'json'])).status.listener.port;
const token = await cp.token('team-payments', 'billing', ['access-gateway'], 3600);
const kubeconfig = tokenKubeconfig(join(cp.dir, 'billing.kubeconfig'), `https://127.0.0.1:${port}`, token, { ca: ca.cert, namespace: 'team-payments' });
await waitFor('kubectl through the gateway', async () => {
  execFileSync('kubectl', ['--kubeconfig', kubeconfig, 'get', 'configmaps'], { stdio: 'pipe' });
  return true;
});
const scraper = await metricsReaderToken(cp);
console.log(await cp.kubectl(['get', 'agw', '-A']));
console.log(`
The payments gateway listens on https://127.0.0.1:${port} (CA ${ca.certFile}); billing's token (audience access-gateway, 1 h) is minted.
Try:

  curl -s --cacert ${ca.certFile} -H "Authorization: Bearer ${token}" https://127.0.0.1:${port}/api/v1/namespaces/team-payments/configmaps

  kubectl --kubeconfig ${kubeconfig} get configmaps

  curl -s -H "Authorization: Bearer ${scraper}" http://127.0.0.1:${op.adminPort}/metrics   # a metrics-reader's token

Admin kubeconfig: ${cp.kubeconfig}; operator log: ${op.logFile}
Ctrl-C stops everything.`);
