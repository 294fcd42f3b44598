// The benchmark's smoke run (bench/run.ts --smoke: one round of one second per case), so the
// benchmark cannot rot: every case is measured, every ratio and the RSS lines are printed. The
// figures themselves are not asserted (speed is judged by the benchmark, never by a test), except
// the one count: 1,000 concurrent first requests with one token cost one TokenReview.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from '../support/control-plane.js';
import { parseWrk } from '../../bench/wrk.js';

test('the benchmark runs end to end and prints every case, ratio and RSS figure', async () => {
  const { stdout } = await promisify(execFile)(process.execPath, [join(repoRoot, 'dist', 'bench', 'run.js'), '--smoke', '--warmup', '1'], { maxBuffer: 1 << 22, timeout: 300_000 });
  for (const name of ['direct (nginx upstream)', 'nginx reverse proxy (1 worker)', 'lean Node proxy', 'lean Node proxy + Authorization',
    'gateway Service route (TokenReview, log none)', 'gateway Service route (TokenReview, log all)',
    'lean Node proxy, 1 MiB answers', 'gateway Service route (TokenReview, log none), 1 MiB answers', 'gateway Service route (JWKS, log none)',
    'kubectl proxy GET /version', 'kubectl proxy (token) GET /version', 'gateway apiserver route GET /version']) {
    const row = new RegExp(`^\\| ${name.replace(/[()+]/g, '\\$&')} \\| (\\d+) \\| ([\\d.]+) \\| ([\\d.]+) \\| (\\d+|—) \\|$`, 'm').exec(stdout);
    assert.ok(row, `no row for ${name}:\n${stdout}`);
    assert.ok(Number(row[1]) > 0, `${name}: no request got through`);
  }
  assert.equal((stdout.match(/× req\/s/g) ?? []).length, 13, stdout); // 7 ratios, 6 neighbour cases
  // five neighbour cases: a flood of requests (admitted, and refused), downloads, uploads, and new TLS connections
  for (const who of ['bench-b, alone', 'bench-b, meanwhile', 'bench \\(the flood\\)']) {
    const rows = [...stdout.matchAll(new RegExp(`^\\| ${who} \\| (\\d+) \\| [\\d.]+ \\| [\\d.]+ \\| [\\d.]+ \\|$`, 'gm'))];
    assert.equal(rows.length, 5, `no neighbour rows for ${who}:\n${stdout}`);
    for (const row of rows) assert.ok(Number(row[1]) > 0, `${who}: nothing got through:\n${stdout}`);
  }
  assert.equal(stdout.match(/^bench-b meanwhile \/ alone: [\d.]+× req\/s, p99 [\d.]+×$/gm)?.length, 5, stdout);
  // how busy the operator and CPU 0 were meanwhile, for each of the six neighbour cases
  const busy = [...stdout.matchAll(/^meanwhile busy: the operator (\d+)% of its CPU, CPU 0 \(every wrk, the upstream, the control plane\) (\d+)%$/gm)];
  assert.equal(busy.length, 6, stdout);
  for (const b of busy) assert.ok(Number(b[1]) > 0 && Number(b[2]) > 0, `nothing measured busy:\n${stdout}`);
  assert.match(stdout, /sends its gateway requests it refuses \(401\)/);
  assert.match(stdout, /downloads 1 MiB answers through its gateway/);
  assert.match(stdout, /uploads 1 MiB bodies through its gateway/);
  // and the busy team beside another team's one caller
  for (const who of ['bench, alone', 'bench, meanwhile', 'bench-b \\(one connection\\)']) {
    const row = new RegExp(`^\\| ${who} \\| (\\d+) \\| [\\d.]+ \\| [\\d.]+ \\| [\\d.]+ \\|$`, 'm').exec(stdout);
    assert.ok(row && Number(row[1]) > 0, `no row for ${who}, or nothing got through:\n${stdout}`);
  }
  assert.match(stdout, /^bench meanwhile \/ alone: [\d.]+× req\/s, p99 [\d.]+×$/m);
  // and another team's quiet caller (a new TLS connection each time), alone and beside the flood
  assert.match(stdout, /^another team's quiet caller \(a new TLS connection and one request every 1\.2 s, 2 requests\): alone median [\d.]+ ms, max [\d.]+ ms; while team bench floods its gateway \(32 connections\) median [\d.]+ ms, max [\d.]+ ms$/m);
  assert.match(stdout, /^1 round\(s\) of 1 s per case after 1 s of each not measured, wrk 1 thread/m);
  // the warm-up's own figures, each case's (a cold start's cost stays visible)
  const warm = /^the first 1 s of each case \(not measured above\)[^\n]*\n(.*)$/m.exec(stdout)?.[1] ?? '';
  assert.equal(warm.split('; ').filter((x) => / [1-9]\d*, [\d.]+(, \d+ not 2xx, \d+ errors)?$/.test(x)).length, 12, warm);
  assert.match(stdout, /^one token, 1,000 concurrent first requests: 1 TokenReview\(s\)/m);
  assert.match(stdout, /^operator GC while it proxied: \d+ full GCs \([\d.]+ µs per request\), young generation [\d.]+ µs per request$/m);
  assert.match(stdout, /^operator RSS: \d+ MiB idle, \d+ MiB with the 7 gateways, \d+ MiB after the run$/m);
});

test('wrk reports are parsed: req/s, percentiles in any unit, the slowest, answers, non-2xx and socket errors', () => {
  const out = `Running 1s test @ http://127.0.0.1:1/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20ms  300.00us   9.00ms   90.00%
  Latency Distribution
     50%  850.00us
     75%    1.10ms
     90%    1.50ms
     99%    2.10s${' '}
  1000 requests in 1.00s, 1.00MB read
  Socket errors: connect 1, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   9876.54
Transfer/sec:      1.00MB
`;
  assert.deepEqual(parseWrk(out), { rps: 9876.54, p50: 0.85, p99: 2100, max: 9, requests: 1000, non2xx: 7, errors: 6 });
  assert.throws(() => parseWrk('nothing'), /no Requests\/sec/);
});
