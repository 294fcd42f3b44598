import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EntryBudget, Refusals, refusals as processRefusals, TokenCache } from '../../src/auth/token-cache.js';

class Definite extends Error {}

function setup(opts: { negativeTtlMs?: number; maxNegativeEntries?: number } = {}) {
  let now = 0;
  const lookups: boolean[] = [];
  const cache = new TokenCache<string>({
    now: () => now, onLookup: (h) => lookups.push(h), negativeTtlMs: opts.negativeTtlMs ?? 5_000,
    maxNegativeEntries: opts.maxNegativeEntries, isDefinite: (e) => e instanceof Definite,
  });
  return { cache, lookups, tick: (ms: number) => { now += ms; } };
}

test('definite refusals are remembered for the negative ttl; other failures never are', async () => {
  const { cache, tick } = setup();
  let loads = 0;
  const refuse = async () => { loads++; throw new Definite('no'); };
  await assert.rejects(cache.getOrLoad('k', refuse), Definite);
  await assert.rejects(cache.getOrLoad('k', refuse), Definite);
  assert.equal(loads, 1);
  assert.equal(cache.negativeSize, 1);
  tick(5_000);
  await assert.rejects(cache.getOrLoad('k', refuse), Definite);
  assert.equal(loads, 2);
  let unavailable = 0;
  const down = async () => { unavailable++; throw new Error('503'); };
  await assert.rejects(cache.getOrLoad('u', down), /503/);
  await assert.rejects(cache.getOrLoad('u', down), /503/);
  assert.equal(unavailable, 2);
});

test('concurrent misses share one load, also when it refuses', async () => {
  const { cache } = setup();
  let loads = 0;
  const slow = () => new Promise<{ value: string; ttlMs: number }>((_, reject) => setImmediate(() => { loads++; reject(new Definite('no')); }));
  const all = await Promise.allSettled(Array.from({ length: 50 }, () => cache.getOrLoad('k', slow)));
  assert.ok(all.every((r) => r.status === 'rejected'));
  assert.equal(loads, 1);
});

test('the precheck runs only on a miss; what it throws is not cached and no load starts', async () => {
  const { cache, lookups } = setup();
  let prechecks = 0;
  let loads = 0;
  const load = async () => { loads++; return { value: 'v', ttlMs: 1_000 }; };
  await assert.rejects(cache.getOrLoad('k', load, () => { prechecks++; throw new Definite('garbage'); }), /garbage/);
  assert.equal(loads, 0);
  assert.equal(cache.negativeSize, 0);
  assert.equal(await cache.getOrLoad('k', load, () => { prechecks++; }), 'v');
  assert.equal(await cache.getOrLoad('k', load, () => { prechecks++; }), 'v');
  assert.equal(prechecks, 2);
  assert.equal(loads, 1);
  assert.deepEqual(lookups, [false, false, true]);
});

test('the negative cache is bounded (oldest first out)', async () => {
  const { cache } = setup({ maxNegativeEntries: 3 });
  const refuse = async () => { throw new Definite('no'); };
  for (const k of ['a', 'b', 'c', 'd']) await assert.rejects(cache.getOrLoad(k, refuse));
  assert.equal(cache.negativeSize, 3);
  let loads = 0;
  await assert.rejects(cache.getOrLoad('a', async () => { loads++; throw new Definite('no'); }));
  assert.equal(loads, 1); // 'a' had been evicted
});

test('refusals are bounded over all caches together (anyone can make them, on every gateway), oldest out first: a flood never leaves another cache remembering none', async () => {
  let now = 0;
  const refusals = new Refusals(100);
  const cache = (max = 4_096) => new TokenCache<string>({ now: () => now, negativeTtlMs: 5_000, maxNegativeEntries: max, isDefinite: () => true, refusals });
  const refuse = async () => { throw new Definite('no'); };
  const [a, b, c] = [cache(), cache(), cache(30)];
  for (let k = 0; k < 100; k++) await assert.rejects(a.getOrLoad(`${k}`, refuse));
  assert.equal(a.negativeSize, 100);
  await assert.rejects(b.getOrLoad('x', refuse));
  assert.deepEqual([a.negativeSize, b.negativeSize, refusals.size], [99, 1, 100], 'b\'s refusal took the oldest of all');
  let loads = 0;
  await assert.rejects(b.getOrLoad('x', async () => { loads++; throw new Definite('no'); }));
  assert.equal(loads, 0, 'b remembers it');
  // a cache past its own bound drops its own oldest, not others'
  for (let k = 0; k < 50; k++) await assert.rejects(c.getOrLoad(`${k}`, refuse));
  assert.deepEqual([a.negativeSize, b.negativeSize, c.negativeSize, refusals.size], [69, 1, 30, 100]);
  await assert.rejects(c.getOrLoad('49', async () => { loads++; throw new Definite('no'); }));
  await assert.rejects(c.getOrLoad('0', async () => { loads++; throw new Definite('no'); }));
  assert.equal(loads, 1, 'c kept its newest 30');
  // expired ones are not answered; a closed cache's go
  now += 5_000;
  await assert.rejects(b.getOrLoad('x', async () => { loads++; throw new Definite('no'); }));
  assert.equal(loads, 2);
  a.close();
  assert.equal(a.negativeSize, 0);
  assert.equal(refusals.size, b.negativeSize + c.negativeSize);
  // the default: one bound for the process
  assert.equal(processRefusals.max, 16_384);
  const d = new TokenCache<string>({ negativeTtlMs: 5_000, isDefinite: () => true });
  const before = processRefusals.size;
  await assert.rejects(d.getOrLoad('x', refuse));
  assert.equal(processRefusals.size, before + 1, 'a cache\'s refusal is kept in the process\'s');
  d.close();
  assert.equal(processRefusals.size, before);
});

test('caches sharing a budget: full, a cache evicts its own oldest; one with nothing of its own does not cache; expired and closed entries come back', async () => {
  let now = 0;
  const budget = new EntryBudget(3, () => now);
  const a = new TokenCache<string>({ now: () => now, budget });
  const b = new TokenCache<string>({ now: () => now, budget });
  const ok = (v: string, ttlMs = 10_000) => async () => ({ value: v, ttlMs });
  for (const k of ['a1', 'a2', 'a3']) await a.getOrLoad(k, ok(k));
  assert.equal(a.size, 3);
  await b.getOrLoad('b1', ok('b1'));
  assert.equal(b.size, 0, 'b has nothing of its own to evict');
  await a.getOrLoad('a4', ok('a4'));
  assert.deepEqual([a.size, a.get('a1'), a.get('a4')], [3, undefined, 'a4'], 'a evicted its own oldest');
  // expired entries are swept when the budget runs out (at most once a second)
  now += 20_000;
  await b.getOrLoad('b2', ok('b2'));
  assert.equal(b.get('b2'), 'b2');
  await a.getOrLoad('a5', ok('a5', 1_000_000));
  await b.getOrLoad('b3', ok('b3', 1_000_000));
  await b.getOrLoad('b4', ok('b4', 1_000_000));
  assert.equal(a.size + b.size, 3);
  // a closed cache gives its entries back, and caches nothing more
  a.close();
  const c = new TokenCache<string>({ now: () => now, budget });
  await c.getOrLoad('c1', ok('c1'));
  assert.equal(c.get('c1'), 'c1');
  await a.getOrLoad('a6', ok('a6'));
  assert.equal(a.size, 0);
});

test('a budget of 0 is no limit', async () => {
  const budget = new EntryBudget(0);
  const cache = new TokenCache<string>({ budget });
  for (let i = 0; i < 100; i++) await cache.getOrLoad(`k${i}`, async () => ({ value: 'v', ttlMs: 10_000 }));
  assert.equal(cache.size, 100);
});

// Whether a caller is charged (and vouches for its address) is decided when it is cached: one
// reviewed before its rule's window opened sat among the outsiders, uncharged, after it opened.
test('an outsider the gateway admits now (a window opened since its review) is loaded again, then cached as charged', async () => {
  const cache = new TokenCache<string>({ maxEntries: 10, maxOutsiders: 10 });
  let open = false;
  cache.charged = () => open;
  let loads = 0;
  const load = async () => ({ value: `v${++loads}`, ttlMs: 60_000 });
  assert.equal(await cache.getOrLoad('k', load), 'v1');
  assert.equal(cache.size, 0, 'an outsider');
  assert.equal(cache.hit('k'), 'v1', 'still refused: served from the outsiders');
  open = true;
  assert.equal(cache.hit('k'), undefined, 'admitted now: a miss');
  assert.equal(await cache.getOrLoad('k', load), 'v2');
  assert.deepEqual([cache.size, cache.hit('k')], [1, 'v2']);
});

test('an entry due for renewal is loaded again once, in the background; a miss after it expired joins that load; an entry without a renewal time is never renewed', async () => {
  const { cache, tick } = setup();
  let release: (v: { value: string; ttlMs: number; renewInMs: number }) => void = () => {};
  let loads = 0;
  const load = () => { loads++; return new Promise<{ value: string; ttlMs: number; renewInMs: number }>((res) => { release = res; }); };
  const first = cache.getOrLoad('k', load);
  release({ value: 'v1', ttlMs: 1_000, renewInMs: 800 });
  assert.equal(await first, 'v1');
  tick(799);
  assert.equal(cache.renewalDue('k'), false);
  tick(1);
  assert.equal(cache.renewalDue('k'), true);
  assert.equal(cache.renewalDue('k'), false, 'claimed once');
  cache.renew('k', load);
  cache.renew('k', load);
  assert.equal(loads, 2);
  tick(200); // expired while the renewal runs
  assert.equal(cache.hit('k'), undefined);
  const joined = cache.getOrLoad('k', load);
  assert.equal(loads, 2, 'the miss joined the renewal');
  release({ value: 'v2', ttlMs: 1_000, renewInMs: 800 });
  assert.equal(await joined, 'v2');
  assert.equal(cache.hit('k'), 'v2');
  await cache.getOrLoad('n', async () => ({ value: 'x', ttlMs: 1_000 }));
  tick(999);
  assert.equal(cache.renewalDue('n'), false);
});

test('a renewal whose answer the gateway no longer admits moves it to the outsiders: the old admitted answer does not serve on', async () => {
  const { cache, tick } = setup();
  cache.charged = (v) => v === 'admitted';
  await cache.getOrLoad('k', async () => ({ value: 'admitted', ttlMs: 1_000, renewInMs: 800 }));
  tick(800);
  assert.equal(cache.renewalDue('k'), true);
  cache.renew('k', async () => ({ value: 'refused now', ttlMs: 1_000, renewInMs: 800 }));
  await new Promise((res) => setImmediate(res));
  assert.equal(cache.hit('k'), 'refused now');
  assert.equal(cache.size, 0, 'no admitted entry left');
});

test('a miss that joined a renewal the limiter had no slot for loads in the foreground: the refusal is not its answer', async () => {
  let now = 0;
  class NoSlot extends Error {}
  const cache = new TokenCache<string>({ now: () => now, renewAgain: (e) => e instanceof NoSlot });
  await cache.getOrLoad('k', async () => ({ value: 'v1', ttlMs: 1_000, renewInMs: 800 }));
  now = 999;
  assert.equal(cache.renewalDue('k'), true);
  let refuse!: (e: Error) => void;
  cache.renew('k', () => new Promise((_, reject) => { refuse = reject; }));
  now = 1_000; // expired in the same turn: the miss joins the renewal
  let foreground = 0;
  const joined = cache.getOrLoad('k', async () => { foreground++; return { value: 'v2', ttlMs: 1_000 }; });
  refuse(new NoSlot('no slot free now'));
  assert.equal(await joined, 'v2');
  assert.equal(foreground, 1);
  const other = cache.getOrLoad('x', () => Promise.reject(new Error('down')));
  await assert.rejects(other, /down/, 'any other failure is the answer');
});
