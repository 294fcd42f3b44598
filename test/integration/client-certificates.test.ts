// Client certificates as identities (spec.listener.tls.clientCA), with the real kubectl and the
// chart's least-privilege operator. A team's CA is a team source: whatever its certificates say,
// the apiserver sees team:NAMESPACE:CN in groups team:NAMESPACE:O. Two teams try to escape that
// (system:admin in system:masters, the other team's user names, another team's CA); refused and
// unverified certificates get a 401 that says why; a token still works beside them unless the
// gateway requires certificates; a rotated CA stops old certificates on open connections too.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { request as httpsRequest, Agent } from 'node:https';
import { join } from 'node:path';
import { startControlPlane, type ControlPlane } from '../support/control-plane.js';
import { startChartOperator } from '../support/chart-operator.js';
import { makeCA, makeLeaf, type CertPair } from '../support/certs.js';
import { waitFor } from '../support/procs.js';
import {
  applyYaml, bearer, condition, createListenerTLS, curl, gatewayPort, getGateway, installCRD, namespaceYaml, runKubectl, waitObserved, type KubectlResult,
} from '../support/cluster.js';

let cp: ControlPlane;
let op: Awaited<ReturnType<typeof startChartOperator>>;
let dir: string;
const listenerCA: Record<string, CertPair> = {};
const url: Record<string, string> = {};
const certs: Record<string, CertPair> = {};
let teamACA: CertPair;

/** A kubeconfig for `server` with a client certificate (and a token, when given). */
function certKubeconfig(name: string, ns: string, cert: CertPair | null, token?: string): string {
  const file = join(dir, `${name}.kubeconfig`);
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  writeFileSync(file, JSON.stringify({
    apiVersion: 'v1', kind: 'Config', 'current-context': 'ctx',
    clusters: [{ name: 'c', cluster: { server: url[ns], 'certificate-authority-data': b64(listenerCA[ns]!.cert) } }],
    users: [{ name: 'u', user: {
      ...(cert ? { 'client-certificate-data': b64(cert.cert), 'client-key-data': b64(cert.key) } : {}),
      ...(token ? { token } : {}),
    } }],
    contexts: [{ name: 'ctx', context: { cluster: 'c', user: 'u', namespace: ns } }],
  }));
  return file;
}

function kubectl(kubeconfig: string, args: string[]): Promise<KubectlResult> {
  return runKubectl(['--kubeconfig', kubeconfig, ...args]);
}

async function whoami(kubeconfig: string): Promise<{ username: string; groups: string[]; extra?: Record<string, string[]> }> {
  const r = await kubectl(kubeconfig, ['auth', 'whoami', '-o', 'json']);
  assert.equal(r.code, 0, r.err);
  return JSON.parse(r.out).status.userInfo;
}

const gatewayYaml = (ns: string, mode: 'Optional' | 'Required', caName = 'clients-ca') => `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: people, namespace: ${ns}}
spec:
  listener: {tls: {secretName: people-tls, clientCA: {kind: ConfigMap, name: ${caName}, key: ca.crt, mode: ${mode}}}}
  authentication: {audiences: [gw]}
  access:
    - users: ["team:${ns}:alice"]
    - groups: ["team:${ns}:devs"]
    - serviceAccounts: [{namespace: ${ns}, name: bot}]
  routes:
    - {name: passthrough, pathPrefix: /passthrough, rewritePrefix: /, apiserver: {identity: Passthrough}}
    - {name: kube-api, pathPrefix: /, apiserver: {identity: Impersonate}}
`;

async function caConfigMap(ns: string, name: string, pem: string): Promise<void> {
  await applyYaml(cp, `apiVersion: v1
kind: ConfigMap
metadata: {name: ${name}, namespace: ${ns}, labels: {access-gateway.io/ca-bundle: "true"}}
data:
  ca.crt: |
${pem.trim().split('\n').map((l) => `    ${l}`).join('\n')}
`);
}

before(async () => {
  cp = await startControlPlane();
  await installCRD(cp);
  dir = mkdtempSync(join(cp.dir, 'client-certs-'));
  await applyYaml(cp, namespaceYaml('team-a', ['bot']));
  await applyYaml(cp, namespaceYaml('team-b', ['bot']));
  // team-a's RoleBinding grants its own certificate user; the apiserver knows nothing else of it
  await cp.kubectl(['create', 'role', 'cm-reader', '-n', 'team-a', '--verb=get,list', '--resource=configmaps']);
  await cp.kubectl(['create', 'rolebinding', 'alice-cm', '-n', 'team-a', '--role=cm-reader', '--user=team:team-a:alice']);
  await cp.kubectl(['create', 'configmap', 'alices-view', '-n', 'team-a', '--from-literal=k=v']);
  await cp.kubectl(['create', 'secret', 'generic', 'b-secret', '-n', 'team-b', '--from-literal=k=v']);
  teamACA = makeCA(dir, 'team-a-clients');
  const teamBCA = makeCA(dir, 'team-b-clients');
  const stranger = makeCA(dir, 'stranger');
  certs.alice = makeLeaf(dir, teamACA, 'alice', { cn: 'alice', orgs: ['devs'], client: true });
  // a team controls its CA, so it can mint any subject: these are the escapes it would try
  certs.admin = makeLeaf(dir, teamACA, 'admin', { cn: 'system:admin', orgs: ['system:masters', 'devs'], client: true });
  certs.bAlice = makeLeaf(dir, teamBCA, 'b-alice', { cn: 'alice', orgs: ['devs'], client: true });
  certs.strangerAlice = makeLeaf(dir, stranger, 'stranger-alice', { cn: 'alice', orgs: ['devs'], client: true });
  certs.serverOnly = makeLeaf(dir, teamACA, 'server-only', { cn: 'alice', orgs: ['devs'], client: false });
  await caConfigMap('team-a', 'clients-ca', teamACA.cert);
  await caConfigMap('team-b', 'clients-ca', teamBCA.cert);
  op = await startChartOperator(cp);
  for (const ns of ['team-a', 'team-b']) {
    listenerCA[ns] = await createListenerTLS(cp, ns, 'people-tls');
    await applyYaml(cp, gatewayYaml(ns, 'Optional'));
    url[ns] = `https://127.0.0.1:${await gatewayPort(cp, ns, 'people')}`;
  }
}, { timeout: 240_000 });

after(async () => {
  await op?.stop();
  await cp?.stop();
});

test('a client certificate of the team CA is the user team:NS:CN in groups team:NS:O, and the team RoleBinding grants it', async () => {
  const alice = certKubeconfig('alice', 'team-a', certs.alice!);
  const u = await whoami(alice);
  assert.equal(u.username, 'team:team-a:alice');
  assert.deepEqual(u.groups.sort(), ['system:authenticated', 'team:team-a:devs']);
  assert.deepEqual(u.extra?.['access-gateway.io/gateway'], ['team-a/people']);
  const own = await kubectl(alice, ['get', 'configmaps', '-o', 'name']);
  assert.equal(own.code, 0, own.err);
  assert.match(own.out, /configmap\/alices-view/);
  const other = await kubectl(alice, ['get', '--raw', '/api/v1/namespaces/team-b/secrets']);
  assert.notEqual(other.code, 0);
  assert.match(other.err, /team:team-a:alice.*cannot list resource "secrets"/);
});

test('system:admin in system:masters from a team CA stays inside the team: prefixed, and the apiserver refuses it', async () => {
  const admin = certKubeconfig('admin', 'team-a', certs.admin!);
  const u = await whoami(admin);
  assert.equal(u.username, 'team:team-a:system:admin');
  assert.deepEqual(u.groups.sort(), ['system:authenticated', 'team:team-a:devs', 'team:team-a:system:masters']);
  for (const path of ['/api/v1/namespaces/team-b/secrets', '/api/v1/nodes', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings']) {
    const r = await kubectl(admin, ['get', '--raw', path]);
    assert.notEqual(r.code, 0, `${path}: ${r.out}`);
    assert.match(r.err, /Forbidden|forbidden/);
    assert.match(r.err, /team:team-a:system:admin/);
  }
});

test('the same subject from the other team CA is another identity: team-b alice cannot read what team-a alice may', async () => {
  const bAlice = certKubeconfig('b-alice', 'team-b', certs.bAlice!);
  assert.equal((await whoami(bAlice)).username, 'team:team-b:alice');
  const r = await kubectl(bAlice, ['get', '--raw', '/api/v1/namespaces/team-a/configmaps']);
  assert.notEqual(r.code, 0);
  assert.match(r.err, /team:team-b:alice.*cannot list resource "configmaps"/);
  // and team-a's certificates mean nothing on team-b's gateway
  const crossed = await curl(`${url['team-b']}/api/v1/namespaces/team-b/configmaps`, [
    '--cacert', listenerCA['team-b']!.certFile, '--cert', certs.alice!.certFile, '--key', certs.alice!.keyFile]);
  assert.equal(crossed.status, 401, crossed.body);
  assert.match(crossed.body, /client certificate refused/);
});

test('a refused certificate is a 401 that says why; with a token beside it the token decides (mode Optional)', async () => {
  const base = `${url['team-a']}/api/v1/namespaces/team-a/configmaps`;
  const tls = ['--cacert', listenerCA['team-a']!.certFile];
  // OpenSSL's verdicts: another CA's certificate; a server certificate (no clientAuth usage)
  for (const [c, why] of [['strangerAlice', /client certificate refused: UNABLE_TO_VERIFY_LEAF_SIGNATURE/], ['serverOnly', /client certificate refused: INVALID_PURPOSE/]] as const) {
    const r = await curl(base, [...tls, '--cert', certs[c]!.certFile, '--key', certs[c]!.keyFile]);
    assert.equal(r.status, 401, `${c}: ${r.body}`);
    assert.match(r.body, why, c);
    assert.match(r.headers, /www-authenticate: Bearer/i);
  }
  const token = await cp.token('team-a', 'bot', ['gw']);
  const both = certKubeconfig('stranger-and-token', 'team-a', certs.strangerAlice!, token);
  assert.equal((await whoami(both)).username, 'system:serviceaccount:team-a:bot');
  // a verified certificate wins over a token sent beside it, as in the apiserver
  const aliceAndToken = certKubeconfig('alice-and-token', 'team-a', certs.alice!, token);
  assert.equal((await whoami(aliceAndToken)).username, 'team:team-a:alice');
  // no certificate: the token alone
  const r = await curl(base, [...tls, ...bearer(token)]);
  assert.equal(r.status, 403, r.body); // the bot has no RBAC there: the apiserver's 403, not the gateway's 401
  assert.match(r.body, /system:serviceaccount:team-a:bot/);
});

test('a Passthrough route refuses a certificate caller: the token beside it would speak for someone else', async () => {
  const token = await cp.token('team-a', 'bot', ['gw']);
  const r = await curl(`${url['team-a']}/passthrough/api/v1/namespaces/team-a/configmaps`, [
    '--cacert', listenerCA['team-a']!.certFile, '--cert', certs.alice!.certFile, '--key', certs.alice!.keyFile, ...bearer(token)]);
  assert.equal(r.status, 403, r.body);
  assert.match(r.body, /passes the caller's own token to the apiserver; a client-certificate caller has none/);
});

test('a client CA that cannot be resolved is ResolvedRefs=False InvalidCertificateRef, and the other gateways keep serving', async () => {
  // team-b names a CA that exists only in team-a: references never leave the gateway's namespace
  await caConfigMap('team-a', 'a-only-ca', teamACA.cert);
  await applyYaml(cp, gatewayYaml('team-b', 'Optional', 'a-only-ca').replace('name: people,', 'name: broken,'));
  const gw = await waitFor('broken gateway observed', async () => {
    const g = await getGateway(cp, 'team-b', 'broken');
    return condition(g, 'ResolvedRefs')?.status === 'False' ? g : undefined;
  }, 20_000);
  assert.equal(condition(gw, 'ResolvedRefs').reason, 'InvalidCertificateRef');
  assert.match(condition(gw, 'ResolvedRefs').message, /client CA ConfigMap team-b\/a-only-ca key ca.crt: not found/);
  assert.equal(condition(gw, 'Ready').status, 'False');
  const bAlice = certKubeconfig('b-alice-2', 'team-b', certs.bAlice!);
  assert.equal((await whoami(bAlice)).username, 'team:team-b:alice');
  await cp.kubectl(['delete', 'agw', 'broken', '-n', 'team-b']);
});

test('mode Required: a token alone is refused with the reason; the certificate still works', async () => {
  await applyYaml(cp, gatewayYaml('team-a', 'Required'));
  await waitObserved(cp, 'team-a', 'people');
  const token = await cp.token('team-a', 'bot', ['gw']);
  const base = `${url['team-a']}/api/v1/namespaces/team-a/configmaps`;
  const r = await waitFor('token refused', async () => {
    const x = await curl(base, ['--cacert', listenerCA['team-a']!.certFile, ...bearer(token)]);
    return x.status === 401 ? x : undefined;
  }, 15_000);
  assert.match(r.body, /gateway requires a client certificate signed by its client CA \(spec.listener.tls.clientCA\)/);
  const ok = await curl(base, ['--cacert', listenerCA['team-a']!.certFile, '--cert', certs.alice!.certFile, '--key', certs.alice!.keyFile]);
  assert.equal(ok.status, 200, ok.body);
  await applyYaml(cp, gatewayYaml('team-a', 'Optional'));
  await waitObserved(cp, 'team-a', 'people');
});

test('a rotated client CA refuses the old certificates, on new connections and on a connection opened before', async () => {
  const agent = new Agent({ keepAlive: true, maxSockets: 1, ca: listenerCA['team-a']!.cert, cert: certs.alice!.cert, key: certs.alice!.key });
  const get = () => new Promise<{ status: number; body: string; socket: unknown }>((resolve, reject) => {
    const req = httpsRequest(`${url['team-a']}/api/v1/namespaces/team-a/configmaps`, { agent }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c) => { body += c; }).on('end', () => resolve({ status: res.statusCode!, body, socket: req.socket }));
    });
    req.on('error', reject).end();
  });
  try {
    const first = await get();
    assert.equal(first.status, 200, first.body);
    const next = makeCA(dir, 'team-a-clients-next');
    await caConfigMap('team-a', 'clients-ca', next.cert);
    const fresh = await waitFor('old certificate refused on a new connection', async () => {
      const x = await curl(`${url['team-a']}/api/v1/namespaces/team-a/configmaps`, [
        '--cacert', listenerCA['team-a']!.certFile, '--cert', certs.alice!.certFile, '--key', certs.alice!.keyFile]);
      return x.status === 401 ? x : undefined;
    }, 20_000);
    assert.match(fresh.body, /client certificate refused/);
    const again = await get();
    assert.equal(again.socket, first.socket, 'the same kept-alive connection');
    assert.equal(again.status, 401, again.body);
    assert.match(again.body, /not signed by the current client CA/);
    const nextAlice = makeLeaf(dir, next, 'alice-next', { cn: 'alice', orgs: ['devs'], client: true });
    assert.equal((await whoami(certKubeconfig('alice-next', 'team-a', nextAlice))).username, 'team:team-a:alice');
  } finally {
    agent.destroy();
    await caConfigMap('team-a', 'clients-ca', teamACA.cert);
  }
});
