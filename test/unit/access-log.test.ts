// The access log's hand-built JSON lines: valid JSON with every field, names escaped, written in
// batches (one write per 64 KiB or per 20 ms), nothing lost at exit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LineBatch } from '../../src/observability/logger.js';

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

test('lines go out together, in one write, 20 ms after the first of them', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const writes: string[] = [];
  const batch = new LineBatch({ write: (s) => writes.push(s) });
  batch.write('a\n');
  batch.write('b\n');
  t.mock.timers.tick(19);
  assert.deepEqual(writes, []);
  batch.write('c\n');
  t.mock.timers.tick(1);
  assert.deepEqual(writes, ['a\nb\nc\n']);
  batch.write('d\n'); // a new batch, its own 20 ms
  t.mock.timers.tick(19);
  assert.equal(writes.length, 1);
  t.mock.timers.tick(1);
  assert.deepEqual(writes, ['a\nb\nc\n', 'd\n']);
});

test('64 KiB of lines are written at once, without waiting for the 20 ms', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const writes: string[] = [];
  const batch = new LineBatch({ write: (s) => writes.push(s) });
  const line = `${'x'.repeat(1023)}\n`;
  for (let i = 0; i < 63; i++) batch.write(line);
  assert.equal(writes.length, 0);
  batch.write(line); // the 64th KiB
  assert.equal(writes.length, 1);
  assert.equal(writes[0]!.length, 64 * 1024);
  t.mock.timers.tick(20); // nothing left for the timer
  assert.equal(writes.length, 1);
  batch.write('after\n');
  t.mock.timers.tick(20);
  assert.deepEqual(writes.slice(1), ['after\n']);
});

test('a quiet process writes its line while it runs, not only when it exits', async () => {
  // the child logs one line and then waits for its stdin to close: the line must come first
  const script = `
    const { accessLogFor, createLogger } = await import(${JSON.stringify(logger)});
    accessLogFor('team-a/gw', { logger: createLogger() }).write({ reqId: '1', caller: 'c', route: 'r', method: 'GET', status: 200, durationMs: 1, upstream: '-' });
    process.stdin.resume();
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  const bound = setTimeout(() => child.kill(), 10_000); // a line held until exit never comes: end the wait
  try {
    const line = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) resolve(out);
      });
      child.once('exit', (code) => reject(new Error(`exited (${code}) before its line was written: ${JSON.stringify(out)}`)));
    });
    assert.equal(JSON.parse(line).reqId, '1');
    assert.equal(child.exitCode, null); // still running
  } finally {
    clearTimeout(bound);
    child.kill();
  }
});

test('a line waiting for its batch does not keep a process that is done from exiting', () => {
  // the timer is not waited for: 'beforeExit' (the loop had nothing left) comes before the line,
  // which is written at exit
  const script = `
    const { writeSync } = await import('node:fs');
    const { accessLogFor, createLogger } = await import(${JSON.stringify(logger)});
    accessLogFor('team-a/gw', { logger: createLogger() }).write({ reqId: '1', caller: 'c', route: 'r', method: 'GET', status: 200, durationMs: 1, upstream: '-' });
    process.once('beforeExit', () => writeSync(1, 'done\\n'));
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 2, r.stdout);
  assert.equal(lines[0], 'done');
  assert.equal(JSON.parse(lines[1]!).reqId, '1');
});

test('at exit, what waits is handed to the writer and flushed synchronously (no event loop is left)', () => {
  const script = `
    const { writeSync } = await import('node:fs');
    const { LineBatch } = await import(${JSON.stringify(logger)});
    const calls = [];
    const batch = new LineBatch({ write: (s) => calls.push(['write', s]), flushSync: () => calls.push(['flushSync']) });
    process.once('exit', () => writeSync(1, JSON.stringify(calls)));
    batch.write('a\\n');
    process.exit(0);
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), [['write', 'a\n'], ['flushSync']]);
});
