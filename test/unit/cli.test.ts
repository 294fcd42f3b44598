// The real `access-gateway validate` binary on files: examples pass; a broken file is reported
// with file, object, field and reason, exit 1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const cli = join(root, 'dist', 'src', 'cli', 'main.js');
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

test('validate accepts every example', () => {
  const r = run('validate', '-f', join(root, 'deploy', 'examples'), '-f', join(root, 'deploy', 'examples', 'cross-namespace'));
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.equal(r.stdout, '');
});

test('validate rejects a broken file with one line per problem: file, object, field, why', () => {
  const dir = mkdtempSync(join(tmpdir(), 'agw-validate-'));
  const file = join(dir, 'broken.yaml');
  writeFileSync(file, `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: broken, namespace: team-x}
spec:
  listener: {port: 70000}
  authentication: {audiences: [gw], mode: Magic}
  routes:
    - {name: a, pathPrefix: /, apiserver: {rejectPaths: ["(unclosed"]}, service: {name: s, port: 80}}
    - {name: a, pathPrefix: /x/, apiserver: {}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
`);
  const r = run('validate', '-f', file);
  assert.equal(r.status, 1);
  const lines = r.stdout.trim().split('\n');
  assert.ok(lines.includes(`${file}: AccessGateway team-x/broken: spec.listener.port: must be at most 65535, got 70000`), r.stdout);
  assert.ok(lines.includes(`${file}: AccessGateway team-x/broken: spec.authentication.mode: unsupported value "Magic": must be one of "TokenReview", "JWKS"`), r.stdout);
  assert.ok(lines.includes(`${file}: AccessGateway team-x/broken: spec.routes[0]: exactly one of apiserver or service must be set`), r.stdout);
  assert.ok(lines.some((l) => l.includes('spec.routes: route names must be unique')), r.stdout);
  assert.equal(lines.length, 4, r.stdout);
});

test('an invalid regex alone is reported with its field', () => {
  const dir = mkdtempSync(join(tmpdir(), 'agw-validate-'));
  const file = join(dir, 'regex.yaml');
  writeFileSync(file, `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: rx}
spec:
  authentication: {audiences: [gw]}
  routes: [{name: a, pathPrefix: /, apiserver: {acceptPaths: ["^/api/(x"]}}]
`);
  const r = run('validate', '-f', file);
  assert.equal(r.status, 1);
  assert.match(r.stdout, /AccessGateway rx: spec\.routes\[0\]\.apiserver\.acceptPaths\[0\]: invalid regex/);
});

test('validate: the same gateway twice (in a file, across files), a bad namespace, a misspelt kind, no gateway at all', () => {
  const dir = mkdtempSync(join(tmpdir(), 'agw-validate-'));
  const gw = (name: string, ns: string) => `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: ${name}${ns === 'none' ? '' : `, namespace: "${ns}"`}}
spec:
  authentication: {audiences: [gw]}
  routes: [{name: a, pathPrefix: /, apiserver: {}}]
`;
  const a = join(dir, 'a.yaml');
  const b = join(dir, 'b.yaml');
  writeFileSync(a, `${gw('twice', 'default')}---\n${gw('twice', '')}---\n${gw('slash', 'a/b')}---\n${gw('upper', 'Team_X')}`);
  // a list as kubectl get -o yaml writes it: its items are read; a YAML null namespace is default
  const item = (text: string) => `  - ${text.trimEnd().split('\n').join('\n    ')}\n`;
  writeFileSync(b, `${gw('twice', 'none')}---\n${gw('fine', 'team-x').replace('kind: AccessGateway', 'kind: AccessGateways')}---
apiVersion: v1
kind: List
items:
${item(gw('listed', 'team-x'))}${item(gw('nulled', 'none').replace('{name: nulled}', '{name: nulled, namespace: null}'))}${item(gw('x', 'team-x').replace('kind: AccessGateway', 'kind: AccessGatewayList'))}`);
  // b.yaml given again, in its directory: read once
  const r = run('validate', '-f', a, '-f', b, '-f', dir);
  assert.equal(r.status, 1);
  assert.deepEqual(r.stdout.trim().split('\n'), [
    `${a}: AccessGateway twice: metadata.name: default/twice comes earlier in this file: this one is not used`,
    `${a}: AccessGateway a/b/slash: metadata.namespace: must be a DNS label (lower-case letters, digits and -, at most 63 characters)`,
    `${a}: AccessGateway Team_X/upper: metadata.namespace: must be a DNS label (lower-case letters, digits and -, at most 63 characters)`,
    `${b}: document 2: kind "AccessGateways" is not AccessGateway: not used`,
    `${b}: document 3, item 3: kind "AccessGatewayList" is not AccessGateway: not used`,
    `${b}: AccessGateway twice: metadata.name: default/twice is in ${a} already: this one is not used`,
  ]);
  const listed = run('validate', '-f', b);
  assert.equal(listed.stdout.split('\n').filter((l) => l.includes('listed') || l.includes('nulled')).length, 0, listed.stdout);
  // documents without a name are not each other's copies, in a file or across files
  const unnamed = join(dir, 'unnamed.yaml');
  const unnamed2 = join(dir, 'unnamed2.yaml');
  writeFileSync(unnamed, `${gw('x', 'team-x').replace('name: x, ', '')}---\n${gw('x', 'team-x').replace('name: x, ', '')}`);
  writeFileSync(unnamed2, gw('x', 'team-x').replace('name: x, ', ''));
  assert.deepEqual(run('validate', '-f', unnamed, '-f', unnamed2).stdout.trim().split('\n'), [
    `${unnamed}: AccessGateway team-x/(document 1): metadata.name: required field is missing`,
    `${unnamed}: AccessGateway team-x/(document 2): metadata.name: required field is missing`,
    `${unnamed2}: AccessGateway team-x/(document 1): metadata.name: required field is missing`,
  ]);
  const other = join(dir, 'other.yaml');
  writeFileSync(other, 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n');
  const none = run('validate', '-f', other);
  assert.equal(none.status, 1);
  assert.equal(none.stdout, `no AccessGateway (apiVersion access-gateway.io/v1alpha1, kind AccessGateway) in ${other}\n`);
});

test('unknown commands and flags are refused with usage', () => {
  assert.equal(run('frobnicate').status, 2);
  assert.equal(run('operator', '--no-such-flag').status, 1);
});

test('--metrics-auth (env ACCESS_GATEWAY_METRICS_AUTH): kubernetes or none, defaults documented per command', async () => {
  const { operatorFlags } = await import('../../src/cli/operator.js');
  const { serveFlags } = await import('../../src/cli/serve.js');
  assert.equal(operatorFlags['metrics-auth'].fallback, 'kubernetes');
  assert.equal(serveFlags['metrics-auth'].fallback, 'none');
  const bad = run('operator', '--metrics-auth', 'open');
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /--metrics-auth: expected kubernetes or none, got "open"/);
  const env = spawnSync(process.execPath, [cli, 'serve', '--gateways', root], { encoding: 'utf8', env: { ...process.env, ACCESS_GATEWAY_METRICS_AUTH: 'yes' } });
  assert.equal(env.status, 1);
  assert.match(env.stderr, /--metrics-auth: expected kubernetes or none, got "yes"/);
  const usage = run('help').stdout;
  assert.match(usage, /operator .*\n\s+\[--metrics-auth kubernetes\|none \(default kubernetes\)\]/);
  assert.match(usage, /serve .*\n\s+\[--metrics-auth kubernetes\|none \(default none\)\]/);
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  assert.match(readme, /access-gateway operator .*\n\s+\[--metrics-auth kubernetes\|none\]\s+\(default kubernetes\)/);
  assert.match(readme, /access-gateway serve .*\n\s+\[--metrics-auth kubernetes\|none\]\s+\(default none\)/);
  assert.match(readme, /`--metrics-auth` \(`ACCESS_GATEWAY_METRICS_AUTH`\)/);
});

test('flags parse into typed values: environment twins apply to flags with defaults; a flag on the command line wins', async () => {
  const { flag, parseFlags } = await import('../../src/cli/flags.js');
  const spec = { 'port-range': flag.portRange('20000-20999'), 'leader-elect': flag.boolean(), 'drain-seconds': flag.int(10, 0, 3600), namespace: flag.list() };
  assert.deepEqual(parseFlags([], spec, {}), { 'port-range': [20000, 20999], 'leader-elect': false, 'drain-seconds': 10, namespace: [] });
  assert.deepEqual(parseFlags([], spec, { ACCESS_GATEWAY_PORT_RANGE: '1-2', ACCESS_GATEWAY_LEADER_ELECT: 'true', ACCESS_GATEWAY_NAMESPACE: 'a, b' }),
    { 'port-range': [1, 2], 'leader-elect': true, 'drain-seconds': 10, namespace: ['a', 'b'] });
  assert.deepEqual(parseFlags(['--port-range', '3-4', '--namespace', 'x', '--namespace', 'y'], spec, { ACCESS_GATEWAY_PORT_RANGE: '1-2' }),
    { 'port-range': [3, 4], 'leader-elect': false, 'drain-seconds': 10, namespace: ['x', 'y'] });
  // a bad value is an error naming the flag, never NaN
  assert.throws(() => parseFlags(['--drain-seconds', 'abc'], spec, {}), /--drain-seconds: expected a whole number from 0 to 3600, got "abc"/);
  assert.throws(() => parseFlags([], spec, { ACCESS_GATEWAY_DRAIN_SECONDS: '-1' }), /--drain-seconds: expected a whole number/);
  assert.throws(() => parseFlags([], spec, { ACCESS_GATEWAY_LEADER_ELECT: 'yes' }), /--leader-elect: expected true or false/);
  assert.throws(() => parseFlags(['--port-range', '9-1'], spec, {}), /--port-range: expected LOW-HIGH/);
});

test('on Node.js older than 22 the command prints one line naming the version it needs and exits 2', () => {
  const check = (r: ReturnType<typeof spawnSync>, who: string) => {
    assert.equal(r.status, 2, `${who}: ${r.stderr}`);
    assert.equal(r.stdout, '', who);
    assert.equal(String(r.stderr).trim().split('\n').length, 1, who);
    assert.match(String(r.stderr), /^access-gateway: Node\.js 22 or newer is required \(this is v20\./, who);
  };
  // this Node.js, made to report an old version before the entry point runs
  const preload = `data:text/javascript,Object.defineProperty(process.versions,'node',{value:'20.11.1'});Object.defineProperty(process,'version',{value:'v20.11.1'})`;
  check(spawnSync(process.execPath, ['--import', preload, cli, 'help'], { encoding: 'utf8' }), 'Node reporting v20');
  // and a real old Node.js, when the machine has one on PATH (these machines ship Node 20)
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const node = join(dir, 'node');
    const v = spawnSync(node, ['--version'], { encoding: 'utf8' });
    if (v.status === 0 && /^v20\./.test(v.stdout)) {
      check(spawnSync(node, [cli, 'help'], { encoding: 'utf8' }), node);
      break;
    }
  }
});

test('--max-token-reviews-in-flight and --jwks-clock-skew-seconds (and their env twins) refuse bad values before connecting', () => {
  const cases: [string[], NodeJS.ProcessEnv, RegExp][] = [
    [['--max-token-reviews-in-flight', '0'], {}, /--max-token-reviews-in-flight: expected a whole number from 1 to 1000, got "0"/],
    [['--max-token-reviews-in-flight', 'lots'], {}, /--max-token-reviews-in-flight: expected a whole number/],
    [['--jwks-clock-skew-seconds', '61'], {}, /--jwks-clock-skew-seconds: expected a whole number from 0 to 60, got "61"/],
    [[], { ACCESS_GATEWAY_MAX_TOKEN_REVIEWS_IN_FLIGHT: '-3' }, /--max-token-reviews-in-flight: expected a whole number/],
    [[], { ACCESS_GATEWAY_JWKS_CLOCK_SKEW_SECONDS: '1.5' }, /--jwks-clock-skew-seconds: expected a whole number/],
  ];
  for (const [args, env, msg] of cases) {
    for (const cmd of ['operator', 'serve']) {
      const extra = cmd === 'serve' ? ['--gateways', '/nonexistent'] : [];
      const r = spawnSync(process.execPath, [cli, cmd, ...extra, '--kubeconfig', '/nonexistent', ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
      assert.equal(r.status, 1, `${cmd} ${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, msg, `${cmd} ${args.join(' ')}`);
    }
  }
  const help = run('--help');
  assert.match(help.stdout, /--max-token-reviews-in-flight 16/);
  assert.match(help.stdout, /--jwks-clock-skew-seconds 5/);
});

test('kubeconfig with an OIDC client secret is written only with --output, never to stdout (before any cluster is asked)', () => {
  const base = ['kubeconfig', '--gateway', 'ns/gw', '--oidc-issuer', 'https://idp.example.com', '--oidc-client-id', 'kubectl', '--kubeconfig', '/nonexistent'];
  for (const env of [{}, { ACCESS_GATEWAY_OIDC_CLIENT_SECRET: 's3cret-value' }]) {
    const args = 'ACCESS_GATEWAY_OIDC_CLIENT_SECRET' in env ? base : [...base, '--oidc-client-secret', 's3cret-value'];
    const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /a kubeconfig holding --oidc-client-secret is written only with --output FILE \(mode 0600\), never to stdout/);
    assert.doesNotMatch(r.stdout + r.stderr, /s3cret-value/);
  }
});

test('can-i without an answer (bad usage, no gateway, no cluster) exits 2, never 1 ("no")', () => {
  const noCluster = { ...process.env, KUBECONFIG: join(mkdtempSync(join(tmpdir(), 'agw-cani-')), 'missing'), HOME: mkdtempSync(join(tmpdir(), 'agw-home-')), KUBERNETES_SERVICE_HOST: '' };
  const r1 = spawnSync(process.execPath, [cli, 'can-i', '--gateway', 'nope', '--as', 'alice', 'get', '/version'], { encoding: 'utf8', env: noCluster });
  assert.equal(r1.status, 2, r1.stderr);
  assert.match(r1.stderr, /--gateway NAMESPACE\/NAME is required/);
  const r2 = spawnSync(process.execPath, [cli, 'can-i', '--gateway', 'ns/gw', '--as', 'alice', 'get', '/version'], { encoding: 'utf8', env: noCluster });
  assert.equal(r2.status, 2, r2.stderr);
  assert.match(r2.stderr, /missing: no current-context/);
});
