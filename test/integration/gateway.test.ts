// The gateway lifecycle against a real control plane: apply, conditions, live edits without
// dropped connections, deletion; CRD validation; bad gateways that do not disturb others.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Agent, request, type IncomingMessage } from 'node:http';
import { createServer, type Server } from 'node:net';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { validateGateway } from '../../src/api/validate.js';
import { join } from 'node:path';
import { startControlPlane, repoRoot, type ControlPlane } from '../support/control-plane.js';
import { startOperator, type OperatorProc } from '../support/operator.js';
import { applyYaml, condition, gatewayPort, getGateway, installCRD, namespaceYaml, waitListenerClosed, waitObserved } from '../support/cluster.js';
import { freePort, waitFor } from '../support/procs.js';

let cp: ControlPlane;
let op: OperatorProc;
let token: string;

before(async () => {
  cp = await startControlPlane();
  await installCRD(cp);
  await applyYaml(cp, namespaceYaml('team-a', ['app']));
  await cp.kubectl(['create', 'role', 'cm-reader', '-n', 'team-a', '--verb=get,list,watch', '--resource=configmaps']);
  await cp.kubectl(['create', 'rolebinding', 'app-cm-reader', '-n', 'team-a', '--role=cm-reader', '--serviceaccount=team-a:app']);
  op = await startOperator(cp);
  token = await cp.token('team-a', 'app', ['gw']);
}, { timeout: 180_000 });

after(async () => {
  await op?.stop();
  await cp?.stop();
});

const gateway = (name: string, extra = '', route = '') => `
apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: ${name}, namespace: team-a}
spec:
  ${extra}
  authentication: {audiences: [gw]}
  access: [{serviceAccounts: [{namespace: team-a, name: app}]}]
  routes:
    - name: kube-api
      pathPrefix: /
      apiserver: {acceptPaths: ["^/api/.*", "^/version$"${route}]}
`;

/** GET through a listener on a given agent; resolves with status, body and the socket used. */
function get(port: number, path: string, agent: Agent): Promise<{ status: number; body: string; socket: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent, headers: { authorization: `Bearer ${token}` } }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body, socket: req.socket }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('an applied gateway answers within 2 s with every condition True for its generation', async () => {
  await applyYaml(cp, gateway('life'));
  // The listener answers (401 without a token) within 2 s of the apply.
  await waitFor('listener answers', async () => {
    const gw = await getGateway(cp, 'team-a', 'life');
    const port = gw?.status?.listener?.port;
    if (!port) return false;
    const res = await fetch(`http://127.0.0.1:${port}/version`);
    return res.status === 401;
  }, 2_000, 50);
  const gw = await waitObserved(cp, 'team-a', 'life');
  for (const type of ['Accepted', 'ResolvedRefs', 'Programmed', 'Ready']) {
    const c = condition(gw, type);
    assert.equal(c?.status, 'True', `${type}: ${JSON.stringify(c)}`);
    assert.equal(c.observedGeneration, gw.metadata.generation);
    assert.ok(c.reason && c.lastTransitionTime);
  }
  assert.equal(gw.status.observedGeneration, gw.metadata.generation);
  const port = gw.status.listener.port;
  assert.ok(port >= op.portRange[0] && port <= op.portRange[1]);
  // printer columns
  const table = await cp.kubectl(['get', 'agw', 'life', '-n', 'team-a']);
  assert.match(table, /NAME\s+PORT\s+READY\s+AGE/);
  assert.match(table, new RegExp(`life\\s+${port}\\s+True`));
});

test('editing routes takes effect without closing open connections; deleting closes the listener', async () => {
  await applyYaml(cp, gateway('edited'));
  const port = await gatewayPort(cp, 'team-a', 'edited');
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const first = await get(port, '/version', agent);
  assert.equal(first.status, 200);
  assert.equal((await get(port, '/apis', agent)).status, 403); // not accepted yet
  // an open watch through the gateway
  const events: string[] = [];
  const watch = request({ host: '127.0.0.1', port, path: '/api/v1/namespaces/team-a/configmaps?watch=1',
    headers: { authorization: `Bearer ${token}` } });
  let watchRes: IncomingMessage | undefined;
  const watchOpen = new Promise<void>((resolve) => watch.on('response', (res) => { watchRes = res; res.on('data', (c) => events.push(String(c))); resolve(); }));
  watch.end();
  await watchOpen;

  const gen = (await getGateway(cp, 'team-a', 'edited')).metadata.generation;
  await applyYaml(cp, gateway('edited', '', ', "^/apis$"'));
  await waitFor('new generation observed', async () => (await getGateway(cp, 'team-a', 'edited')).status.observedGeneration > gen);
  const after = await get(port, '/apis', agent);
  assert.equal(after.status, 200, after.body);
  assert.equal(after.socket, first.socket, 'the keep-alive connection survived the edit');
  assert.equal((await getGateway(cp, 'team-a', 'edited')).status.listener.port, port, 'port is stable');
  // the watch opened before the edit still streams
  await cp.kubectl(['create', 'configmap', 'during-edit', '-n', 'team-a']);
  await waitFor('watch event after edit', async () => events.join('').includes('during-edit'), 10_000).catch((e) => { throw new Error(`${e.message}; got ${JSON.stringify(events).slice(0, 500)}`); });
  // spec.authentication changes: the watch's caller is not authenticated again, so the watch ends
  // cleanly (its last chunk: not cut); a new request is authenticated as the spec says now
  assert.ok(!watchRes!.complete && !watchRes!.destroyed, 'the watch is still open before the change');
  const ended = new Promise<void>((resolve) => watchRes!.once('close', () => resolve()));
  const gen2 = (await getGateway(cp, 'team-a', 'edited')).metadata.generation;
  await applyYaml(cp, gateway('edited', '', ', "^/apis$"').replace('audiences: [gw]', 'audiences: [gw, other]'));
  await waitFor('new generation observed', async () => (await getGateway(cp, 'team-a', 'edited')).status.observedGeneration > gen2);
  await Promise.race([ended, new Promise((_, reject) => setTimeout(() => reject(new Error('the watch was not ended')), 10_000))]);
  assert.ok(watchRes!.complete, 'the watch was ended with its last chunk, not cut');
  assert.equal((await get(port, '/apis', agent)).status, 200);

  await cp.kubectl(['delete', 'agw', 'edited', '-n', 'team-a']);
  await waitListenerClosed(port, 10_000);
  watch.destroy();
  agent.destroy();
});

test('the CRD refuses invalid manifests with a message a person understands', async () => {
  const dir = join(repoRoot, 'test', 'fixtures', 'invalid');
  const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
  assert.ok(files.length >= 10);
  await applyYaml(cp, namespaceYaml('team-payments', []));
  for (const f of files) {
    const text = readFileSync(join(dir, f), 'utf8');
    const expect = /^# expect: (.*)$/m.exec(text)![1]!.trim();
    const err = await cp.kubectl(['apply', '-f', join(dir, f)]).then(() => undefined, (e) => String(e.stderr));
    assert.ok(err, `${f} was accepted`);
    assert.ok(err.includes(expect), `${f}: expected ${JSON.stringify(expect)} in ${err}`);
  }
});

test('the CRD\'s path rule and validate\'s twin of it agree, string by string (server dry-run)', async () => {
  const paths = ['/', '/a', '/a/', '/api//', '//', '/a//b', '/.', '/..', '/a/.', '/a/..', '/a/../b', '/a/..;x', '/.;', '/...', '/.well-known',
    '/a.b/c', '/%2e', '/caf%C3%A9', '/café', '/a\\b', '/a\u0000', '/a\u001f', '/a\u007f', '/a\u0085', '/a\u2028', '/a b', '/a?b', '/a#b', '/a;b', '/👋'];
  for (const [field, route] of [['pathPrefix', (p: string) => ({ name: 'r', pathPrefix: p, apiserver: {} })],
    ['rewritePrefix', (p: string) => ({ name: 'r', pathPrefix: '/x', rewritePrefix: p, apiserver: {} })]] as const) {
    for (const path of paths) {
      const gw = { apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: 'paths', namespace: 'team-a' },
        spec: { authentication: { audiences: ['gw'] }, routes: [route(path)] } };
      const r = await cp.api('POST', '/apis/access-gateway.io/v1alpha1/namespaces/team-a/accessgateways?dryRun=All', gw);
      const twin = validateGateway(gw).filter((p) => p.field === `spec.routes[0].${field}`);
      assert.equal(r.status === 201, twin.length === 0, `${field} ${JSON.stringify(path)}: apiserver ${r.status} ${JSON.stringify(r.body).slice(0, 200)}; validate ${JSON.stringify(twin)}`);
    }
  }
});

test('a name stored before the CRD refused it: Accepted=False InvalidName in its status, nothing served; its labels and status still take writes', async () => {
  const long = 'n'.repeat(60);
  // the CRD as it was: without the name rule
  const crd = readFileSync(join(repoRoot, 'deploy', 'crds', 'access-gateway.io_accessgateways.yaml'), 'utf8');
  const without = crd.replace(/\n {10}x-kubernetes-validations:\n(?: {12}.*\n)+?(?= {10}properties:)/, '\n');
  assert.notEqual(without, crd);
  const old = join(cp.dir, 'old-crd.yaml');
  writeFileSync(old, without);
  await cp.kubectl(['apply', '--server-side', '--force-conflicts', '-f', old]);
  try {
    await applyYaml(cp, gateway(long));
  } finally {
    await cp.kubectl(['apply', '--server-side', '--force-conflicts', '-f', join(repoRoot, 'deploy', 'crds')]);
  }
  assert.match(String(await cp.kubectl(['apply', '-f', '-'], gateway('m'.repeat(60))).then(() => 'created', (e) => e.stderr)), /at most 59 characters/, 'a new one is refused');
  const gw = await waitFor('InvalidName', async () => {
    const g = await getGateway(cp, 'team-a', long);
    return condition(g, 'Accepted')?.reason === 'InvalidName' ? g : undefined;
  }, 20_000);
  assert.equal(condition(gw, 'Accepted').status, 'False');
  assert.equal(condition(gw, 'Ready').status, 'False');
  if (gw.status.listener?.port) await waitListenerClosed(gw.status.listener.port, 5_000); // (the port stays its own while it exists)
  await cp.kubectl(['label', 'agw', long, '-n', 'team-a', 'seen=yes']);
  await cp.kubectl(['delete', 'agw', long, '-n', 'team-a']);
});

test('an invalid regex or a taken port marks only that gateway; the others keep serving', async () => {
  await applyYaml(cp, gateway('good'));
  const goodPort = await gatewayPort(cp, 'team-a', 'good');

  await applyYaml(cp, gateway('bad-regex', '', ', "^/api/(unclosed"'));
  const bad = await waitObserved(cp, 'team-a', 'bad-regex');
  assert.equal(condition(bad, 'Accepted').status, 'False');
  assert.equal(condition(bad, 'Accepted').reason, 'InvalidRegex');
  assert.equal(condition(bad, 'Ready').status, 'False');

  // two gateways asking for one port: the younger gets PortConflict
  const wanted = await freePort();
  await applyYaml(cp, gateway('first', `listener: {port: ${wanted}}`));
  assert.equal(await gatewayPort(cp, 'team-a', 'first'), wanted);
  await applyYaml(cp, gateway('second', `listener: {port: ${wanted}}`));
  const second = await waitObserved(cp, 'team-a', 'second');
  assert.equal(condition(second, 'Accepted').reason, 'PortConflict');
  assert.match(condition(second, 'Accepted').message, /team-a\/first/);

  // a port another process holds
  const blocker: Server = createServer();
  const held = await freePort();
  await new Promise<void>((r) => blocker.listen(held, '127.0.0.1', () => r()));
  await applyYaml(cp, gateway('taken', `listener: {port: ${held}}`));
  const taken = await waitObserved(cp, 'team-a', 'taken');
  assert.equal(condition(taken, 'Accepted').reason, 'PortConflict');
  assert.equal(condition(taken, 'Programmed').status, 'False');
  blocker.close();

  // the good gateways kept serving throughout
  for (const p of [goodPort, wanted]) {
    const res = await fetch(`http://127.0.0.1:${p}/version`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(res.status, 200);
  }
  // fixing the conflict (deleting first) lets second take the port
  await cp.kubectl(['delete', 'agw', 'first', '-n', 'team-a']);
  await waitFor('second programmed after first is gone', async () => {
    const g = await getGateway(cp, 'team-a', 'second');
    return condition(g, 'Ready')?.status === 'True';
  }, 40_000);
  // one Event for the conflict and one for its resolution
  const events = async () => (await cp.api('GET', '/api/v1/namespaces/team-a/events?fieldSelector=involvedObject.name=second')).body.items as any[];
  await waitFor('events recorded', async () => (await events()).some((e) => e.reason === 'Programmed'), 10_000);
  const evs = await events();
  const byReason = (r: string) => evs.filter((e) => e.reason === r);
  assert.equal(byReason('PortConflict').length, 1, JSON.stringify(evs.map((e) => [e.reason, e.count])));
  assert.equal(byReason('PortConflict')[0].type, 'Warning');
  assert.equal(byReason('PortConflict')[0].count, 1);
  assert.equal(byReason('Programmed').length, 1);
  assert.equal(byReason('Programmed')[0].type, 'Normal');
});
