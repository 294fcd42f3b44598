// Two operator replicas against one control plane: one holds the Lease and writes status, both
// serve every listener; SIGKILL the leader and the other writes status within 20 s.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startControlPlane, type ControlPlane } from '../support/control-plane.js';
import { startOperator, testPortRange, type OperatorProc } from '../support/operator.js';
import { applyYaml, getGateway, installCRD, namespaceYaml, waitObserved } from '../support/cluster.js';
import { waitFor } from '../support/procs.js';

const ns = 'team-ha';
let cp: ControlPlane;
const ops: OperatorProc[] = [];
let token: string;

const gateway = (accept: string) => `
apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: ha, namespace: ${ns}}
spec:
  authentication: {audiences: [gw]}
  access: [{serviceAccounts: [{namespace: ${ns}, name: app}]}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {acceptPaths: [${accept}]}}]
`;

before(async () => {
  cp = await startControlPlane();
  await installCRD(cp);
  await applyYaml(cp, namespaceYaml(ns, ['app']));
  const range = await testPortRange();
  for (const [i, addr] of [[1, '127.0.0.1'], [2, '127.0.0.2']] as const) {
    ops.push(await startOperator(cp, {
      portRange: range, logName: `operator-${i}.log`, env: { ...process.env, POD_NAME: `op-${i}` },
      args: ['--leader-elect', '--leader-election-namespace', ns, '--listen-address', addr],
    }));
  }
  token = await cp.token(ns, 'app', ['gw']);
}, { timeout: 180_000 });

after(async () => {
  for (const o of ops) await o.stop();
  await cp?.stop();
});

const holder = async () => (await cp.api('GET', `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases/access-gateway-operator`)).body?.spec?.holderIdentity;
const serves = async (addr: string, port: number) =>
  (await fetch(`http://${addr}:${port}/version`, { headers: { authorization: `Bearer ${token}` } })).status === 200;

test('exactly one replica holds the Lease and writes status; both serve; the other takes over after SIGKILL', async () => {
  const leader = await waitFor('a leader', async () => holder(), 30_000);
  assert.ok(leader === 'op-1' || leader === 'op-2');
  const [lead, follow] = leader === 'op-1' ? [ops[0]!, ops[1]!] : [ops[1]!, ops[0]!];
  const followAddr = leader === 'op-1' ? '127.0.0.2' : '127.0.0.1';
  const leadAddr = leader === 'op-1' ? '127.0.0.1' : '127.0.0.2';

  await applyYaml(cp, gateway('"^/version$"'));
  const port = (await waitObserved(cp, ns, 'ha')).status.listener.port;
  await waitFor('both replicas serve', async () => (await serves(leadAddr, port)) && (await serves(followAddr, port)), 10_000);
  assert.match(readFileSync(lead.logFile, 'utf8'), /status written/);
  assert.doesNotMatch(readFileSync(follow.logFile, 'utf8'), /status written/);

  // SIGKILL the leader: no release, the Lease must expire
  lead.child.kill('SIGKILL');
  await lead.exited;
  await applyYaml(cp, gateway('"^/version$", "^/api/.*"'));
  const gen = (await getGateway(cp, ns, 'ha')).metadata.generation;
  // until the survivor writes status (20 s at most), it serves every request it is sent
  const deadline = Date.now() + 20_000;
  const failures: string[] = [];
  let checks = 0;
  for (;;) {
    checks++;
    const ok = await serves(followAddr, port).catch((e) => { failures.push(String(e)); return true; });
    if (!ok) failures.push('not 200');
    if ((await getGateway(cp, ns, 'ha')).status.observedGeneration === gen) break;
    assert.ok(Date.now() < deadline, 'the other replica did not write status within 20 s');
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.deepEqual(failures, [], `the surviving replica failed ${failures.length} of ${checks} requests`);
  assert.equal(await holder(), leader === 'op-1' ? 'op-2' : 'op-1');
  assert.match(readFileSync(follow.logFile, 'utf8'), /status written/);
});
