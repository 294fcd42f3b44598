// access-gateway serve's gateways from files, without a cluster: what is served when a file holds a
// copy of a gateway, a namespace "", or is named twice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, truncateSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { FileSource } from '../../src/controller/file-source.js';
import { silentLogger } from '../../src/observability/logger.js';

const gw = (name: string, ns: string | null, accept: string) => `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: ${name}${ns === null ? '' : `, namespace: "${ns}"`}}
spec:
  authentication: {audiences: [gw]}
  routes: [{name: a, pathPrefix: /, apiserver: {acceptPaths: ["${accept}"]}}]
`;
const acceptOf = (src: FileSource, ns: string, name: string) => src.get(ns, name)?.spec.routes[0]?.apiserver?.acceptPaths;

test('a namespace "" is default; an invalid later copy does not put the last good version over the first copy; a file named twice is read once', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'agw-files-'));
  const file = join(dir, 'a.yaml');
  writeFileSync(file, `${gw('empty', '', '^/v1$')}---\n${gw('twice', 'team-x', '^/v1$')}`);
  // the same file as itself and in its directory, spelt another way
  const src = new FileSource([dir, relative(process.cwd(), file)], () => {}, silentLogger);
  src.start();
  try {
    assert.deepEqual(acceptOf(src, 'default', 'empty'), ['^/v1$']);
    assert.equal(src.get('default', 'empty')!.metadata.namespace, 'default');
    assert.deepEqual(acceptOf(src, 'team-x', 'twice'), ['^/v1$']);
    assert.deepEqual([...src.problems.keys()], [], 'not reported as its own copy');
    // edited: the first copy says v2, a second copy is invalid
    writeFileSync(file, `${gw('empty', '', '^/v1$')}---\n${gw('twice', 'team-x', '^/v2$')}---\n${gw('twice', 'team-x', '^/v3$').replace('pathPrefix: /', 'pathPrefix: no-slash')}`);
    (src as unknown as { reload(): void }).reload();
    assert.deepEqual(acceptOf(src, 'team-x', 'twice'), ['^/v2$'], 'the first copy, as edited');
    assert.match(src.problems.get(file)!.join('\n'), /team-x\/twice comes earlier in this file: this one is not used/);
  } finally {
    await src.stop();
  }
});

test('a gateway is the first file\'s that names it, valid or not, as validate says: a later file\'s copy is reported, not served', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'agw-files-'));
  const [a, b] = [join(dir, 'a.yaml'), join(dir, 'b.yaml')];
  writeFileSync(a, gw('gw', 'team', '^/a$').replace('pathPrefix: /', 'pathPrefix: //bad'));
  writeFileSync(b, gw('gw', 'team', '^/b$'));
  const src = new FileSource([dir], () => {}, silentLogger);
  src.start();
  try {
    assert.equal(src.get('team', 'gw'), undefined, 'a.yaml names it first, and its copy is invalid');
    assert.deepEqual(src.problems.get(b), [`${b}: AccessGateway team/gw: metadata.name: team/gw is in ${a} already: this one is not used`]);
    writeFileSync(a, gw('gw', 'team', '^/a$'));
    (src as unknown as { reload(): void }).reload();
    assert.deepEqual(acceptOf(src, 'team', 'gw'), ['^/a$']);
  } finally {
    await src.stop();
  }
});

test('a file that cannot be one does not stop the others: an alias bomb, a FIFO, a file over 16 MiB are each reported, the good file served', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'agw-files-'));
  writeFileSync(join(dir, 'a.yaml'), gw('good', 'team-a', '^/v1$'));
  // parses without an error; turning it into objects throws (yaml's alias count)
  const levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]'];
  for (let i = 1; i < 9; i++) levels.push(`${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(9).fill(`*${String.fromCharCode(96 + i)}`).join(',')}]`);
  writeFileSync(join(dir, 'b.yaml'), levels.join('\n'));
  execFileSync('mkfifo', [join(dir, 'c.yaml')]); // read, it would block the process for ever
  writeFileSync(join(dir, 'd.yaml'), '');
  truncateSync(join(dir, 'd.yaml'), (16 << 20) + 1);
  const src = new FileSource([dir], () => {}, silentLogger);
  src.start();
  try {
    assert.deepEqual(acceptOf(src, 'team-a', 'good'), ['^/v1$']);
    const said = (f: string) => src.problems.get(join(dir, f))?.join('\n') ?? '';
    assert.match(said('b.yaml'), /document 1: invalid YAML: .*alias/i);
    assert.match(said('c.yaml'), /cannot read: not a regular file/);
    assert.match(said('d.yaml'), /cannot read: 16777217 bytes; at most 16777216/);
  } finally {
    await src.stop();
  }
});
