// The admin port's /metrics authorizer (pure logic, a fake reviewer) and the admin server's
// answers for each decision (real sockets, a fake authorizer).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { connect, type AddressInfo } from 'node:net';
import { once } from 'node:events';
import pino from 'pino';
import { request } from 'undici';
import { AdminAuthorizer, bearerToken, type AdminDecision, type AdminReviewer, type AdminUser } from '../../src/observability/admin-auth.js';
import { startAdminServer } from '../../src/observability/admin-server.js';
import { testMetrics } from '../../src/observability/metrics.js';

const user: AdminUser = { username: 'system:serviceaccount:monitoring:prometheus', uid: 'u', groups: ['system:serviceaccounts'], extra: {} };

function jwt(claims: object): string {
  const b = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b({ alg: 'RS256' })}.${b(claims)}.sig`;
}

/** Answers from a table: token -> allowed | forbidden | unauthenticated | throw; `gate` holds calls open. */
class FakeReviewer implements AdminReviewer {
  authn = 0;
  authz = 0;
  inFlight = 0;
  maxInFlight = 0;
  gate: Promise<void> | undefined;
  seen: { verb: string; path: string }[] = [];
  asked: string[] = [];
  constructor(public answers: Record<string, 'allowed' | 'forbidden' | 'unauthenticated' | 'throw'>) {}
  async authenticate(token: string): Promise<AdminUser | null> {
    this.authn++;
    this.asked.push(token);
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await this.gate;
      const a = this.answers[token] ?? 'unauthenticated';
      if (a === 'throw') throw new Error('connect ECONNREFUSED');
      return a === 'unauthenticated' ? null : { ...user, username: token };
    } finally {
      this.inFlight--;
    }
  }
  async authorize(u: AdminUser, verb: string, path: string): Promise<boolean> {
    this.authz++;
    this.seen.push({ verb, path });
    return this.answers[u.username] === 'allowed';
  }
}

const b = (t: string) => [`Bearer ${t}`];

test('bearer tokens: exactly one Authorization header with a well-formed Bearer token', () => {
  const cases: [string[] | string | undefined, string | null][] = [
    [undefined, null],
    [[], null],
    [['Bearer abc.def-_~+/=='], 'abc.def-_~+/=='],
    ['Bearer abc', 'abc'],
    [['bearer abc'], 'abc'],
    [['Bearer  abc '], 'abc'],
    [['Bearer a', 'Bearer a'], null], // two headers
    [['Basic dXNlcjpwYXNz'], null],
    [['Bearer'], null],
    [['Bearer '], null],
    [['Bearer a b'], null],
    [['Bearer a,b'], null],
    [['Bearer ' + 'a'.repeat(8193)], null],
    [['Bearer ' + 'a'.repeat(8192)], 'a'.repeat(8192)],
  ];
  for (const [h, want] of cases) assert.equal(bearerToken(h), want, JSON.stringify(h)?.slice(0, 60));
});

test('each decision; the SubjectAccessReview asks for get on the path', async () => {
  const r = new FakeReviewer({ ok: 'allowed', no: 'forbidden', down: 'throw' });
  const a = new AdminAuthorizer(r);
  assert.equal(await a.check(undefined, '/metrics'), 'unauthenticated');
  assert.equal(await a.check(['Basic x'], '/metrics'), 'unauthenticated');
  assert.equal(r.authn, 0, 'no review for a missing or malformed header');
  assert.equal(await a.check(b('bad'), '/metrics'), 'unauthenticated');
  assert.equal(await a.check(b('no'), '/metrics'), 'forbidden');
  assert.equal(await a.check(b('ok'), '/metrics'), 'allowed');
  assert.equal(await a.check(b('down'), '/metrics'), 'unavailable');
  assert.deepEqual(r.seen, [{ verb: 'get', path: '/metrics' }, { verb: 'get', path: '/metrics' }]);
});

test('decisions are cached: allowed 60 s, refusals 10 s, failures never; per token and path', async () => {
  let now = 1_000_000;
  const r = new FakeReviewer({ ok: 'allowed', no: 'forbidden' });
  const metrics = testMetrics();
  const a = new AdminAuthorizer(r, { now: () => now, metrics });
  for (let i = 0; i < 3; i++) assert.equal(await a.check(b('ok'), '/metrics'), 'allowed');
  assert.equal(r.authn, 1);
  assert.equal(await a.check(b('ok'), '/other'), 'allowed');
  assert.equal(r.authn, 2, 'another path is another decision');
  for (let i = 0; i < 3; i++) assert.equal(await a.check(b('no'), '/metrics'), 'forbidden');
  for (let i = 0; i < 3; i++) assert.equal(await a.check(b('bad'), '/metrics'), 'unauthenticated');
  assert.equal(r.authn, 4);
  now += 10_001; // refusals expire, allowed stays
  assert.equal(await a.check(b('no'), '/metrics'), 'forbidden');
  assert.equal(await a.check(b('bad'), '/metrics'), 'unauthenticated');
  assert.equal(await a.check(b('ok'), '/metrics'), 'allowed');
  assert.equal(r.authn, 6);
  now += 50_000; // 60.001 s after the first allowed decision
  assert.equal(await a.check(b('ok'), '/metrics'), 'allowed');
  assert.equal(r.authn, 7);
  // the apiserver fails: 503, and the next request asks again (a failure is not remembered)
  r.answers.flaky = 'throw';
  assert.equal(await a.check(b('flaky'), '/metrics'), 'unavailable');
  r.answers.flaky = 'allowed';
  assert.equal(await a.check(b('flaky'), '/metrics'), 'allowed');
  assert.equal(r.authn, 9);
  const text = await metrics.registry.metrics();
  assert.match(text, /access_gateway_admin_auth_decisions_total\{result="allowed"\} 7/);
  assert.match(text, /access_gateway_admin_auth_decisions_total\{result="forbidden"\} 4/);
  assert.match(text, /access_gateway_admin_auth_decisions_total\{result="unauthenticated"\} 4/);
  assert.match(text, /access_gateway_admin_auth_decisions_total\{result="unavailable"\} 1/);
  assert.match(text, /access_gateway_admin_auth_decisions_total\{result="overloaded"\} 0/);
  assert.match(text, /access_gateway_admin_auth_cache_requests_total\{result="hit"\} 7/);
  assert.match(text, /access_gateway_admin_auth_cache_requests_total\{result="miss"\} 9/);
});

test('an allowed decision is never reused past the token exp', async () => {
  let now = 1_000_000_000;
  const token = jwt({ exp: now / 1000 + 5 });
  const r = new FakeReviewer({ [token]: 'allowed' });
  const a = new AdminAuthorizer(r, { now: () => now });
  assert.equal(await a.check(b(token), '/metrics'), 'allowed');
  now += 4_000;
  assert.equal(await a.check(b(token), '/metrics'), 'allowed');
  assert.equal(r.authn, 1);
  now += 2_000; // past exp, well within 60 s
  r.answers[token] = 'unauthenticated';
  assert.equal(await a.check(b(token), '/metrics'), 'unauthenticated');
  assert.equal(r.authn, 2);
});

test('the cache is bounded: the least recently used decision goes first', async () => {
  const r = new FakeReviewer({ a: 'allowed', b: 'allowed', c: 'allowed' });
  const a = new AdminAuthorizer(r, { maxEntries: 2 });
  await a.check(b('a'), '/metrics');
  await a.check(b('b'), '/metrics');
  await a.check(b('a'), '/metrics'); // a is now the most recently used
  assert.equal(r.authn, 2);
  await a.check(b('c'), '/metrics'); // evicts b
  await a.check(b('a'), '/metrics');
  assert.equal(r.authn, 3, 'a kept');
  await a.check(b('b'), '/metrics');
  assert.equal(r.authn, 4, 'b was evicted');
});

test('concurrent checks of one token share one review', async () => {
  const r = new FakeReviewer({ ok: 'allowed' });
  let open!: () => void;
  r.gate = new Promise((resolve) => { open = resolve; });
  const a = new AdminAuthorizer(r);
  const all = Array.from({ length: 20 }, () => a.check(b('ok'), '/metrics'));
  open();
  assert.deepEqual(new Set(await Promise.all(all)), new Set(['allowed']));
  assert.equal(r.authn, 1);
});

test('reviews in flight are bounded; beyond the waiting room the answer is overloaded (503) at once', async () => {
  const r = new FakeReviewer({});
  let open!: () => void;
  r.gate = new Promise((resolve) => { open = resolve; });
  const a = new AdminAuthorizer(r, { maxInFlight: 2, maxWaiting: 3 });
  const running = Array.from({ length: 5 }, (_, i) => a.check(b(`t${i}`), '/metrics'));
  try {
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(r.authn, 2, 'only two reviews started');
    // 2 running, 3 waiting: the sixth and seventh distinct tokens are refused without a review
    assert.equal(await a.check(b('t5'), '/metrics'), 'overloaded');
    assert.equal(await a.check(b('t6'), '/metrics'), 'overloaded');
    assert.equal(r.authn, 2);
  } finally {
    open();
  }
  assert.deepEqual(await Promise.all(running), Array(5).fill('unauthenticated'));
  assert.equal(r.authn, 5, 'the waiting ones ran after');
  assert.equal(r.maxInFlight, 2);
  // an overloaded answer is not remembered
  assert.equal(await a.check(b('t5'), '/metrics'), 'unauthenticated');
});

test('the token is never logged', async () => {
  const lines: string[] = [];
  const log = pino({ level: 'trace' }, new Writable({ write(chunk, _e, cb) { lines.push(String(chunk)); cb(); } }));
  const secret = 'eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2Vu.c2lnbmF0dXJl';
  const a = new AdminAuthorizer(new FakeReviewer({ [secret]: 'throw' }), { log });
  assert.equal(await a.check(b(secret), '/metrics'), 'unavailable');
  assert.ok(lines.length > 0, 'the failure is logged');
  for (const l of lines) assert.ok(!l.includes(secret) && !l.includes('c2VjcmV0LXRva2Vu'), l);
});

test('the admin server answers 401 with WWW-Authenticate, 403, 503 with Retry-After; probes stay open', async (t) => {
  let decision: AdminDecision = 'allowed';
  const seen: (string[] | undefined)[] = [];
  const metrics = testMetrics();
  const server = await startAdminServer({
    host: '127.0.0.1', port: 0, metrics, ready: () => true,
    metricsAuth: { check: async (h) => { seen.push(h); return decision; } },
  });
  t.after(() => server.close());
  const port = (server.address() as AddressInfo).port;
  const get = async (path: string, headers: Record<string, string> = {}) => {
    const r = await request(`http://127.0.0.1:${port}${path}`, { headers });
    return { status: r.statusCode, headers: r.headers, body: await r.body.text() };
  };
  const want: [AdminDecision, number][] = [['unauthenticated', 401], ['forbidden', 403], ['unavailable', 503], ['overloaded', 503], ['allowed', 200]];
  for (const [d, status] of want) {
    decision = d;
    const r = await get('/metrics', { authorization: 'Bearer x' });
    assert.equal(r.status, status, d);
    assert.equal(r.headers['www-authenticate'], status === 401 ? 'Bearer' : undefined, d);
    assert.equal(r.headers['retry-after'], status === 503 ? '1' : undefined, d);
    if (status === 200) assert.match(r.body, /^# HELP access_gateway_/m);
    else assert.doesNotMatch(r.body, /access_gateway_/, `${d}: no metrics in a refusal`);
  }
  assert.deepEqual(seen.at(-1), ['Bearer x'], 'the authorizer sees the header values');
  decision = 'unauthenticated';
  assert.equal((await get('/healthz')).status, 200);
  assert.equal((await get('/readyz')).status, 200);
  assert.equal(seen.length, want.length, 'probes are not checked');
});

test('/metrics is sent as it renders: a reader that stops reading stops the rendering; one that leaves ends it', async (t) => {
  const chunk = Buffer.alloc(1 << 16, 'x');
  let pulled = 0;
  let finished = false;
  function* chunks(n: number): Generator<Buffer> {
    try {
      for (let i = 0; i < n; i++) { pulled++; yield chunk; }
    } finally {
      finished = true;
    }
  }
  let n = 2000; // 125 MiB
  const server = await startAdminServer({
    host: '127.0.0.1', port: 0, ready: () => true,
    metrics: { contentType: 'text/plain', exposition: async () => ({ head: '# head\n', chunks: chunks(n) }) },
  });
  t.after(() => server.close());
  const port = (server.address() as AddressInfo).port;
  const sock = connect(port, '127.0.0.1');
  await once(sock, 'connect');
  sock.pause();
  sock.write('GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n');
  await new Promise((r) => setTimeout(r, 500));
  assert.ok(pulled > 0 && pulled < 200, `${pulled} of ${n} chunks rendered while nobody reads`);
  assert.equal(finished, false);
  sock.destroy();
  await waitUntil(() => finished);
  assert.ok(pulled < 200, 'the scrape stopped when its reader left');
  n = 40;
  const r = await request(`http://127.0.0.1:${port}/metrics`);
  const body = Buffer.from(await r.body.arrayBuffer());
  assert.equal(body.length, '# head\n'.length + 40 * chunk.length);
});

async function waitUntil(f: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !f(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(f(), 'in time');
}

test('refusals never push an allowed decision out: a flood of junk tokens leaves the scraper cached', async () => {
  const r = new FakeReviewer({ scraper: 'allowed' });
  const a = new AdminAuthorizer(r, { maxEntries: 4 });
  assert.equal(await a.check(b('scraper'), '/metrics', '10.0.0.1'), 'allowed');
  for (let i = 0; i < 50; i++) assert.equal(await a.check(b(`junk${i}`), '/metrics', '10.0.0.9'), 'unauthenticated');
  assert.equal(await a.check(b('scraper'), '/metrics', '10.0.0.1'), 'allowed');
  assert.equal(r.answers.scraper, 'allowed');
  assert.equal(r.authn, 51, 'the scraper was reviewed once');
});

test('one client address holds at most maxWaitingPerSource of the waiting room; an allowed decision is renewed before it expires, ahead of the queue', async () => {
  let now = 1_000_000;
  const r = new FakeReviewer({ scraper: 'allowed' });
  const a = new AdminAuthorizer(r, { maxInFlight: 1, maxWaiting: 8, maxWaitingPerSource: 3, now: () => now });
  assert.equal(await a.check(b('scraper'), '/metrics', 'prom'), 'allowed');
  let open!: () => void;
  r.gate = new Promise((resolve) => { open = resolve; });
  const flood = Array.from({ length: 4 }, (_, i) => a.check(b(`junk${i}`), '/metrics', 'attacker')); // 1 running, 3 waiting
  await new Promise((resolve) => setImmediate(resolve));
  const now_ = (p: Promise<AdminDecision>) => Promise.race([p, new Promise((r) => setImmediate(() => r('still waiting')))]);
  assert.equal(await now_(a.check(b('junk9'), '/metrics', 'attacker')), 'overloaded', 'the attacker\'s fourth waiting check');
  // another client still gets a place
  const other = a.check(b('newcomer'), '/metrics', 'elsewhere');
  // 50 s on: the scraper's decision is in its last quarter, served from the cache and renewed first
  now += 50_000;
  const before = r.authn;
  assert.equal(await a.check(b('scraper'), '/metrics', 'prom'), 'allowed');
  open();
  await Promise.all([...flood, other]);
  assert.equal(r.authn, before + 3 + 1 + 1, 'the three waiting junk tokens, the newcomer and the renewal');
  assert.deepEqual(r.asked.slice(1, 3), ['junk0', 'scraper'], 'the renewal went ahead of those waiting');
  now += 30_000; // 80 s after the first review: alive only because it was renewed
  const n = r.authn;
  assert.equal(await a.check(b('scraper'), '/metrics', 'prom'), 'allowed');
  assert.equal(r.authn, n, 'served from the renewed decision');
});

test('tokens not cached start at most reviewsPerSecond checks a second (503 past it); a cached scraper is never held back', async () => {
  let now = 1_000_000_000;
  const r = new FakeReviewer({ scraper: 'allowed', late: 'allowed' });
  const a = new AdminAuthorizer(r, { now: () => now, reviewsPerSecond: 5 });
  assert.equal(await a.check(b('scraper'), '/metrics'), 'allowed');
  const junk = await Promise.all(Array.from({ length: 10 }, (_, i) => a.check(b(`junk${i}`), '/metrics', '10.0.0.1')));
  assert.deepEqual(junk.filter((d) => d === 'unauthenticated').length, 4, 'the rest of the second\'s worth');
  assert.deepEqual(junk.filter((d) => d === 'overloaded').length, 6);
  assert.equal(r.authn, 5);
  assert.equal(await a.check(b('scraper'), '/metrics'), 'allowed', 'cached');
  assert.equal(await a.check(b('late'), '/metrics', '10.0.0.1'), 'overloaded', 'from the flooding address');
  now += 1_000;
  assert.equal(await a.check(b('late'), '/metrics', '10.0.0.1'), 'allowed');
});

test('a scraper whose decision ended (it scrapes every 30 s or more) is asked again past the rate a flood of other tokens uses up', async () => {
  let now = 1_000_000_000;
  const r = new FakeReviewer({ scraper: 'allowed' });
  const a = new AdminAuthorizer(r, { now: () => now, reviewsPerSecond: 5 });
  assert.equal(await a.check(b('scraper'), '/metrics'), 'allowed');
  for (let scrape = 0; scrape < 4; scrape++) {
    now += 60_000;
    // the flood empties the rate just before each scrape
    await Promise.all(Array.from({ length: 10 }, (_, i) => a.check(b(`junk${scrape}-${i}`), '/metrics', `10.0.${scrape}.${i}`)));
    assert.equal(await a.check(b('scraper'), '/metrics'), 'allowed', `scrape ${scrape}`);
  }
  // a refusal that ended is no renewal: the rate the flood used up holds it back
  assert.equal(await a.check(b('junk0-0'), '/metrics'), 'overloaded');
});

test('an allowed decision that ended with its token\'s exp is no renewal: the rate holds its check back', async () => {
  let now = 1_000_000_000;
  const token = jwt({ exp: now / 1000 + 5 });
  const r = new FakeReviewer({ [token]: 'allowed' });
  const a = new AdminAuthorizer(r, { now: () => now, reviewsPerSecond: 2 });
  assert.equal(await a.check(b(token), '/metrics'), 'allowed');
  now += 6_000;
  await Promise.all([a.check(b('junk1'), '/metrics'), a.check(b('junk2'), '/metrics')]);
  assert.equal(await a.check(b(token), '/metrics'), 'overloaded');
});

test('a flood of new tokens from a few addresses leaves a quarter of the rate and places in the waiting room to quieter addresses: a scraper\'s new token is checked', async () => {
  let now = 1_000_000_000;
  const r = new FakeReviewer({ scraper: 'allowed', rotated: 'allowed' });
  let open!: () => void;
  const a = new AdminAuthorizer(r, { now: () => now, reviewsPerSecond: 20, maxInFlight: 2, maxWaiting: 8, maxWaitingPerSource: 2 });
  r.gate = new Promise((resolve) => { open = resolve; });
  // 8 pods' addresses, 10 junk tokens each: the rate's second spent, the waiting room full
  const flood = Array.from({ length: 80 }, (_, i) => a.check(b(`junk${i}`), '/metrics', `10.0.0.${i % 8}`));
  await new Promise((resolve) => setImmediate(resolve));
  const scrape = a.check(b('scraper'), '/metrics', '10.1.0.9');
  const late = await a.check(b('junk-late'), '/metrics', '10.0.0.3');
  open();
  assert.equal(await scrape, 'allowed', 'the scraper\'s new token');
  assert.equal(late, 'overloaded', 'a flooding address gets no more');
  const floodAnswers = await Promise.all(flood);
  assert.equal(floodAnswers.filter((d) => d === 'unauthenticated').length, 10, 'the flood: 2 in flight, 8 waiting');
  // the flood again, a minute on, after the scraper's token was rotated
  now += 60_000;
  r.gate = new Promise((resolve) => { open = resolve; });
  const again = Array.from({ length: 80 }, (_, i) => a.check(b(`junk-again${i}`), '/metrics', `10.0.0.${i % 8}`));
  await new Promise((resolve) => setImmediate(resolve));
  const rotated = a.check(b('rotated'), '/metrics', '10.1.0.9');
  open();
  assert.equal(await rotated, 'allowed');
  await Promise.all(again);
  // the rate spent by the flood (answered at once): a quiet address's check takes the reserve
  const fast = new AdminAuthorizer(new FakeReviewer({ scraper: 'allowed' }), { now: () => now, reviewsPerSecond: 4 });
  const second = (k: number) => Promise.all(Array.from({ length: 40 }, (_, i) => fast.check(b(`junk${k}-${i}`), '/metrics', `10.0.0.${i % 8}`)));
  await second(0); // (its addresses new: the first of them were quiet)
  now += 1_000;
  const spent = await second(1);
  assert.equal(spent.filter((d) => d === 'unauthenticated').length, 4, 'a flood that goes on gets the rate, no more');
  assert.equal(await fast.check(b('scraper'), '/metrics', '10.1.0.9'), 'allowed');
});

/** An authorizer at the chart's rate (20 new tokens a second) with room for every check to wait
 * (the rate decides, as with a slow apiserver's many waiting checks), its clock moved by hand,
 * and `n` tokens the reviewer allows: scraper0, scraper1, ... */
function rateBound(n: number) {
  const clock = { now: 1_000_000_000 };
  const tokens = Object.fromEntries(Array.from({ length: n }, (_, i) => [`scraper${i}`, 'allowed' as const]));
  const a = new AdminAuthorizer(new FakeReviewer(tokens), { now: () => clock.now, reviewsPerSecond: 20, maxInFlight: 1000, maxWaitingPerSource: 1000 });
  return { a, clock };
}

test('the reserve is not taken by a second address of a flooder\'s that asks a little less: a scraper\'s new token every 10 s is checked', async () => {
  const { a, clock } = rateBound(4);
  const got: AdminDecision[] = [];
  for (let second = 0; second < 40; second++) {
    const flood = Array.from({ length: 500 }, (_, i) => a.check(b(`a${second}-${i}`), '/metrics', '10.0.0.1'));
    const steady = Array.from({ length: 10 }, (_, i) => a.check(b(`b${second}-${i}`), '/metrics', '10.0.0.2'));
    if (second % 10 === 0) got.push(await a.check(b(`scraper${second / 10}`), '/metrics', '10.9.9.9'));
    await Promise.all([...flood, ...steady]);
    clock.now += 1_000;
  }
  assert.deepEqual(got, ['allowed', 'allowed', 'allowed', 'allowed']);
});

test('one address takes from the reserved rate once in 10 s: twelve addresses each asking every 2 s do not use it up', async () => {
  const { a, clock } = rateBound(10);
  const got: AdminDecision[] = [];
  let reserved = 0;
  for (let second = 0; second < 20; second++) {
    await Promise.all(Array.from({ length: 500 }, (_, i) => a.check(b(`a${second}-${i}`), '/metrics', '10.0.0.1'))); // the rate spent
    // 12 addresses, each every other second: quiet each time
    const few = await Promise.all(Array.from({ length: 6 }, (_, i) => a.check(b(`q${second}-${i}`), '/metrics', `10.0.1.${(second % 2) * 6 + i}`)));
    reserved += few.filter((d) => d !== 'overloaded').length;
    if (second % 2 === 0) got.push(await a.check(b(`scraper${second / 2}`), '/metrics', `10.9.9.${second}`));
    clock.now += 1_000;
  }
  // the reserve's burst of 5 goes to the twelve at seconds 0-1 and 10-11 (once each per 10 s), the
  // rest of the time to the new addresses' tokens
  const o = 'overloaded', y = 'allowed';
  assert.deepEqual(got, [o, y, y, y, y, o, y, y, y, y]);
  assert.equal(reserved, 20, 'the twelve took 5 a second at seconds 0, 1, 10 and 11');
});

test('a wall clock stepped back neither keeps an address loud nor keeps it from the reserve for the step', async () => {
  let now = 1_000_000_000;
  const a = new AdminAuthorizer(new FakeReviewer({}), { now: () => now, reviewsPerSecond: 20 });
  const loud = (a as unknown as { loud: { quiet(s: string): boolean; mayReserve(s: string, now: number): boolean } }).loud;
  await a.check(b('junk'), '/metrics', '10.0.0.1');
  assert.equal(loud.quiet('10.0.0.1'), false);
  assert.equal(loud.mayReserve('10.0.0.1', now), true);
  now -= 3_600_000;
  assert.equal(loud.quiet('10.0.0.1'), false, 'at the step: as it was');
  now += 3_000;
  assert.equal(loud.quiet('10.0.0.1'), true, 'halved since, on the stepped clock');
  assert.equal(loud.mayReserve('10.0.0.1', now), true);
});
