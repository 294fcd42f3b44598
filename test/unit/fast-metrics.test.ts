// The request-path metrics render exactly what prom-client renders for the same events, and a
// deleted gateway's series go away.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { FastCounter, FastGauge, FastGaugeReader, FastHistogram, FastRegistry, TextBuffer } from '../../src/observability/fast-metrics.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { SeriesBudget } from '../../src/observability/series-budget.js';
import { GatewayMetrics, RouteMetrics } from '../../src/dataplane/route-metrics.js';

const labelNames = ['namespace', 'gateway', 'route'];
const buckets = [0.001, 0.01, 0.1, 1];
const odd = 'a"b\\c\nd';

/** The exposition with blank lines dropped, each sample's labels in name order (prom-client
 * writes `le` first, we write it last) and the samples of each family sorted (we group them by
 * gateway); Prometheus reads all of these the same. */
function normal(text: string): string {
  const lines = text.split('\n').filter((l) => l !== '').map((l) => {
    const m = /^(\w+)\{(.*)\} (\S+)$/.exec(l);
    if (!m) return l;
    const pairs = [...m[2]!.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((p) => p[0]).sort();
    return `${m[1]}{${pairs.join(',')}} ${m[3]}`;
  });
  const out: string[] = [];
  let samples: string[] = [];
  for (const l of [...lines, '# END']) {
    if (l.startsWith('#')) {
      out.push(...samples.sort());
      samples = [];
      out.push(l);
    } else samples.push(l);
  }
  return out.join('\n');
}

function both() {
  const fast = new FastRegistry();
  const reg = new Registry();
  const r = [reg];
  return {
    fast, reg,
    c: [new FastCounter(fast, { name: 'x_total', help: 'Counts \\ things.\nTwo lines.', labelNames }), new Counter({ name: 'x_total', help: 'Counts \\ things.\nTwo lines.', labelNames, registers: r })] as const,
    g: [new FastGauge(fast, { name: 'y', help: 'A gauge.', labelNames }), new Gauge({ name: 'y', help: 'A gauge.', labelNames, registers: r })] as const,
    h: [new FastHistogram(fast, { name: 'z_seconds', help: 'Times.', labelNames, buckets }), new Histogram({ name: 'z_seconds', help: 'Times.', labelNames, buckets, registers: r })] as const,
  };
}

test('exposition matches prom-client, escaping included', async () => {
  const m = both();
  for (const [ns, gw, route] of [['team-a', 'gw', 'r1'], ['team-b', odd, ''], ['team-a', 'gw', 'r2']] as const) {
    m.c[0].labels(ns, gw, route).inc(3);
    m.c[1].labels(ns, gw, route).inc(3);
    m.g[0].labels(ns, gw, route).set(-2.5);
    m.g[1].labels(ns, gw, route).set(-2.5);
    for (const v of [0.0005, 0.001, 0.05, 0.5, 7]) {
      m.h[0].labels(ns, gw, route).observe(v);
      m.h[1].labels(ns, gw, route).observe(v);
    }
  }
  m.g[0].labels('n', 'g', 'inf').set(Infinity);
  m.g[1].labels('n', 'g', 'inf').set(Infinity);
  const got = m.fast.text();
  assert.equal(normal(got), normal(await m.reg.metrics()));
  assert.match(got, /route="r2",le="\+Inf"\} 5\n/);
  assert.match(got, /gateway="a\\"b\\\\c\\nd"/);
});

test('a series exists at zero from its first labels() call', async () => {
  const m = both();
  m.h[0].labels('ns', 'gw', 'r');
  m.h[1].zero({ namespace: 'ns', gateway: 'gw', route: 'r' });
  m.c[0].labels('ns', 'gw', 'r');
  m.c[1].inc({ namespace: 'ns', gateway: 'gw', route: 'r' }, 0);
  m.g[1].set({ namespace: 'ns', gateway: 'gw', route: 'r' }, 0);
  m.g[0].labels('ns', 'gw', 'r');
  assert.equal(normal(m.fast.text()), normal(await m.reg.metrics()));
});

test('forget drops a gateway, or some of its routes, and nothing else', () => {
  const fast = new FastRegistry();
  const c = new FastCounter(fast, { name: 'x_total', help: 'x', labelNames });
  c.labels('team-a', 'gw', 'r1').inc();
  c.labels('team-a', 'gw', 'r2').inc();
  c.labels('team-a', 'gw2', 'r1').inc();
  c.labels('team-b', 'gw', 'r1').inc();
  c.labels('team-a', 'gw', 'r3').inc();
  c.labels('team-a', 'gw', 'r3x').inc();
  const own = new FastGauge(fast, { name: 'y', help: 'y', labelNames: ['namespace', 'gateway'] });
  own.labels('team-a', 'gw').set(1);
  fast.forget('team-a', 'gw', ['r2', 'r3']); // several routes at once; a gateway's own series stay
  assert.deepEqual(fast.text().split('\n').filter((l) => !l.startsWith('#') && l).map((l) => l.split(' ')[0]), [
    'x_total{namespace="team-a",gateway="gw",route="r1"}',
    'x_total{namespace="team-a",gateway="gw",route="r3x"}',
    'x_total{namespace="team-a",gateway="gw2",route="r1"}',
    'x_total{namespace="team-b",gateway="gw",route="r1"}',
    'y{namespace="team-a",gateway="gw"}',
  ]);
  fast.forget('team-a', 'gw');
  assert.deepEqual(fast.text().split('\n').filter((l) => !l.startsWith('#') && l).map((l) => l.split(' ')[0]), [
    'x_total{namespace="team-a",gateway="gw2",route="r1"}',
    'x_total{namespace="team-b",gateway="gw",route="r1"}',
  ]);
  c.labels('team-a', 'gw', 'r1').inc(2); // a gateway made again starts from zero
  assert.match(fast.text(), /x_total\{namespace="team-a",gateway="gw",route="r1"\} 2\n/);
});

test('label texts are held once across gateways, and dropped with the last series that uses them', () => {
  const fast = new FastRegistry();
  const c = new FastCounter(fast, { name: 'x_total', help: 'x', labelNames });
  for (let i = 0; i < 100; i++) c.labels('team-a', `gw-${i}`, 'api').inc();
  c.labels('team-b', 'gw', 'other').inc();
  assert.equal(fast.rests.size, 2, 'one ,route="api" text for 100 gateways');
  for (let i = 0; i < 100; i++) fast.forget('team-a', `gw-${i}`);
  assert.equal(fast.rests.size, 1);
  fast.forget('team-b', 'gw', ['other']);
  assert.equal(fast.rests.size, 0);
  c.labels('team-b', 'gw', 'again').inc();
  assert.match(fast.text(), /x_total\{namespace="team-b",gateway="gw",route="again"\} 1\n/);
});

test('the text buffer grows without losing or splitting characters', () => {
  const b = new TextBuffer(16);
  const parts = Array.from({ length: 500 }, (_, i) => (i % 7 === 0 ? `ü€${i}😀` : `line ${i}\n`));
  for (const p of parts) b.add(p);
  b.add('x'.repeat(100)); // longer than a chunk
  const chunks = b.done();
  assert.ok(chunks.length > 100 && chunks.every((c) => c.length <= 300));
  assert.equal(Buffer.concat(chunks).toString('utf8'), parts.join('') + 'x'.repeat(100));
});

test('a scrape is rendered as it is consumed: a chunk at a time, each fresh, the whole equal to one render', () => {
  const fast = new FastRegistry();
  const c = new FastCounter(fast, { name: 'x_total', help: 'x', labelNames });
  for (let i = 0; i < 5000; i++) c.labels('ns', `gw-${i}`, 'r').inc(i);
  const whole = fast.text();
  const it = fast.stream()[Symbol.iterator]();
  const first = it.next();
  assert.ok(!first.done && first.value.length > 60_000 && first.value.length <= 1 << 16);
  // the last series is not rendered yet: a change now shows in this scrape
  c.labels('ns', 'gw-4999', 'r').inc(1);
  const rest: Buffer[] = [];
  for (let r = it.next(); !r.done; r = it.next()) rest.push(r.value);
  assert.ok(rest.length > 3);
  assert.ok(rest.every((b) => b.buffer !== first.value.buffer), 'every chunk is its own buffer');
  const text = Buffer.concat([first.value, ...rest]).toString('utf8');
  assert.equal(text, whole.replace('gateway="gw-4999",route="r"} 4999\n', 'gateway="gw-4999",route="r"} 5000\n'));
  assert.notEqual(text, whole);
});

test('one gateway\'s many series are rendered a chunk at a time too (a gateway of 64 routes\' histograms was ~1.7 MB at once)', () => {
  const fast = new FastRegistry();
  const c = new FastCounter(fast, { name: 'x_total', help: 'x', labelNames });
  for (let i = 0; i < 5000; i++) c.labels('ns', 'gw', `r-${i}`).inc(i);
  const it = fast.stream()[Symbol.iterator]();
  const first = it.next();
  assert.ok(!first.done && first.value.length <= 1 << 16);
  c.labels('ns', 'gw', 'r-4999').inc(1); // not rendered yet
  const rest: Buffer[] = [];
  for (let r = it.next(); !r.done; r = it.next()) rest.push(r.value);
  assert.ok(rest.length > 2 && rest.every((b) => b.length <= 1 << 16));
  assert.match(Buffer.concat([first.value, ...rest]).toString('utf8'), /route="r-4999"\} 5000\n/);
});

test('a gauge read when scraped: what it reads then, as prom-client writes it, in its place among the families, streamed', async () => {
  const fast = new FastRegistry();
  const reg = new Registry();
  let now: { values: string[]; value: number }[] = [{ values: ['team-a', odd, 'serving'], value: 1.5e9 }, { values: ['team-b', 'gw', 'client-ca'], value: -Infinity }];
  let reads = 0;
  new FastCounter(fast, { name: 'a_total', help: 'a', labelNames }).labels('n', 'g', 'r').inc();
  new FastGaugeReader(fast, { name: 'expiry', help: 'Read \\ at\nthe scrape.', labelNames: ['namespace', 'gateway', 'certificate'] }, () => { reads++; return now; });
  new FastCounter(fast, { name: 'b_total', help: 'b', labelNames }).labels('n', 'g', 'r').inc(2);
  new Counter({ name: 'a_total', help: 'a', labelNames, registers: [reg] }).labels('n', 'g', 'r').inc();
  const g = new Gauge({ name: 'expiry', help: 'Read \\ at\nthe scrape.', labelNames: ['namespace', 'gateway', 'certificate'], registers: [reg] });
  for (const x of now) g.labels(...x.values).set(x.value);
  new Counter({ name: 'b_total', help: 'b', labelNames, registers: [reg] }).labels('n', 'g', 'r').inc(2);
  assert.equal(normal(fast.text()), normal(await reg.metrics()));
  assert.equal(reads, 1);
  now = [];
  assert.doesNotMatch(fast.text(), /^expiry\{/m, 'nothing kept from the last scrape');
  let pulled = 0;
  now = (function* () {
    for (let i = 0; i < 3000; i++, pulled++) yield { values: ['ns', `gw-${i}`, 'serving'], value: i };
  })() as unknown as typeof now;
  const it = fast.stream()[Symbol.iterator]();
  const chunks = [it.next().value as Buffer];
  assert.ok(pulled > 0 && pulled < 3000, `the first chunk is sent before the whole reading is rendered (${pulled} read)`);
  for (let r = it.next(); !r.done; r = it.next()) chunks.push(r.value);
  assert.ok(chunks.length > 2 && chunks.every((b) => b.length <= 1 << 16));
  const text = Buffer.concat(chunks).toString('utf8');
  assert.match(text, /\nexpiry\{namespace="ns",gateway="gw-2999",certificate="serving"\} 2999\n# HELP b_total/);
  assert.equal(reads, 3);
});

test('a namespace\'s series are bounded: past the bound, new ones go to the gateway\'s overflow series; a gateway\'s own are always made; other namespaces are unaffected', () => {
  let now = 1_000_000;
  const fast = new FastRegistry({ maxPerNamespace: 20, now: () => now });
  const c = new FastCounter(fast, { name: 'x_total', help: 'x', labelNames: [...labelNames, 'code'] });
  const h = new FastHistogram(fast, { name: 'z_seconds', help: 'z', labelNames, buckets }); // 7 lines a child
  const own = new FastCounter(fast, { name: 'o_total', help: 'o', labelNames: ['namespace', 'gateway'] });
  const held = () => Object.fromEntries([...fast.namespaces()].map((n) => [n.namespace, n.series]));
  h.labels('team-a', 'gw', 'r1').observe(0.5); // 7
  h.labels('team-a', 'gw', 'r2').observe(0.5); // 14
  for (let i = 0; i < 6; i++) c.labels('team-a', 'gw', 'r1', `${i}xx`).inc(); // 20: the bound
  assert.deepEqual(held(), { 'team-a': 20 });
  c.labels('team-a', 'gw', 'r1', '6xx').inc(2); // over: overflow
  c.labels('team-a', 'gw', 'r3', '2xx').inc(3); // over: the same overflow series
  h.labels('team-a', 'gw', 'r3').observe(0.05);
  own.labels('team-a', 'gw').inc(); // a gateway's own: made
  own.labels('team-a', 'other').inc();
  c.labels('team-b', 'gw', 'r1', '2xx').inc(); // another namespace: its own bound
  const text = fast.text();
  assert.match(text, /^x_total\{namespace="team-a",gateway="gw",route="\(overflow\)",code="\(overflow\)"\} 5$/m);
  assert.doesNotMatch(text, /code="6xx"|route="r3"/);
  assert.match(text, /^z_seconds_count\{namespace="team-a",gateway="gw",route="\(overflow\)"\} 1$/m);
  assert.match(text, /^o_total\{namespace="team-a",gateway="gw"\} 1$/m);
  assert.match(text, /^o_total\{namespace="team-a",gateway="other"\} 1$/m);
  assert.match(text, /^x_total\{namespace="team-b",gateway="gw",route="r1",code="2xx"\} 1$/m);
  assert.deepEqual(held(), { 'team-a': 20 + 1 + 7 + 2, 'team-b': 1 }, 'overflow series and a gateway\'s own are counted (never refused)');
  // the sum over the gateway's series is every event's
  const sum = [...text.matchAll(/^x_total\{namespace="team-a",gateway="gw",[^}]*\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
  assert.equal(sum, 6 + 2 + 3);

  // a dropped route's series count for an hour more: renaming routes over and over makes no new ones
  fast.forget('team-a', 'gw', ['r1']); // 7 + 6
  assert.deepEqual(held(), { 'team-a': 30, 'team-b': 1 });
  c.labels('team-a', 'gw', 'r4', '2xx').inc();
  assert.doesNotMatch(fast.text(), /route="r4"/);
  // ... but the same route made again takes back its own count
  c.labels('team-a', 'gw', 'r1', '0xx').inc();
  assert.match(fast.text(), /^x_total\{namespace="team-a",gateway="gw",route="r1",code="0xx"\} 1$/m);
  assert.deepEqual(held(), { 'team-a': 30, 'team-b': 1 });
  now += 3_600_001; // (no scrape in between: the bound itself lets the hour-old ones go)
  c.labels('team-a', 'gw', 'r5', '2xx').inc();
  assert.match(fast.text(), /^x_total\{namespace="team-a",gateway="gw",route="r5",code="2xx"\} 1$/m);
  assert.deepEqual(held(), { 'team-a': 30 - 12 + 1, 'team-b': 1 });
  fast.forget('team-a', 'gw');
  fast.forget('team-a', 'other');
  now += 3_600_001;
  assert.deepEqual(held(), { 'team-b': 1 });
});

test('a gateway made again under its name (deleted and made again, its listener tried again) takes back its own count; gateways renamed past the bound spill into the namespace\'s overflow gateway', () => {
  let now = 1_000_000;
  const fast = new FastRegistry({ maxPerNamespace: 100, now: () => now });
  const c = new FastCounter(fast, { name: 'x_total', help: 'x', labelNames: [...labelNames, 'code'] });
  const own = new FastCounter(fast, { name: 'o_total', help: 'o', labelNames: ['namespace', 'gateway'] });
  const held = () => [...fast.namespaces()].find((n) => n.namespace === 'team-a')?.series;
  const make = (gw: string) => {
    own.labels('team-a', gw);
    for (let r = 0; r < 20; r++) c.labels('team-a', gw, `r${r}`, '2xx');
  };
  make('a');
  make('b'); // 42
  for (let i = 0; i < 50; i++) { // a listener tried again and again: forgotten and made again
    fast.forget('team-a', 'a');
    make('a');
  }
  assert.equal(held(), 42);
  assert.match(fast.text(), /^x_total\{namespace="team-a",gateway="a",route="r19",code="2xx"\} 0$/m);
  // renamed over and over: past the bound their routes overflow, then (past it and the margin) whole gateways spill
  for (let i = 0; i < 1_000; i++) { // (past the bound each adds 2: its own series and its overflow one)
    fast.forget('team-a', i === 0 ? 'b' : `b${i - 1}`);
    make(`b${i}`);
  }
  const text = fast.text();
  const series = text.split('\n').filter((l) => l.includes('namespace="team-a"')).length;
  const after = held()!;
  assert.ok(after <= 100 + 1_200 + 10, `held ${after}`); // the bound, the margin, the overflow gateway's
  for (let i = 1_000; i < 1_500; i++) {
    fast.forget('team-a', `b${i - 1}`);
    make(`b${i}`);
  }
  assert.equal(held(), after, 'more renames hold no more');
  assert.ok(series <= 21 + 2, `${series} series exported`); // a's, the overflow gateway's own and overflow ones
  assert.match(text, /^o_total\{namespace="team-a",gateway="\(overflow\)"\} 0$/m);
  assert.match(text, /^x_total\{namespace="team-a",gateway="\(overflow\)",route="\(overflow\)",code="\(overflow\)"\} 0$/m);
  now += 3_600_001;
  make('c'); // an hour on: room again
  assert.match(fast.text(), /^x_total\{namespace="team-a",gateway="c",route="r0",code="2xx"\} 0$/m);
});

test('without a bound (0) nothing overflows, and nothing is kept for a dropped series', () => {
  const fast = new FastRegistry();
  const c = new FastCounter(fast, { name: 'x_total', help: 'x', labelNames });
  for (let i = 0; i < 1000; i++) c.labels('team-a', 'gw', `r${i}`).inc();
  assert.doesNotMatch(fast.text(), /overflow/);
  assert.deepEqual([...fast.namespaces()], [{ namespace: 'team-a', series: 1000 }]);
  fast.forget('team-a', 'gw');
  assert.deepEqual([...fast.namespaces()], []);
});

test('a gateway made again under its name with other route names gets no credit for them (its routes\' series were dropped under their own names)', () => {
  let now = 0;
  const fast = new FastRegistry({ maxPerNamespace: 2_000, now: () => now });
  const own = new FastCounter(fast, { name: 'own', help: 'h', labelNames: ['namespace', 'gateway'] });
  const byRoute = new FastCounter(fast, { name: 'req', help: 'h', labelNames: ['namespace', 'gateway', 'route'] });
  const seen = new Set<string>();
  for (let cycle = 0; cycle < 20; cycle++) {
    own.labels('t', 'g').inc();
    for (let j = 0; j < 1_000; j++) byRoute.labels('t', 'g', `c${cycle}-r${j}`).inc();
    for (const l of fast.text().split('\n')) { const m = /route="(c[^"]+)"/.exec(l); if (m) seen.add(m[1]!); }
    fast.forget('t', 'g');
    now += 60_000; // all within the hour
  }
  assert.ok(seen.size <= 2_000, `${seen.size} distinct route series made within the hour`);
});

test('a gateway that spilled stays with the namespace\'s overflow gateway until forgotten; then what still holds its series makes detached ones', async () => {
  let now = 0;
  const m = createMetrics(new Registry(), { maxSeriesPerNamespace: 100, now: () => now });
  const big = Array.from({ length: 40 }, (_, i) => new RouteMetrics(m, 't', 'big', `r${i}`));
  for (let i = 0; i < 300; i++) new GatewayMetrics(m, 't', `g${i}`);
  const gm = new GatewayMetrics(m, 't', 'late'); // spills
  const rm = new RouteMetrics(m, 't', 'late', 'exec');
  const text = async () => Buffer.concat([...(await m.exposition()).chunks]).toString();
  assert.doesNotMatch(await text(), /gateway="late"/);
  gm.requestDeferred(); // made later, while spilled: the overflow gateway's too
  assert.doesNotMatch(await text(), /gateway="late"/);
  assert.match(await text(), /^access_gateway_requests_deferred_total\{namespace="t",gateway="\(overflow\)"\} 1$/m);
  m.forget('t', 'late');
  m.forget('t', 'big');
  for (let i = 0; i < 300; i++) m.forget('t', `g${i}`);
  now += 2 * 3_600_000;
  rm.sessionEnded('closed', 30); // a session of the deleted gateway ends
  gm.sessionRefused();
  assert.doesNotMatch(await text(), /gateway="late"/, 'a deleted gateway\'s series came back');
  assert.equal(big.length, 40);
});

test('a gateway made again under its name is not spilled for what it dropped itself (its routes\' series included)', async () => {
  const m = createMetrics(new Registry(), { maxSeriesPerNamespace: 2_000, now: () => 0 });
  const text = async () => Buffer.concat([...(await m.exposition()).chunks]).toString();
  const make = (gw: string, routes: string[]) => {
    new GatewayMetrics(m, 't', gw);
    for (const r of routes.map((name) => new RouteMetrics(m, 't', gw, name))) { r.done('GET', 200, 0.01); r.done('POST', 503, 0.01); r.done('GET', 404, 0.01); }
  };
  const routes = Array.from({ length: 150 }, (_, i) => `r${i}`);
  make('big', routes); // past the bound: many of its routes overflow
  for (let i = 0; i < 24; i++) make(`s${i}`, ['a']);
  m.forget('t', 'big'); // deleted and made again, or its listener tried again
  make('big', routes);
  assert.match(await text(), /gateway="big"/, 'spilled for its own dropped series');
});

test('the budget remembers at most 4,096 dropped keys a namespace; past that the oldest count on, by minute, until their hour is over', () => {
  let now = 0;
  const b = new SeriesBudget(100_000, 3_600_000, () => now);
  for (let i = 0; i < 5_000; i++) { now = i * 100; assert.equal(b.take('t', `g\u0000r${i}`, 2, true), true); }
  for (let i = 0; i < 5_000; i++) { now = 500_000 + i * 100; b.give('t', `g\u0000r${i}`, 2); }
  assert.deepEqual([...b.namespaces()], [{ namespace: 't', series: 10_000 }]);
  // the first 904 keys are remembered as counts only: made again, they take nothing back
  assert.equal(b.take('t', 'g\u0000r0', 2, true), true);
  assert.deepEqual([...b.namespaces()], [{ namespace: 't', series: 10_002 }]);
  assert.equal(b.take('t', 'g\u0000r4999', 2, true), true); // a remembered key: its own back
  assert.deepEqual([...b.namespaces()], [{ namespace: 't', series: 10_002 }]);
  // what gateway g dropped and still has keys for (4,095 keys × 2) is left out of the spill check; the counts are not
  assert.equal(b.over('t', 'g', 1_812 - 100_000), true);
  assert.equal(b.over('t', 'g', 1_813 - 100_000), false);
  now = 500_000 + 5_000 * 100 + 3_600_001; // every drop's hour is over
  assert.deepEqual([...b.namespaces()], [{ namespace: 't', series: 4 }]);
});

test('keys churned past the 4,096 remembered for hours on end count one hour\'s worth, not more', () => {
  let now = 0;
  const b = new SeriesBudget(1_000_000, 3_600_000, () => now);
  const held: number[] = [];
  for (let i = 0; now < 6 * 3_600_000; i++, now += 500) { // a new route's series made and dropped every 500 ms
    b.take('t', `g\u0000r${i}`, 1, true);
    b.give('t', `g\u0000r${i}`, 1);
    if (now % 3_600_000 === 0 && now > 0) held.push([...b.namespaces()][0]!.series);
  }
  for (const n of held) assert.ok(n >= 7_000 && n <= 7_400, `an hour's worth: ${held.join(', ')}`);
});

test('a family with many children of one gateway finds them by an index that forgetting routes keeps true', () => {
  const fast = new FastRegistry();
  const c = new FastCounter(fast, { name: 'x_total', help: 'x', labelNames });
  for (let i = 0; i < 40; i++) c.labels('team-a', 'gw', `r${i}`).inc(i + 1);
  for (let i = 0; i < 40; i++) assert.equal(c.labels('team-a', 'gw', `r${i}`), c.labels('team-a', 'gw', `r${i}`));
  c.labels('team-a', 'gw', 'r39').inc(100); // the same child as before: 40 + 100
  fast.forget('team-a', 'gw', Array.from({ length: 20 }, (_, i) => `r${i}`));
  c.labels('team-a', 'gw', 'r5').inc(); // made again: from zero, not the forgotten child
  c.labels('team-a', 'gw', 'r30').inc(); // kept: 31 + 1
  const value = (r: string) => new RegExp(`^x_total\\{namespace="team-a",gateway="gw",route="${r}"\\} (\\d+)$`, 'm').exec(fast.text())?.[1];
  assert.equal(value('r39'), '140');
  assert.equal(value('r5'), '1');
  assert.equal(value('r30'), '32');
  assert.equal(value('r6'), undefined);
  assert.equal(fast.text().split('\n').filter((l) => l.startsWith('x_total{')).length, 21);
});
