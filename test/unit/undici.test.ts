// What the operator loads: undici's Agent and Pool without undici's index (src/undici.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as undici from 'undici';
import { Agent, Pool } from '../../src/undici.js';

test('undici\'s Agent and Pool, loaded from their files, are the index\'s, with the request API', () => {
  assert.equal(Agent, undici.Agent);
  assert.equal(Pool, undici.Pool);
  assert.equal(typeof new Pool('http://127.0.0.1:9').request, 'function');
});

test('the commands\' modules load neither undici\'s index nor an HTTP framework (they cost idle RSS)', () => {
  const commands = fileURLToPath(new URL('../../src/cli/commands.js', import.meta.url));
  const loaded = execFileSync(process.execPath, ['--input-type=module', '-e', `
    await import(${JSON.stringify(commands)});
    const { createRequire } = await import('node:module');
    console.log(JSON.stringify(Object.keys(createRequire(import.meta.url).cache)));`], { encoding: 'utf8' });
  const files: string[] = JSON.parse(loaded);
  assert.ok(files.some((f) => f.endsWith('/undici/lib/dispatcher/agent.js')), 'the check sees CommonJS modules an ES module loaded');
  assert.deepEqual(files.filter((f) => /\/node_modules\/(undici\/index\.js|express\/)/.test(f)), []);
});
