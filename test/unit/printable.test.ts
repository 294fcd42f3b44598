// Control characters a team's spec or a server's answer holds never reach a terminal raw: not in a
// condition's message, a validate problem, nor what can-i prints (red team: ESC ] 0 ; … BEL sets
// the window title of whoever reads the status, ESC ] 52 writes their clipboard).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { oneLine, printable } from '../../src/printable.js';
import { describePatternProblem, routePatterns } from '../../src/api/regex.js';
import { validateGateway } from '../../src/api/validate.js';
import { applyDefaults } from '../../src/api/defaults.js';
import { cond } from '../../src/translate/conditions.js';
import { translate } from '../../src/translate/translate.js';
import { ConditionType } from '../../src/api/conditions.js';
import { problemLine } from '../../src/api/manifests.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const cli = join(root, 'dist', 'src', 'cli', 'main.js');
const hostile = '(\u001b]0;OWNED\u0007\u001b]52;c;cm0gLXJmIH4=\u0007';
/** Any C0 control but newline and tab, DEL, or C1 control. */
const raw = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;

test('oneLine escapes every control character; printable keeps newline and tab', () => {
  assert.equal(oneLine('a\u001b[2Jb\u0007\n\t\u007f\u009b\u202e'), 'a\\u001b[2Jb\\u0007\\u000a\\u0009\\u007f\\u009b\\u202e');
  assert.equal(printable('a\u001b]0;x\u0007\n\tb\u0085'), 'a\\u001b]0;x\\u0007\n\tb\\u0085');
  assert.equal(oneLine(oneLine('\u001b')), '\\u001b', 'escaping twice changes nothing');
  assert.equal(printable('plain text, é, 日本'), 'plain text, é, 日本');
});

test('a pattern that does not compile is described without its control characters (the parser repeats it raw)', () => {
  const p = routePatterns([['spec.routes[0].apiserver.acceptPaths', [hostile]]], 'spec.routes[0].apiserver');
  assert.ok('why' in p && raw.test(p.why), 'the parser\'s message holds the pattern raw (what this test is about)');
  const line = describePatternProblem(p as Parameters<typeof describePatternProblem>[0]);
  assert.doesNotMatch(line, raw);
  assert.match(line, /missing closing \): `\(\\u001b\]0;OWNED\\u0007/);
});

test('a condition\'s message never holds a control character, whatever part of the spec it quotes', () => {
  assert.equal(cond(ConditionType.Accepted, false, 'X', `issuer https://a\u001b]0;x\u0007 is not configured`).message,
    'issuer https://a\\u001b]0;x\\u0007 is not configured');
  const gw = applyDefaults({
    apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: 'g', namespace: 'team-a', generation: 1 },
    spec: { authentication: { audiences: ['gw'] }, access: [{ groups: ['system:serviceaccounts:team-a'] }],
      routes: [{ name: 'api', pathPrefix: '/', apiserver: { acceptPaths: [hostile] } }] },
  } as never);
  const t = translate(gw, { port: { port: 20000 } } as never);
  const accepted = t.conditions.find((c) => c.type === 'Accepted')!;
  assert.equal(accepted.reason, 'InvalidRegex');
  for (const c of t.conditions) assert.doesNotMatch(c.message, raw, c.type);
});

test('validate\'s problems escape the keys and values they quote', () => {
  const obj = {
    apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: 'g', namespace: 'team-a' },
    spec: { authentication: { audiences: ['gw'] }, routes: [{ name: 'api', pathPrefix: '/', apiserver: { acceptPaths: [hostile] } }] },
  };
  const regex = validateGateway(obj);
  assert.equal(regex.length, 1);
  assert.match(regex[0]!.message, /^invalid regex: .*\\u001b\]0;OWNED\\u0007/);
  const unknown = validateGateway({ ...obj, spec: { ...obj.spec, ['x\u001b[2J']: 1 } });
  assert.deepEqual(unknown.map((p) => p.field), ['spec.x\\u001b[2J']);
  // the name as a file holds it (validate runs before any apiserver checks names)
  const line = problemLine('f.yaml', { label: 'AccessGateway team-a/\u001b]0;x\u0007', key: '', named: true, object: {}, problems: [] }, { field: 'f', message: 'm' });
  assert.equal(line, 'f.yaml: AccessGateway team-a/\\u001b]0;x\\u0007: f: m');
});

test('validate prints a hostile pattern escaped', () => {
  const dir = mkdtempSync(join(tmpdir(), 'agw-printable-'));
  const file = join(dir, 'g.yaml');
  const gw = (name: string, acceptPaths: string[]) => ({ apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name },
    spec: { authentication: { audiences: ['gw'] }, routes: [{ name: 'a', pathPrefix: '/', apiserver: { acceptPaths } }] } });
  // (a gateway's regexes are checked once the rest of it is valid: the name's problem is another gateway's)
  writeFileSync(file, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [gw('g\u001b]0;x\u0007', ['^/']), gw('g', [hostile])] }));
  // a file's name too (a directory someone else's checkout filled)
  writeFileSync(join(dir, 'h\u001b]0;y\u0007.yaml'), '{unclosed');
  return new Promise<void>((done) => execFile(process.execPath, [cli, 'validate', '-f', dir], (err, stdout, stderr) => {
    assert.equal(err?.code, 1, stderr);
    assert.doesNotMatch(stdout + stderr, raw);
    assert.match(stdout, /AccessGateway g\\u001b\]0;x\\u0007: /);
    assert.match(stdout, /invalid regex: .*\\u001b\]0;OWNED/);
    assert.match(stdout, /h\\u001b\]0;y\\u0007\.yaml: document 1: invalid YAML/);
    done();
  }));
});

test('can-i prints what the apiserver answers escaped (text and JSON)', async (t) => {
  const gateway = {
    apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: 'g', namespace: 'team-a', generation: 1 },
    spec: { authentication: { audiences: ['gw'] }, access: [{ groups: ['system:serviceaccounts:team-a'] }],
      routes: [{ name: 'api', pathPrefix: '/', apiserver: { acceptPaths: ['^/api/.*'] } }] },
  };
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      if (req.url === '/apis/access-gateway.io/v1alpha1/namespaces/team-a/accessgateways/g') return res.end(JSON.stringify(gateway));
      if (req.url === '/apis/authorization.k8s.io/v1/subjectaccessreviews') {
        return res.end(JSON.stringify({ status: { allowed: false, reason: 'RBAC: \u001b]0;OWNED\u0007\u009b2J\u007f' } }));
      }
      res.statusCode = 403; // a Status whose message the client quotes in its error
      res.end(JSON.stringify({ kind: 'Status', message: 'forbidden \u001b]0;OWNED\u0007' }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => server.close());
  const dir = mkdtempSync(join(tmpdir(), 'agw-printable-'));
  const kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(kubeconfig, JSON.stringify({ apiVersion: 'v1', kind: 'Config', 'current-context': 'c',
    clusters: [{ name: 'c', cluster: { server: `http://127.0.0.1:${(server.address() as { port: number }).port}` } }],
    users: [{ name: 'u', user: { token: 't' } }], contexts: [{ name: 'c', context: { cluster: 'c', user: 'u' } }] }));
  const canI = (...extra: string[]) => new Promise<{ code: number | undefined; stdout: string; stderr: string }>((done) =>
    execFile(process.execPath, [cli, 'can-i', '--gateway', 'team-a/g', '--as', 'system:serviceaccount:team-a:ci', '--kubeconfig', kubeconfig, ...extra, 'get', '/api/v1/pods'],
      (err, stdout, stderr) => done({ code: err ? err.code as number : 0, stdout, stderr })));
  const text = await canI();
  assert.equal(text.code, 1, text.stdout + text.stderr);
  assert.doesNotMatch(text.stdout + text.stderr, raw);
  assert.match(text.stdout, /RBAC: \\u001b\]0;OWNED\\u0007\\u009b2J\\u007f/);
  const json = await canI('--output', 'json');
  assert.equal(json.code, 1, json.stdout + json.stderr);
  assert.doesNotMatch(json.stdout, raw);
  const rbac = (JSON.parse(json.stdout) as { steps: { step: string; message: string }[] }).steps.find((s) => s.step === 'rbac')!;
  assert.match(rbac.message, /RBAC: \u001b\]0;OWNED\u0007\u009b2J\u007f/, 'the same string, escaped in JSON');
  // errors quoting the apiserver: can-i's own, and any command's (the token plugin's here)
  const refused = await canI('--gateway', 'team-a/other');
  assert.equal(refused.code, 2, refused.stderr);
  assert.match(refused.stderr, /cannot read AccessGateway team-a\/other: .*forbidden \\u001b\]0;OWNED\\u0007/);
  const token = await new Promise<{ code: number | undefined; stderr: string }>((done) =>
    execFile(process.execPath, [cli, 'token', '--namespace', 'team-a', '--service-account', 'ci', '--audience', 'gw', '--kubeconfig', kubeconfig],
      (err, _stdout, stderr) => done({ code: err?.code as number | undefined, stderr })));
  assert.equal(token.code, 1, token.stderr);
  assert.match(token.stderr, /cannot mint a token .*forbidden \\u001b\]0;OWNED\\u0007/);
});
