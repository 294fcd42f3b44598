// Finding the apiserver and the operator's credentials as kubectl does, on real files and a real
// exec plugin (a shell script): --kubeconfig, KUBECONFIG merged, ~/.kube/config, in-cluster.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { loadClusterAccess } from '../../src/kube/kubeconfig.js';

const dir = () => mkdtempSync(join(tmpdir(), 'agw-kubeconfig-'));
const b64 = (s: string) => Buffer.from(s).toString('base64');
const file = (d: string, name: string, doc: object) => { const f = join(d, name); writeFileSync(f, stringify(doc)); return f; };
const kc = (o: { current?: string; clusters?: object[]; users?: object[]; contexts?: object[] }) => ({
  apiVersion: 'v1', kind: 'Config', ...(o.current ? { 'current-context': o.current } : {}),
  clusters: o.clusters ?? [], users: o.users ?? [], contexts: o.contexts ?? [],
});

test('a kubeconfig: server, CA and client certificate inline or by relative path, a token', async () => {
  const d = dir();
  writeFileSync(join(d, 'client.crt'), 'CERT');
  const f = file(d, 'config', kc({
    current: 'c',
    clusters: [{ name: 'k', cluster: { server: 'https://10.0.0.1:6443', 'certificate-authority-data': b64('CA'), 'tls-server-name': 'kubernetes' } }],
    users: [{ name: 'u', user: { 'client-certificate': 'client.crt', 'client-key-data': b64('KEY'), token: 't0k3n' } }],
    contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }],
  }));
  const a = loadClusterAccess(f);
  assert.equal(a.server.href, 'https://10.0.0.1:6443/');
  assert.equal(a.ca?.toString(), 'CA');
  assert.equal(a.cert?.toString(), 'CERT');
  assert.equal(a.key?.toString(), 'KEY');
  assert.equal(a.tlsServerName, 'kubernetes');
  assert.equal(a.insecureSkipTLSVerify, false);
  assert.equal(await a.authorization(), 'Bearer t0k3n');
  // a server behind a path (a proxy's /k8s/clusters/ID) is refused, not called at its root
  const prefixed = file(d, 'prefixed', kc({
    current: 'c', clusters: [{ name: 'k', cluster: { server: 'https://rancher.example/k8s/clusters/c-1' } }],
    users: [{ name: 'u', user: { token: 't' } }], contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }],
  }));
  assert.throws(() => loadClusterAccess(prefixed), /cluster k: a server URL with a path \(\/k8s\/clusters\/c-1\) is not supported/);
});

test('KUBECONFIG: files merged, the first to set a value wins; then ~/.kube/config; then in-cluster', async () => {
  const d = dir();
  const one = file(d, 'one', kc({ current: 'second', users: [{ name: 'u', user: { token: 'from-one' } }] }));
  const two = file(d, 'two', kc({
    current: 'ignored',
    clusters: [{ name: 'k', cluster: { server: 'https://two:443' } }],
    users: [{ name: 'u', user: { token: 'from-two' } }],
    contexts: [{ name: 'second', context: { cluster: 'k', user: 'u' } }],
  }));
  const merged = loadClusterAccess(undefined, { env: { KUBECONFIG: `${one}:${join(d, 'missing')}:${two}` } });
  assert.equal(merged.server.host, 'two');
  assert.equal(await merged.authorization(), 'Bearer from-one');
  // ~/.kube/config when KUBECONFIG is unset
  const home = dir();
  mkdirSync(join(home, '.kube'));
  file(join(home, '.kube'), 'config', kc({ current: 'c', clusters: [{ name: 'k', cluster: { server: 'https://home:1' } }], contexts: [{ name: 'c', context: { cluster: 'k' } }] }));
  assert.equal(loadClusterAccess(undefined, { env: {}, home }).server.host, 'home:1');
  // in a pod: the service account's token, read again once it may have rotated
  const sa = dir();
  writeFileSync(join(sa, 'token'), 'first\n');
  writeFileSync(join(sa, 'ca.crt'), 'POD-CA');
  const pod = loadClusterAccess(undefined, { env: { KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' }, home: dir(), serviceAccountDir: sa });
  assert.equal(pod.server.href, 'https://[fd00::1]/');
  assert.equal(pod.ca?.toString(), 'POD-CA');
  assert.equal(await pod.authorization(), 'Bearer first');
  assert.throws(() => loadClusterAccess(undefined, { env: {}, home: dir(), serviceAccountDir: dir() }), /no Kubernetes configuration/);
});

test('an exec plugin: its ExecCredential token, cached until it expires; errors say what is wrong', async () => {
  const d = dir();
  const counter = join(d, 'runs');
  writeFileSync(counter, '');
  const plugin = join(d, 'plugin.sh');
  writeFileSync(plugin, `#!/bin/sh
echo run >> ${counter}
case "$KUBERNETES_EXEC_INFO" in *ExecCredential*) ;; *) exit 3;; esac
echo '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"'"$TOKEN_PREFIX"'-1","expirationTimestamp":"2999-01-01T00:00:00Z"}}'
`);
  chmodSync(plugin, 0o755);
  const f = file(d, 'config', kc({
    current: 'c', clusters: [{ name: 'k', cluster: { server: 'https://x:1' } }],
    users: [{ name: 'u', user: { exec: { apiVersion: 'client.authentication.k8s.io/v1', command: './plugin.sh', env: [{ name: 'TOKEN_PREFIX', value: 'exec' }] } } }],
    contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }],
  }));
  const a = loadClusterAccess(f);
  assert.equal(await a.authorization(), 'Bearer exec-1');
  assert.equal(await a.authorization(), 'Bearer exec-1');
  const { readFileSync } = await import('node:fs');
  assert.equal(readFileSync(counter, 'utf8').trim().split('\n').length, 1, 'the plugin ran again before its token expired');
  const bad = file(d, 'bad', kc({ current: 'c', contexts: [{ name: 'c', context: { cluster: 'nope' } }] }));
  assert.throws(() => loadClusterAccess(bad), /names no cluster with a server/);
  const provider = file(d, 'provider', kc({ current: 'c', clusters: [{ name: 'k', cluster: { server: 'https://x:1' } }],
    users: [{ name: 'u', user: { 'auth-provider': { name: 'gcp' } } }], contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }] }));
  assert.throws(() => loadClusterAccess(provider), /auth-provider plugins are not supported/);
});

test('an exec plugin that fails or prints something else: the error names the plugin, never its output', async () => {
  const d = dir();
  const secret = 'eyJhbGciOiJSUzI1NiJ9.SECRET-TOKEN.sig';
  const cases: [string, RegExp][] = [
    [`echo '{"status":{"token":"${secret}"}}'; echo '${secret}' >&2; exit 7`, /^exec plugin \.\/p\.sh: exit 7$/],
    [`echo '${secret} is not json'`, /^exec plugin \.\/p\.sh: its output is not JSON$/],
  ];
  for (const [body, want] of cases) {
    writeFileSync(join(d, 'p.sh'), `#!/bin/sh\n${body}\n`);
    chmodSync(join(d, 'p.sh'), 0o755);
    const f = file(d, 'config', kc({
      current: 'c', clusters: [{ name: 'k', cluster: { server: 'https://x:1' } }],
      users: [{ name: 'u', user: { exec: { apiVersion: 'client.authentication.k8s.io/v1', command: './p.sh', args: [secret] } } }],
      contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }],
    }));
    const err = await loadClusterAccess(f).authorization().then(() => assert.fail('resolved'), (e: unknown) => e as Error);
    assert.match(err.message, want);
    // what a logger's error serializer would print: every own property, message and stack
    const everything = JSON.stringify({ ...err, message: err.message, stack: err.stack });
    assert.ok(!everything.includes('SECRET-TOKEN'), everything);
  }
});

test('a kubeconfig named with --kubeconfig that is missing is an error naming it; a missing KUBECONFIG entry is skipped, as client-go does', () => {
  const d = dir();
  const missing = join(d, 'nonexistent');
  assert.throws(() => loadClusterAccess(missing), (e: Error) => e.message === `${missing}: no such file`);
  // every file of a --kubeconfig list is named explicitly
  const ok = file(d, 'ok', kc({ current: 'c', clusters: [{ name: 'k', cluster: { server: 'https://ok:1' } }], contexts: [{ name: 'c', context: { cluster: 'k' } }] }));
  assert.throws(() => loadClusterAccess(`${ok}:${missing}`), (e: Error) => e.message === `${missing}: no such file`);
  // KUBECONFIG: a missing entry is skipped, one entry or several (client-go's Precedence list);
  // when none exists the error says why there is no current-context
  assert.equal(loadClusterAccess(undefined, { env: { KUBECONFIG: `${missing}:${ok}` } }).server.host, 'ok:1');
  assert.throws(() => loadClusterAccess(undefined, { env: { KUBECONFIG: missing } }),
    (e: Error) => e.message === `${missing}: no current-context (no such file; KUBECONFIG's missing files are skipped)`);
  assert.throws(() => loadClusterAccess(undefined, { env: { KUBECONFIG: `${missing}:${missing}2` } }),
    (e: Error) => e.message === `${missing}:${missing}2: no current-context (none of these files exists; KUBECONFIG's missing files are skipped)`);
});

test('a kubeconfig that cannot be read or parsed, or whose lists are not lists: one line naming the file (and the field)', () => {
  const d = dir();
  const oneLine = (want: RegExp) => (e: Error) => { assert.match(e.message, want); assert.ok(!e.message.includes('\n'), e.message); return true; };
  // a directory: not a bare EISDIR, and not skipped in a KUBECONFIG list either (client-go: read errors are errors)
  assert.throws(() => loadClusterAccess(d), oneLine(new RegExp(`^${d}: is a directory`)));
  assert.throws(() => loadClusterAccess(undefined, { env: { KUBECONFIG: d } }), oneLine(new RegExp(`^${d}: is a directory`)));
  const bad = join(d, 'bad');
  writeFileSync(bad, 'apiVersion: v1\nclusters:\n  - name: k\n   cluster: {server: "https://x:1"\ncontexts: [\n');
  assert.throws(() => loadClusterAccess(bad), oneLine(new RegExp(`^${bad}: not valid YAML: \\S`)));
  for (const field of ['contexts', 'clusters', 'users']) {
    const f = join(d, `not-a-list-${field}`);
    writeFileSync(f, `current-context: c\n${field}:\n  c:\n    cluster: k\n`);
    assert.throws(() => loadClusterAccess(f), oneLine(new RegExp(`^${f}: ${field} is not a list$`)));
  }
  const nullEntry = join(d, 'null-entry');
  writeFileSync(nullEntry, 'current-context: c\ncontexts:\n  - \n');
  assert.throws(() => loadClusterAccess(nullEntry), oneLine(new RegExp(`^${nullEntry}: contexts\\[0\\] is not a mapping$`)));
  const scalar = join(d, 'scalar');
  writeFileSync(scalar, 'just words\n');
  assert.throws(() => loadClusterAccess(scalar), oneLine(new RegExp(`^${scalar}: not a kubeconfig`)));
  // an empty file is an empty kubeconfig, as in client-go
  const empty = join(d, 'empty');
  writeFileSync(empty, '');
  assert.throws(() => loadClusterAccess(empty), oneLine(new RegExp(`^${empty}: no current-context$`)));
});
