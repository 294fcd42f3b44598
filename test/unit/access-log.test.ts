// The access log's hand-built JSON lines: valid JSON with every field, names escaped, one write
// per event-loop turn, nothing lost at exit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const logger = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'observability', 'logger.js');

test('access lines are JSON in the shape of the other log lines, escaped, and all written by exit', () => {
  const script = `
    const { accessLogFor, createLogger } = await import(${JSON.stringify(logger)});
    const a = accessLogFor('team-a/gw', { logger: createLogger() });
    a.write({ reqId: '1a', caller: 'weird "name"\\\\n\\u2028', route: 'r', method: 'GET', status: 200, durationMs: 1.25, upstream: '198.18.0.2:8080' });
    a.write({ reqId: '1b', caller: '-', route: '-', method: undefined, status: 401, durationMs: 0.5, upstream: '-', error: 'AGW_ERR_UNAUTHENTICATED' });
    a.write({ reqId: '1c', caller: 'system:serviceaccount:a:lead', as: 'alice "x"', route: 'r', method: 'GET', status: 200, durationMs: 1, upstream: 'apiserver' });
    process.exit(0); // before the end of the turn: the lines must still be written
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines.length, 3);
  assert.equal(lines[0].msg, 'request');
  assert.equal(lines[0].level, 30);
  assert.ok(lines[0].time > 0 && lines[0].pid > 0 && lines[0].hostname);
  assert.deepEqual({ ...lines[0], time: 0, pid: 0, hostname: '' }, {
    level: 30, time: 0, pid: 0, hostname: '', gateway: 'team-a/gw', reqId: '1a', caller: 'weird "name"\\n\u2028', route: 'r', method: 'GET',
    status: 200, durationMs: 1.25, upstream: '198.18.0.2:8080', msg: 'request',
  });
  assert.equal(lines[1].error, 'AGW_ERR_UNAUTHENTICATED');
  assert.equal(lines[1].method, '');
  assert.equal(lines[1].as, undefined);
  assert.equal(lines[2].as, 'alice "x"');
  assert.equal(lines[2].caller, 'system:serviceaccount:a:lead');
});
