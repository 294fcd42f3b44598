// access-gateway serve's gateways from files, without a cluster: what is served when a file holds a
// copy of a gateway, a namespace "", or is named twice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
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
