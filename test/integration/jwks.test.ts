// authentication.mode JWKS: offline verification against the apiserver's issuer discovery
// keys, no TokenReview calls, and revocation of tokens whose pod is gone.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SignJWT, importPKCS8 } from 'jose';
import { request } from 'undici';
import { startControlPlane, type ControlPlane } from '../support/control-plane.js';
import { startOperator, type OperatorProc } from '../support/operator.js';
import { applyYaml, gatewayPort, installCRD, namespaceYaml, applyService } from '../support/cluster.js';
import { createTestNet, startServer, type TestNet } from '../support/netns.js';
import { waitFor } from '../support/procs.js';
import { scrapeMetrics } from '../support/metrics.js';

const ns = 'team-j';
let cp: ControlPlane;
let op: OperatorProc;
let net: TestNet;
let port: number;

const get = async (token: string) => {
  const r = await request(`http://127.0.0.1:${port}/web/whoami`, { headers: { authorization: `Bearer ${token}` } });
  const text = await r.body.text();
  return { status: r.statusCode, text };
};
const tokenReviews = async () => {
  const text = await scrapeMetrics(cp, op.adminPort);
  const found = [...text.matchAll(/^access_gateway_token_reviews_total\{[^}]*\} (\d+)/gm)];
  if (found.length === 0) throw new Error('no access_gateway_token_reviews_total series'); // missing is not zero
  return found.reduce((n, m) => n + Number(m[1]), 0);
};
const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');

async function claims(over: Record<string, unknown> = {}) {
  const sa = (await cp.api('GET', `/api/v1/namespaces/${ns}/serviceaccounts/a`)).body;
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: cp.issuer, sub: `system:serviceaccount:${ns}:a`, aud: ['gw'], iat: now - 60, nbf: now - 60, exp: now + 600,
    'kubernetes.io': { namespace: ns, serviceaccount: { name: 'a', uid: sa.metadata.uid } }, ...over,
  };
}
async function forge(over: Record<string, unknown> = {}) {
  return new SignJWT(await claims(over)).setProtectedHeader({ alg: 'RS256' }).sign(await importPKCS8(cp.saSigningKey, 'RS256'));
}

before(async () => {
  cp = await startControlPlane();
  await installCRD(cp);
  await applyYaml(cp, namespaceYaml(ns, ['a']));
  net = await createTestNet({ hosts: 1 });
  await startServer(net.hosts[0]!, { name: 'web0' });
  await applyService(cp, ns, 'web', [net.hosts[0]!.ip]);
  await applyYaml(cp, `apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: ${ns}}
spec: {serviceAccountName: a, containers: [{name: c, image: registry.invalid/none}]}
`);
  op = await startOperator(cp);
  await applyYaml(cp, `
apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: jw, namespace: ${ns}}
spec:
  authentication: {audiences: [gw], mode: JWKS, cacheTTLSeconds: 30}
  access: [{groups: [system:serviceaccounts:${ns}]}]
  routes: [{name: web, pathPrefix: /web/, rewritePrefix: /, service: {name: web, port: http}}]
`);
  port = await gatewayPort(cp, ns, 'jw');
}, { timeout: 240_000 });

after(async () => {
  await op?.stop();
  await net?.destroy();
  await cp?.stop();
});

test('a minted token is accepted without any TokenReview call, also while the apiserver is away', async () => {
  const token = await cp.token(ns, 'a', ['gw']);
  const unseen = await cp.token(ns, 'a', ['gw']);
  await waitFor('accepted', async () => (await get(token)).status === 200, 10_000);
  for (let i = 0; i < 20; i++) assert.equal((await get(token)).status, 200);
  assert.equal(await tokenReviews(), 0);
  await cp.stopApiserver();
  try {
    const r = await get(unseen); // never seen before: verified offline
    assert.equal(r.status, 200, r.text);
  } finally {
    await cp.startApiserver();
  }
  assert.equal(await tokenReviews(), 0);
});

test('expired, wrong issuer, wrong audience, HS256 signed with the public key and alg none are 401', async () => {
  const now = Math.floor(Date.now() / 1000);
  assert.equal((await get(await forge())).status, 200); // the forging itself is sound
  const pub = readFileSync(join(cp.dir, 'certs', 'sa.pub'));
  const body = b64(await claims());
  const hs = `${b64({ alg: 'HS256', typ: 'JWT' })}.${body}`;
  const cases: Record<string, string> = {
    expired: await forge({ exp: now - 60 }),
    'not yet valid': await forge({ nbf: now + 600 }),
    'wrong issuer': await forge({ iss: 'https://issuer.invalid' }),
    'wrong audience': await cp.token(ns, 'a', ['someone-else']),
    'HS256 with the public key': `${hs}.${createHmac('sha256', pub).update(hs).digest('base64url')}`,
    'alg none': `${b64({ alg: 'none', typ: 'JWT' })}.${body}.`,
  };
  for (const [name, token] of Object.entries(cases)) {
    const r = await get(token);
    assert.equal(r.status, 401, `${name}: ${r.text}`);
  }
});

test('a token bound to a pod is refused within 2 s of the pod being deleted (also when cached)', async () => {
  const pod = (await cp.api('GET', `/api/v1/namespaces/${ns}/pods/p1`)).body;
  const r = await cp.api('POST', `/api/v1/namespaces/${ns}/serviceaccounts/a/token`, {
    apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest',
    spec: { audiences: ['gw'], expirationSeconds: 3600, boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: 'p1', uid: pod.metadata.uid } },
  });
  const token = r.body.status.token as string;
  await waitFor('pod-bound token accepted', async () => (await get(token)).status === 200, 10_000);
  await cp.kubectl(['delete', 'pod', 'p1', '-n', ns, '--grace-period=0', '--force']);
  const t0 = Date.now();
  await waitFor('revoked', async () => (await get(token)).status === 401, 2_000, 20);
  assert.ok(Date.now() - t0 <= 2_000);
  assert.match((await get(token)).text, /p1/);
});

test('a pod-bound token carries the node claim and is refused once its Node is deleted (the pod still exists)', async () => {
  await applyYaml(cp, `apiVersion: v1
kind: Node
metadata: {name: n1}
---
apiVersion: v1
kind: Pod
metadata: {name: p2, namespace: ${ns}}
spec: {serviceAccountName: a, nodeName: n1, containers: [{name: c, image: registry.invalid/none}]}
`);
  const node = (await cp.api('GET', '/api/v1/nodes/n1')).body;
  const pod = (await cp.api('GET', `/api/v1/namespaces/${ns}/pods/p2`)).body;
  const r = await cp.api('POST', `/api/v1/namespaces/${ns}/serviceaccounts/a/token`, {
    apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest',
    spec: { audiences: ['gw'], expirationSeconds: 3600, boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: 'p2', uid: pod.metadata.uid } },
  });
  const token = r.body.status.token as string;
  const claim = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString())['kubernetes.io'];
  assert.deepEqual(claim.node, { name: 'n1', uid: node.metadata.uid }); // this Kubernetes version puts the pod's node in the token
  await waitFor('node-bound token accepted', async () => (await get(token)).status === 200, 10_000);
  await cp.api('DELETE', '/api/v1/nodes/n1');
  await waitFor('revoked after the node is gone', async () => (await get(token)).status === 401, 10_000, 20);
  assert.match((await get(token)).text, /node n1 no longer exists/);
  assert.equal((await cp.api('GET', `/api/v1/namespaces/${ns}/pods/p2`)).status, 200);
});
