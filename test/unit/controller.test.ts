// The generic controller's contract (controller-runtime's reconcileHandler): each outcome of a
// reconcile becomes one queue action and one count, observed on a fake clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Controller, TerminalError, type Result } from '../../src/controller/controller.js';
import { silentLogger } from '../../src/observability/logger.js';
import { testMetrics } from '../../src/observability/metrics.js';
import { FakeClock } from '../support/fake-clock.js';

const settle = () => new Promise((r) => setImmediate(r));

async function counts(m: ReturnType<typeof testMetrics>): Promise<Record<string, number>> {
  const v = await m.reconciles.get();
  return Object.fromEntries(v.values.map((x) => [String(x.labels.result), x.value]));
}

test('success forgets, requeueAfter comes back after its delay, errors back off, terminal errors are not retried', async () => {
  const clock = new FakeClock();
  const metrics = testMetrics();
  const calls: string[] = [];
  const outcome: Record<string, () => Result> = {
    ok: () => ({}),
    later: () => ({ requeueAfterMs: 30_000 }),
    flaky: () => { throw new Error('apiserver away'); },
    bad: () => { throw new TerminalError('cannot ever work'); },
  };
  const c = new Controller({ name: 'test', log: silentLogger, metrics, clock, workers: 1,
    reconcile: async (key) => { calls.push(key); return outcome[key]!(); } });
  // every result series exists before the first reconcile
  assert.deepEqual(await counts(metrics), { success: 0, requeue: 0, terminal: 0, error: 0 });
  c.start();
  for (const k of ['ok', 'later', 'flaky', 'bad']) c.enqueue(k);
  await settle(); await settle();
  assert.deepEqual(calls, ['ok', 'later', 'flaky', 'bad']);
  assert.deepEqual(await counts(metrics), { success: 1, requeue: 1, terminal: 1, error: 1 });
  // the queue's timers: the error's back-off (5 ms), the requeue (30 s); nothing for ok or bad
  assert.deepEqual([...clock.delays].sort((a, b) => a - b), [5, 30_000]);
  clock.advance(5);
  await settle(); await settle();
  assert.deepEqual(calls.slice(4), ['flaky']);
  assert.equal(clock.delays.at(-1), 10); // the next back-off doubles
  clock.advance(30_000);
  await settle(); await settle();
  assert.ok(calls.slice(5).includes('later'));
  assert.ok(!calls.slice(4).includes('bad') && !calls.slice(4).includes('ok'));
  await c.stop();
});

test('a reconcile that finds its object gone drops the time the key was to be added again', async () => {
  const clock = new FakeClock();
  const calls: string[] = [];
  let exists = true;
  const c = new Controller({ name: 'test', log: silentLogger, metrics: testMetrics(), clock, workers: 1,
    reconcile: async (key) => { calls.push(key); return exists ? { requeueAfterMs: 3_600_000 } : { gone: true }; } });
  c.start();
  c.enqueue('team-a/gw');
  await settle(); await settle();
  assert.equal(clock.waiting, 1, 'an hour\'s timer (a far notAfter)');
  exists = false; // deleted: the watch adds the key at once
  c.enqueue('team-a/gw');
  await settle(); await settle();
  assert.equal(clock.waiting, 0, 'no timer, no entry left for an hour');
  clock.advance(3_600_000);
  await settle(); await settle();
  assert.deepEqual(calls, ['team-a/gw', 'team-a/gw']);
  await c.stop();
});
