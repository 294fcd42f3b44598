// People with their company's identity provider: OIDC issuers the platform configures (the jwt
// list of an apiserver AuthenticationConfiguration, --authentication-config), named by a gateway's
// spec.authentication.issuers. Real OpenID providers (panva's certified oidc-provider, real
// signed ID tokens), the real kubectl, the chart's least-privilege operator. Mappings with claim
// and prefix, with CEL; system: names refused whatever the mapping; wrong issuer, audience,
// expiry, key rotation, a provider that is down; service-account tokens keep working beside.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { startControlPlane, type ControlPlane } from '../support/control-plane.js';
import { startChartOperator } from '../support/chart-operator.js';
import { kubectlPluginEnv } from '../support/operator.js';
import { startOidcProvider, type OidcProvider } from '../support/oidc-provider.js';
import { waitFor } from '../support/procs.js';
import type { CertPair } from '../support/certs.js';
import {
  applyYaml, bearer, condition, createListenerTLS, curl, gatewayPort, getGateway, installCRD, namespaceYaml, runKubectl, tokenKubeconfig,
} from '../support/cluster.js';

const ns = 'team-a';
let cp: ControlPlane;
let op: Awaited<ReturnType<typeof startChartOperator>>;
let corp: OidcProvider; // the company IdP: prefixed names, CEL
let raw: OidcProvider; // an IdP mapped without prefixes: system: names must still be refused
let other: OidcProvider; // configured for another audience than its tokens carry
let ca: CertPair;
let url: string;

const accounts = {
  alice: { email: 'alice@example.com', email_verified: true, groups: ['devs'] },
  carol: { email: 'carol@elsewhere.org', email_verified: true, groups: ['devs'] },
  dave: { email: 'dave@example.com', email_verified: false, groups: ['devs'] },
  brief: { email: 'brief@example.com', email_verified: true, groups: ['devs'], shortLived: true },
  'system:admin': { email: 'root@example.com', email_verified: true, groups: ['devs'] },
  eve: { email: 'eve@example.com', email_verified: true, groups: ['devs', 'system:masters'] },
  // the apiserver's header parser trims the space: this would arrive as system:masters
  spacey: { email: 'spacey@example.com', email_verified: true, groups: ['devs', ' system:masters'] },
  bob: { email: 'bob@example.com', email_verified: true, groups: ['devs'] },
  // a group of team-a's client CA (bound below): only that CA may name it
  mallory: { email: 'mallory@example.com', email_verified: true, groups: ['devs', 'team:team-a:oncall'] },
};

/** A TLS gateway of team-a naming `issuers` (`more`: further spec lines). */
const tlsGateway = (name: string, issuers: string[], more = '') => `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: ${name}, namespace: ${ns}}
spec:
  listener: {tls: {secretName: people-tls}}
  authentication: {audiences: [gw], issuers: ${JSON.stringify(issuers)}}${more}
  routes: [{name: kube-api, pathPrefix: /, apiserver: {}}]
`;

async function get(token: string, path = `/api/v1/namespaces/${ns}/configmaps`) {
  return curl(`${url}${path}`, ['--cacert', ca.certFile, ...bearer(token)]);
}

before(async () => {
  cp = await startControlPlane();
  await installCRD(cp);
  await applyYaml(cp, namespaceYaml(ns, ['app']));
  corp = await startOidcProvider(accounts);
  raw = await startOidcProvider(accounts);
  other = await startOidcProvider(accounts, { clientId: 'some-other-app' });
  const config = {
    apiVersion: 'apiserver.config.k8s.io/v1', kind: 'AuthenticationConfiguration',
    jwt: [
      {
        issuer: { url: corp.issuer, audiences: ['kubernetes', 'kubernetes-cli'], certificateAuthority: corp.ca.cert },
        claimValidationRules: [{ expression: "claims.email.endsWith('@example.com')", message: 'only example.com accounts' }],
        claimMappings: {
          username: { claim: 'email', prefix: 'corp:' },
          groups: { claim: 'groups', prefix: 'corp:' },
          extra: [{ key: 'example.com/subject', valueExpression: 'claims.sub' }],
        },
      },
      {
        issuer: { url: raw.issuer, audiences: ['kubernetes'], certificateAuthority: raw.ca.cert },
        claimMappings: { username: { expression: 'claims.sub' }, groups: { claim: 'groups', prefix: '' } },
      },
      { issuer: { url: other.issuer, audiences: ['kubernetes'], certificateAuthority: other.ca.cert }, claimMappings: { username: { claim: 'sub', prefix: 'o:' } } },
      { issuer: { url: 'https://broken.example.com', audiences: ['kubernetes'] }, claimMappings: { username: { expression: 'claims.(' } } },
    ],
  };
  const file = join(cp.dir, 'authentication.yaml');
  writeFileSync(file, stringify(config));
  // the chart lets the operator impersonate the extra key the mapping adds (rbac.impersonateExtraKeys)
  op = await startChartOperator(cp, { args: [`--authentication-config=${file}`], set: ['rbac.impersonateExtraKeys={example.com/subject}'] });
  ca = await createListenerTLS(cp, ns, 'people-tls');
  await applyYaml(cp, `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: people, namespace: ${ns}}
spec:
  listener: {tls: {secretName: people-tls}}
  authentication:
    audiences: [gw]
    issuers: ["${corp.issuer}", "${raw.issuer}", "${other.issuer}"]
    cacheTTLSeconds: 1
  access:
    - groups: ["corp:devs", devs]
    - serviceAccounts: [{namespace: ${ns}, name: app}]
  routes: [{name: kube-api, pathPrefix: /, apiserver: {}}]
`);
  url = `https://127.0.0.1:${await gatewayPort(cp, ns, 'people')}`;
  await cp.kubectl(['create', 'role', 'cm-reader', '-n', ns, '--verb=get,list', '--resource=configmaps']);
  await cp.kubectl(['create', 'rolebinding', 'corp-devs', '-n', ns, '--role=cm-reader', '--group=corp:devs']);
  await cp.kubectl(['create', 'rolebinding', 'oncall', '-n', ns, '--role=cm-reader', '--group=team:team-a:oncall']);
}, { timeout: 240_000 });

after(async () => {
  await op?.stop();
  await cp?.stop();
  for (const p of [corp, raw, other]) await p?.stop();
});

test('a person logs in at the company IdP and kubectl reaches the cluster as corp:EMAIL in corp:GROUPS, with CEL extras', async () => {
  const token = await corp.idToken('alice');
  const kc = tokenKubeconfig(join(cp.dir, 'alice.kubeconfig'), url, token, { ca: ca.cert, namespace: ns });
  const who = await runKubectl(['--kubeconfig', kc, 'auth', 'whoami', '-o', 'json']);
  assert.equal(who.code, 0, who.err);
  const u = JSON.parse(who.out).status.userInfo;
  assert.equal(u.username, 'corp:alice@example.com');
  assert.deepEqual(u.groups.sort(), ['corp:devs', 'system:authenticated']);
  assert.deepEqual(u.extra['example.com/subject'], ['alice']);
  const list = await runKubectl(['--kubeconfig', kc, 'get', 'configmaps', '-o', 'name']);
  assert.equal(list.code, 0, list.err);
  // a service-account token still works beside
  const sa = await get(await cp.token(ns, 'app', ['gw']));
  assert.equal(sa.status, 403, sa.body); // authenticated; the apiserver's RBAC says no to the account
  assert.match(sa.body, /system:serviceaccount:team-a:app/);
});

test('kubectl access-gateway kubeconfig --oidc-issuer: a device-code login at the IdP, then the cached token, then the refresh token', async () => {
  await cp.kubectl(['create', 'configmap', 'people-settings', '-n', ns, '--from-literal=k=v']);
  const cache = mkdtempSync(join(cp.dir, 'cache-'));
  const env = kubectlPluginEnv(cp.dir, { XDG_CACHE_HOME: cache });
  const file = join(cp.dir, 'oidc.kubeconfig');
  const made = await runKubectl(['access-gateway', 'kubeconfig', '--kubeconfig', cp.kubeconfig, '--gateway', `${ns}/people`,
    '--oidc-issuer', corp.issuer, '--oidc-client-id', 'kubernetes-cli', '--oidc-certificate-authority', corp.ca.certFile,
    '--certificate-authority', ca.certFile, '--output', file], env);
  assert.equal(made.code, 0, made.err);
  assert.doesNotMatch(readFileSync(file, 'utf8'), /eyJ/, 'the kubeconfig holds no token');
  // the person runs kubectl; the plugin shows a code; the person approves it at the IdP
  const child = spawn('kubectl', ['--kubeconfig', file, 'get', 'configmaps', '-o', 'name'], { env });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  const approved = new Promise<void>((resolve, reject) => {
    child.stderr.on('data', (d) => {
      err += d;
      const m = /enter the code (\S+)/.exec(err);
      if (m && !err.includes('[approved]')) {
        err += '[approved]';
        corp.approveDevice(m[1]!, 'alice').then(resolve, reject);
      }
    });
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  await approved;
  assert.equal(code, 0, err);
  assert.match(err, new RegExp(`To log in to ${corp.issuer.replace(/[.]/g, '\\.')}, open https://`));
  assert.match(out, /configmap\/people-settings/);
  const [cacheFile] = readdirSync(join(cache, 'access-gateway', 'oidc'));
  const path = join(cache, 'access-gateway', 'oidc', cacheFile!);
  const first = JSON.parse(readFileSync(path, 'utf8')).id_token;
  // again: the cached ID token, no login and no token request
  const who = await runKubectl(['--kubeconfig', file, 'auth', 'whoami', '-o', 'json'], env);
  assert.equal(who.code, 0, who.err);
  assert.doesNotMatch(who.err, /To log in/);
  assert.equal(JSON.parse(who.out).status.userInfo.username, 'corp:alice@example.com');
  assert.equal(JSON.parse(readFileSync(path, 'utf8')).id_token, first, 'the cached ID token was used');
  // the ID token gone (as when it expires): the refresh token gets a new one, still no login
  assert.equal(statSync(path).mode & 0o777, 0o600);
  const saved = JSON.parse(readFileSync(path, 'utf8'));
  assert.ok(saved.refresh_token, 'a refresh token was issued (offline_access)');
  // a token minted in the same second as the first is byte-identical to it: wait for the next
  const iat = JSON.parse(Buffer.from(String(saved.id_token).split('.')[1]!, 'base64url').toString()).iat as number;
  while (Date.now() / 1000 < iat + 1) await new Promise((r) => setTimeout(r, 50));
  writeFileSync(path, JSON.stringify({ refresh_token: saved.refresh_token }), { mode: 0o600 });
  const again = await runKubectl(['--kubeconfig', file, 'get', 'configmaps', '-o', 'name'], env);
  assert.equal(again.code, 0, again.err);
  assert.doesNotMatch(again.err, /To log in/);
  assert.notEqual(JSON.parse(readFileSync(path, 'utf8')).id_token, saved.id_token);
});

test('claim rules and mappings refuse with the reason: another domain, an unverified email', async () => {
  const carol = await get(await corp.idToken('carol'));
  assert.equal(carol.status, 401, carol.body);
  assert.match(carol.body, /only example.com accounts/);
  const dave = await get(await corp.idToken('dave'));
  assert.equal(dave.status, 401);
  assert.match(dave.body, /email_verified is not true/);
});

test('a platform source never names system: or team: identities, whatever its mapping says', async () => {
  const bob = await get(await raw.idToken('bob'));
  assert.equal(bob.status, 403, bob.body); // bob (group devs) has no RBAC: authenticated, the apiserver refuses
  assert.match(bob.body, /User \\"bob\\" cannot list/);
  const root = await get(await raw.idToken('system:admin'));
  assert.equal(root.status, 401, root.body);
  assert.match(root.body, /may not name system: users \(system:admin\)/);
  const eve = await get(await raw.idToken('eve'));
  assert.equal(eve.status, 401, eve.body);
  assert.match(eve.body, /may not name system: groups \(system:masters\)/);
  const spacey = await get(await raw.idToken('spacey'));
  assert.equal(spacey.status, 401, spacey.body);
  assert.match(spacey.body, /the mapped group .* has surrounding whitespace/);
  // nor a team's: team-a's RoleBinding for its client CA's group is not the issuer's to use
  const mallory = await get(await raw.idToken('mallory'));
  assert.equal(mallory.status, 401, mallory.body);
  assert.match(mallory.body, /may not name team: groups \(team:team-a:oncall\)/);
});

test('wrong audience, an issuer the gateway does not name, an expired token, a forged one: 401', async () => {
  const aud = await get(await other.idToken('alice'));
  assert.equal(aud.status, 401, aud.body);
  assert.match(aud.body, /unexpected \\"aud\\" claim value/);
  // a token of an issuer this gateway does not name is not a service-account token either
  await applyYaml(cp, tlsGateway('corp-only', [corp.issuer], '\n  access: [{groups: [devs, "corp:devs"]}]'));
  const port = await gatewayPort(cp, ns, 'corp-only');
  const wrongIssuer = await curl(`https://127.0.0.1:${port}/api`, ['--cacert', ca.certFile, ...bearer(await raw.idToken('bob'))]);
  assert.equal(wrongIssuer.status, 401, wrongIssuer.body);
  const brief = await corp.idToken('brief');
  await new Promise((r) => setTimeout(r, 8_000)); // 2 s of life, 5 s of tolerated skew
  const expired = await get(brief);
  assert.equal(expired.status, 401, expired.body);
  assert.match(expired.body, /\\"exp\\" claim timestamp check failed/);
  const [h, p] = (await corp.idToken('alice')).split('.');
  const forged = `${h}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p!, 'base64url').toString()), email: 'boss@example.com' })).toString('base64url')}.AAAA`;
  const f = await get(forged);
  assert.equal(f.status, 401, f.body);
  await cp.kubectl(['delete', 'agw', 'corp-only', '-n', ns]);
});

test('key rotation: tokens of the new key are accepted; a provider that is down fails closed (503) for keys not seen yet', async () => {
  const old = await corp.idToken('alice');
  assert.equal((await get(old)).status, 200);
  await corp.rotateKeys();
  const fresh = await corp.idToken('alice');
  // the unknown kid makes the gateway fetch the keys again (at most every 10 s)
  await waitFor('new key accepted', async () => (await get(fresh)).status === 200, 30_000, 1_000);
  await waitFor('old key refused', async () => (await get(old)).status === 401, 30_000, 1_000);
  // a new key the gateway has not seen while the provider is down: 503, never 401 or 200
  await corp.rotateKeys();
  const unseen = await corp.idToken('alice');
  await corp.stop();
  // within 10 s of the last fetch: not fetched yet (503); then the fetch fails (503)
  const seen = new Set<number>();
  try {
    const down = await waitFor('503 while the provider is down', async () => {
      const r = await get(unseen);
      seen.add(r.status);
      return r.status === 503 && /cannot be reached for its keys/.test(r.body) ? r : undefined;
    }, 30_000, 1_000);
    assert.deepEqual([...seen], [503]);
    assert.match(down.headers, /retry-after/i);
  } finally {
    await corp.start(); // the next tests need it, whatever happened here
  }
  await waitFor('back', async () => (await get(unseen)).status === 200, 30_000, 1_000);
});

test('an issuer the platform did not configure, or configured wrongly: the gateway says so and is not served', async () => {
  await applyYaml(cp, tlsGateway('unknown-issuer', ['https://nobody.example.com']));
  await applyYaml(cp, tlsGateway('broken-issuer', ['https://broken.example.com']));
  const unknown = await waitFor('unknown issuer', async () => {
    const g = await getGateway(cp, ns, 'unknown-issuer');
    return condition(g, 'ResolvedRefs')?.status === 'False' ? g : undefined;
  }, 20_000);
  assert.equal(condition(unknown, 'ResolvedRefs').reason, 'IssuerNotFound');
  assert.match(condition(unknown, 'ResolvedRefs').message, /issuer https:\/\/nobody.example.com is not configured by the platform/);
  assert.equal(condition(unknown, 'Ready').status, 'False');
  const broken = await waitFor('broken issuer', async () => {
    const g = await getGateway(cp, ns, 'broken-issuer');
    return condition(g, 'Accepted')?.status === 'False' ? g : undefined;
  }, 20_000);
  assert.equal(condition(broken, 'Accepted').reason, 'InvalidIssuer');
  assert.match(condition(broken, 'Accepted').message, /claimMappings.username.expression: .*expecting/);
  // the other gateway is untouched
  assert.equal((await get(await corp.idToken('alice'))).status, 200);
});
