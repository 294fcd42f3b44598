import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WorkQueue } from '../../src/controller/queue.js';
import { PortAllocator } from '../../src/controller/ports.js';

test('de-duplicates, and never hands out a key that is being processed', async () => {
  const q = new WorkQueue();
  q.add('a'); q.add('a'); q.add('b');
  assert.equal(q.depth, 2);
  const k = await q.get();
  assert.equal(k, 'a');
  q.add('a'); // while processing: remembered, not queued
  assert.equal(q.depth, 1);
  assert.equal(await q.get(), 'b');
  q.done('a'); // re-queued now
  assert.equal(q.depth, 1);
  assert.equal(await q.get(), 'a');
  q.done('a'); q.done('b');
  assert.equal(q.depth, 0);
  q.shutdown();
  assert.equal(await q.get(), undefined);
});

test('per-key exponential backoff', () => {
  const q = new WorkQueue({ baseDelayMs: 5, maxDelayMs: 1000 });
  for (let i = 0; i < 12; i++) q.addRateLimited('k');
  assert.equal(q.numRequeues('k'), 12);
  q.forget('k');
  assert.equal(q.numRequeues('k'), 0);
  q.shutdown();
});

test('ports: requested, allocated and kept, conflicts resolved by age', () => {
  const p = new PortAllocator([100, 102]);
  assert.deepEqual(p.claim({ key: 'a', rank: '2' }), { port: 100 });
  assert.deepEqual(p.claim({ key: 'a', rank: '2' }), { port: 100 });
  assert.deepEqual(p.claim({ key: 'b', rank: '3', previous: 102 }), { port: 102 });
  assert.deepEqual(p.claim({ key: 'c', rank: '4', requested: 8080 }), { port: 8080 });
  assert.ok('conflict' in p.claim({ key: 'd', rank: '5', requested: 8080 }));
  // an older gateway asking for the same port takes it; the younger one is evicted
  assert.deepEqual(p.claim({ key: 'e', rank: '1', requested: 8080 }), { port: 8080, evicted: 'c' });
  assert.deepEqual(p.claim({ key: 'f', rank: '6' }), { port: 101 });
  assert.ok('conflict' in p.claim({ key: 'g', rank: '7' }));
  p.release('a');
  p.block(100);
  assert.ok('conflict' in p.claim({ key: 'g', rank: '7' }));
});
