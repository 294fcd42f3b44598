import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TokenCache } from '../../src/auth/token-cache.js';

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
