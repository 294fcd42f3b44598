// The access log's hand-built JSON lines: valid JSON with every field, names escaped, written in
// batches (one write per 64 KiB or per 20 ms), nothing lost at exit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FairShed, LineBatch, lineWeight } from '../../src/observability/logger.js';

const logger = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'observability', 'logger.js');

/** What a reporting child's script starts with: the logger as `logging`, `createMetrics`, and
 * `report(o)`, which writes `o` to stderr as a JSON line (read by `reporting`). */
const childPrelude = `
    const { writeSync } = await import('node:fs');
    const logging = await import(${JSON.stringify(logger)});
    const { createMetrics } = await import(${JSON.stringify(join(dirname(logger), 'metrics.js'))});
    const report = (o) => writeSync(2, JSON.stringify(o) + '\\n');`;

/** The prelude, then `log` and the access logs `a` and `b` of team-a's and team-b's gateways. */
const twoTeamsPrelude = `${childPrelude}
    const log = logging.createLogger();
    const a = logging.accessLogFor('team-a/gw', { logger: log });
    const b = logging.accessLogFor('team-b/gw', { logger: log });`;

test('access lines are JSON in the shape of the other log lines, escaped, and all written by exit', () => {
  const script = `
    const { accessLogFor, createLogger } = await import(${JSON.stringify(logger)});
    const a = accessLogFor('team-a/gw', { logger: createLogger() });
    a.write({ reqId: '1a', caller: 'weird "name"\\\\n\\u2028', route: 'r', method: 'GET', status: 200, durationMs: 1.25, upstream: '198.18.0.2:8080' });
    a.write({ reqId: '1b', caller: '-', route: '-', method: undefined, status: 401, durationMs: 0.5, upstream: '-', error: 'AGW_ERR_UNAUTHENTICATED' });
    a.write({ reqId: '1c', caller: 'system:serviceaccount:a:lead', as: 'alice "x"', route: 'r', method: 'GET', status: 200, durationMs: 1, upstream: 'apiserver', auditId: '7c9f"x' });
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
  assert.equal(lines[2].auditId, '7c9f"x');
  assert.equal('auditId' in lines[0], false);
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

test('a line waiting for its batch does not keep the process alive', () => {
  const batch = new LineBatch({ write: () => {} });
  const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const before = timers();
  batch.write('a\n');
  assert.equal(timers(), before); // (its timer is unref'd)
});

test('a process that is done writes the line that waited for its batch', () => {
  for (let i = 0; i < 5; i++) { // (pino ends stdout on 'beforeExit': the line must be handed over first)
    const script = `
      const { accessLogFor, createLogger } = await import(${JSON.stringify(logger)});
      accessLogFor('team-a/gw', { logger: createLogger() }).write({ reqId: '${i}', caller: 'c', route: 'r', method: 'GET', status: 200, durationMs: 1, upstream: '-' });
    `;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).reqId, String(i));
  }
});

test('lines past 16 MiB waiting for a stdout nobody reads are dropped and counted; a drain is bounded; nothing is lost uncounted', async () => {
  // the child writes ~30 MiB of access lines while its stdout is not read, says what the metric
  // counts, drains for 200 ms (bounded: lines still wait), then, its stdout read again, drains
  // until all is written and exits: every line was either written or counted
  const script = `${childPrelude}
    const { accessLogFor, createLogger, droppedLogLines, drainLogs, logsPending } = logging;
    const log = accessLogFor('team-a/gw', { logger: createLogger() });
    const total = 100_000; // ~300 bytes each
    for (let i = 0; i < total; i++) log.write({ reqId: i.toString(36), caller: 'system:serviceaccount:team-a:' + 'x'.repeat(60), route: 'r', method: 'GET', status: 200, durationMs: 1, upstream: '198.18.0.2:8080' });
    const text = await createMetrics().registry.metrics();
    report({ total, counted: Number(/^access_gateway_log_lines_dropped_total (\\d+)$/m.exec(text)?.[1]) });
    await drainLogs(200);
    report({ pendingAfterBoundedDrain: logsPending() });
    process.stdin.once('end', async () => {
      await drainLogs(30_000);
      report({ pending: logsPending(), dropped: droppedLogLines() });
      process.exit(0);
    }).resume();
  `;
  const { child, reports } = reporting(script);
  const bound = setTimeout(() => child.kill(), 60_000);
  try {
    await waitUntil(() => reports.length >= 2, child);
    let lines = 0, bytes = 0;
    child.stdout.on('data', (d: Buffer) => {
      bytes += d.length;
      for (const b of d) if (b === 10) lines++;
    });
    const exited = new Promise((r) => child.once('close', r));
    child.stdin.end();
    await exited;
    const all = Object.assign({}, ...reports) as { total: number; counted: number; pendingAfterBoundedDrain: boolean; pending: boolean; dropped: number };
    assert.ok(all.counted > 0, JSON.stringify(reports)); // the metric counts them
    assert.equal(all.pendingAfterBoundedDrain, true, JSON.stringify(reports)); // the drain did not wait for a reader
    assert.equal(all.pending, false, JSON.stringify(reports));
    assert.ok(bytes > 16 * 1024 * 1024 - 64 * 1024, `${bytes} bytes written`); // what waited was written
    assert.equal(lines + all.dropped, all.total);
  } finally {
    clearTimeout(bound);
    child.kill();
  }
});

test('refused requests flooding a team\'s listener are shed as a share of their own: the team\'s own lines still go out', async () => {
  // anyone who reaches team-b's listener sends 100,000 requests without a token (401, no route)
  // while stdout is not read; team-b's callers make one request per 1,000 of them, team-a one per 100
  const script = `${twoTeamsPrelude}
    const { drainLogs } = logging;
    const line = (id, route, status) => ({ reqId: id, caller: route === '-' ? '-' : 'system:serviceaccount:x:' + 'x'.repeat(60), route, method: 'GET', status, durationMs: 1, upstream: route === '-' ? '-' : '198.18.0.2:8080' });
    for (let i = 0; i < 100_000; i++) {
      b.write(line('junk' + i, '-', i % 2 ? 401 : 403)); // no token, or no access rule for it
      if (i % 1000 === 0) b.write(line('b' + i, 'r', 200));
      if (i % 100 === 0) a.write(line('a' + i, 'r', 200));
    }
    const text = await createMetrics().registry.metrics();
    report({ shed: text.split('\\n').filter((l) => l.startsWith('access_gateway_log_lines_shed_total{')) });
    process.stdin.once('end', async () => { await drainLogs(30_000); process.exit(0); }).resume();
  `;
  const { reports, count } = await floodedWhileUnread(script);
  const { shed } = reports[0] as unknown as { shed: string[] };
  assert.equal(count('b'), 100, 'every line of team-b\'s own callers');
  assert.equal(count('a'), 1000, 'every line of team-a');
  assert.equal(shed.length, 1, shed.join('; '));
  const [, n] = /^access_gateway_log_lines_shed_total\{namespace="team-b",kind="refused"\} (\d+)$/.exec(shed[0]!) ?? [];
  assert.ok(Number(n) > 10_000, shed[0]);
  assert.equal(count('junk') + Number(n), 100_000);
});

test('a team whose lines flood a congested stdout is shed, counted by namespace; a quiet team\'s lines all go out', async () => {
  // team-a writes 100,000 lines while stdout is not read, team-b one per 1,000 of them: past 4 MiB
  // waiting, team-a (over the mean of the namespaces writing) is shed, and never reaches the
  // 16 MiB past which every line is dropped
  const script = `${twoTeamsPrelude}
    const { droppedLogLines, drainLogs, keepsLine } = logging;
    const line = (id) => ({ reqId: id, caller: 'system:serviceaccount:x:' + 'x'.repeat(60), route: 'r', method: 'GET', status: 200, durationMs: 1, upstream: '198.18.0.2:8080' });
    for (let i = 0; i < 100_000; i++) {
      a.write(line('a' + i));
      // an upstream failure's warning, as the listener writes it (its 502s: a team's own Service refusing)
      if (i % 10 === 0 && keepsLine('team-a')) log.warn({ reqId: 'a' + i + 'w' }, 'upstream unreachable');
      if (i % 1000 === 0) b.write(line('b' + i));
    }
    const text = await createMetrics().registry.metrics();
    report({ shedA: Number(/^access_gateway_log_lines_shed_total\\{namespace="team-a",kind="admitted"\\} (\\d+)$/m.exec(text)?.[1]),
      shedB: /namespace="team-b"/.test(text) });
    process.stdin.once('end', async () => {
      await drainLogs(30_000);
      report({ dropped: droppedLogLines() });
      process.exit(0);
    }).resume();
  `;
  const { reports, count } = await floodedWhileUnread(script);
  const all = Object.assign({}, ...reports) as { shedA: number; shedB: boolean; dropped: number };
  assert.equal(count('b'), 100, 'every line of the quiet team');
  assert.ok(all.shedA > 10_000, JSON.stringify(all));
  assert.equal(all.shedB, false, 'none of the quiet team shed');
  assert.equal(all.dropped, 0, 'nothing reached the 16 MiB');
  assert.equal(count('a') + all.shedA, 110_000, 'access lines and warnings: written or shed');
});

test('a team whose lines are long is shed by their size, not their number: a team writing twice as many short lines is not', async () => {
  // team-a's callers' names are 512 characters (a line weighs 5), team-b writes twice as many usual lines
  const script = `${twoTeamsPrelude}
    const { drainLogs } = logging;
    const line = (id, caller) => ({ reqId: id, caller, route: 'r', method: 'GET', status: 200, durationMs: 1, upstream: '198.18.0.2:8080' });
    for (let i = 0; i < 20_000; i++) {
      a.write(line('a' + i, 'system:serviceaccount:x:' + 'x'.repeat(488)));
      b.write(line('b' + i, 'system:serviceaccount:x:lead'));
      b.write(line('b' + i + 'x', 'system:serviceaccount:x:lead'));
    }
    const text = await createMetrics().registry.metrics();
    report({ shedA: Number(/^access_gateway_log_lines_shed_total\\{namespace="team-a",kind="admitted"\\} (\\d+)$/m.exec(text)?.[1] ?? 0),
      shedB: /namespace="team-b"/.test(text) });
    process.stdin.once('end', async () => { await drainLogs(30_000); process.exit(0); }).resume();
  `;
  const { reports, count } = await floodedWhileUnread(script);
  const all = Object.assign({}, ...reports) as { shedA: number; shedB: boolean };
  assert.equal(all.shedB, false, JSON.stringify(all));
  assert.equal(count('b'), 40_000, 'every line of the team with more, shorter lines');
  assert.ok(all.shedA > 1_000, JSON.stringify(all));
});

/** A child running `script` (an ES module) with its stdin and stdout piped; the JSON lines it writes
 * to stderr are collected in `reports` (other lines, such as warnings, are not). */
/** Runs `script` (which writes while its stdout is not read, reports, then ends when its stdin
 * does), then reads its stdout to the end: its reports, and how many lines have a reqId starting
 * with a prefix. */
async function floodedWhileUnread(script: string): Promise<{ reports: Array<Record<string, number | boolean>>; count: (prefix: string) => number }> {
  const { child, reports } = reporting(script);
  const bound = setTimeout(() => child.kill(), 60_000);
  try {
    await waitUntil(() => reports.length >= 1, child);
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString('latin1'); });
    const exited = new Promise((r) => child.once('close', r));
    child.stdin.end();
    await exited;
    return { reports, count: (p) => out.split('\n').filter((l) => l.includes(`"reqId":"${p}`)).length };
  } finally {
    clearTimeout(bound);
    child.kill();
  }
}

function reporting(script: string) {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'pipe'] });
  const reports: Array<Record<string, number | boolean>> = [];
  let err = '';
  child.stderr.on('data', (d: Buffer) => {
    err += d.toString();
    const lines = err.split('\n');
    err = lines.pop()!;
    for (const l of lines) if (l.startsWith('{')) reports.push(JSON.parse(l));
  });
  return { child, reports };
}

/** Resolves once `ok()`, checked whenever the child writes to stderr; rejects if it exits first. */
function waitUntil(ok: () => boolean, child: ReturnType<typeof spawn>): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = () => { if (ok()) { child.stderr!.off('data', later); resolve(); } };
    const later = () => setImmediate(check);
    child.stderr!.on('data', later);
    child.once('exit', (code) => reject(new Error(`exited (${code}) first`)));
  });
}

test('shedding remembers a flood from one second to the next: the quiet team\'s rare line need not come first', () => {
  let now = 0;
  const shed = new FairShed(4 * 1024 * 1024, () => now);
  const congested = 5 * 1024 * 1024;
  const admitted = { loud: [0, 0], quiet: [0, 0] };
  for (let second = 0; second < 2; second++) {
    for (let ms = 0; ms < 1_000; ms++) {
      now = second * 1_000 + ms;
      for (let i = 0; i < 10; i++) if (shed.admit('loud', congested)) admitted.loud[second]!++;
      if (ms === 900 && shed.admit('quiet', congested)) admitted.quiet[second]!++;
    }
  }
  assert.deepEqual(admitted.quiet, [1, 1]);
  assert.equal(admitted.loud[0], 9_010, 'the first second: alone until the quiet line (nothing known before)');
  assert.ok(admitted.loud[1]! < 100, `the next second, shed from its start: ${admitted.loud[1]} admitted`);
  assert.equal(shed.shed.get('loud'), 20_000 - admitted.loud[0]! - admitted.loud[1]!);
  // alone, a namespace is never shed (nobody's lines would be saved); below the bound, nothing is
  const alone = new FairShed(4 * 1024 * 1024, () => now);
  for (let i = 0; i < 1_000; i++) assert.equal(alone.admit('only', congested), true);
  assert.equal(shed.admit('loud', 1_024), true);
});

test('shedding halves a namespace\'s count once a second, whatever the calls\' spacing', () => {
  let now = 0;
  const shed = new FairShed(4 * 1024 * 1024, () => now);
  for (let i = 0; i < 64; i++) shed.admit('past', 0); // (not congested: counted, never shed)
  for (let t = 1_900; t <= 9_500; t += 1_900) { now = t; shed.admit('other', 0); }
  // 9.5 s on: 64 halved 9 times is below 0.5, so 'past' is forgotten; the mean is 'other's alone
  now = 9_500;
  assert.equal(shed.admit('past', 5 * 1024 * 1024), true, 'a flood 9 s ago is not loud now');
});

test('a line that is always written (a pod session\'s audit) is counted: a namespace making many is the loud one', () => {
  const shed = new FairShed(4 * 1024 * 1024, () => 0);
  const congested = 5 * 1024 * 1024;
  for (let i = 0; i < 1_000; i++) assert.equal(shed.admit('audited', congested, true), true);
  assert.equal(shed.admit('quiet', congested), true);
  assert.equal(shed.admit('audited', congested), false, 'its other lines are shed');
  assert.equal(shed.admit('audited', congested, true), true);
});

test('what a client chose is clipped in an access line (an Impersonate-User of 15,000 quotes), with its length and a digest', () => {
  const script = `
    const { accessLogFor, createLogger } = await import(${JSON.stringify(logger)});
    const a = accessLogFor('team-a/gw', { logger: createLogger() });
    a.write({ reqId: '1', caller: 'system:serviceaccount:a:lead', as: '"'.repeat(15_000), route: 'r', method: 'GET', status: 403, durationMs: 1, upstream: '-', error: 'AGW_ERR_FORBIDDEN may not impersonate user ' + '"'.repeat(15_000) });
    a.write({ reqId: '2', caller: 'x'.repeat(600), as: 'y'.repeat(339), route: 'r', method: 'GET', status: 200, durationMs: 1, upstream: '-' });
    a.write({ reqId: '3', caller: 'z'.repeat(511) + '\u{1F600}' + 'z', route: 'r', method: 'GET', status: 200, durationMs: 1, upstream: '-' });
    process.exit(0);
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const raw = r.stdout.trim().split('\n');
  assert.ok(raw[0]!.length < 3_000, `${raw[0]!.length} bytes (was 60 KiB)`);
  const [long, other, emoji] = raw.map((l) => JSON.parse(l));
  assert.match(long.as, /^"{512}…\(15000 characters, sha256 [0-9a-f]{16}\)$/);
  assert.match(long.error, /^AGW_ERR_FORBIDDEN may not impersonate user "{469}…\(15043 characters, sha256 [0-9a-f]{16}\)$/);
  assert.equal(long.caller, 'system:serviceaccount:a:lead', 'short values as they are');
  assert.match(other.caller, /^x{512}…\(600 characters/);
  assert.equal(other.as, 'y'.repeat(339), 'a service account\'s longest name is kept whole');
  assert.match(emoji.caller, /^z{511}…\(514 characters/, 'not half a surrogate pair');
  assert.doesNotMatch(raw[2]!, /\\ud83d/i);
});

test('a share is loud by its lines\' weight: a team whose lines are five times as long is shed as five times as many', () => {
  const shed = new FairShed(4 * 1024 * 1024, () => 0);
  const congested = 5 * 1024 * 1024;
  for (let i = 0; i < 100; i++) shed.admit('long', 0, false, 5);
  for (let i = 0; i < 300; i++) shed.admit('short', 0);
  assert.equal(shed.admit('short', congested), true, '300 usual lines are quieter than 100 of five');
  assert.equal(shed.admit('long', congested, false, 5), false);
});

test('a line\'s weight: one more per 128 characters of its variable fields (JSON may write each as two)', () => {
  assert.equal(lineWeight('system:serviceaccount:a:lead', undefined, undefined), 1);
  assert.equal(lineWeight('x'.repeat(256), 'y'.repeat(256), 'z'.repeat(512)), 9);
});
