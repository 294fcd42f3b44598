import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PoolRegistry, ServiceBackend, type EndpointPool } from '../../src/dataplane/endpoints.js';
import { RateLimiter } from '../../src/auth/rate-limit.js';
import type { ServiceTarget } from '../../src/translate/plan.js';

const target = (n: number): ServiceTarget => ({
  kind: 'service', namespace: 'a', name: 's', port: 80, scheme: 'http', ca: null, serverName: 's.a.svc', problem: null,
  endpoints: Array.from({ length: n }, (_, i) => ({ ip: `198.18.0.${10 + i}`, port: 80 })),
});

function backend(reg: PoolRegistry, n: number): ServiceBackend {
  const t = target(n);
  return new ServiceBackend(t, t.endpoints.map((e) => reg.acquire(t, e)));
}

test('sequential picks spread evenly (ties go to the endpoint that served less)', () => {
  const b = backend(new PoolRegistry(), 3);
  const counts = new Map<EndpointPool, number>();
  for (let i = 0; i < 3000; i++) {
    const p = b.pick(new Set())!;
    p.served++;
    counts.set(p, (counts.get(p) ?? 0) + 1);
  }
  for (const c of counts.values()) assert.ok(Math.abs(c - 1000) <= 150, `${[...counts.values()]}`);
});

test('busy endpoints get less; ejected ones none unless all are ejected; tried ones are skipped', () => {
  const b = backend(new PoolRegistry(), 2);
  const [x, y] = b.pools as [EndpointPool, EndpointPool];
  x.outstanding = 5;
  for (let i = 0; i < 50; i++) assert.equal(b.pick(new Set()), y);
  x.outstanding = 0;
  y.eject();
  for (let i = 0; i < 50; i++) assert.equal(b.pick(new Set()), x);
  x.eject();
  assert.ok(b.pick(new Set())); // panic: all ejected, still try
  assert.equal(b.pick(new Set([x])), y);
  assert.equal(b.pick(new Set([x, y])), undefined);
});

test('pools are shared, reference-counted and closed when unused', () => {
  const reg = new PoolRegistry();
  const a = backend(reg, 2);
  const b = backend(reg, 3);
  assert.equal(reg.size, 3);
  assert.equal(a.pools[0], b.pools[0]);
  for (const p of b.pools) reg.release(p);
  assert.equal(reg.size, 2);
  assert.ok(b.pools[2]!.retired);
  assert.ok(!a.pools[0]!.retired);
});

test('rate limiter: burst, refill, per caller, bounded', () => {
  let now = 0;
  const rl = new RateLimiter(2, 3, 100, () => now);
  assert.deepEqual([rl.take('a'), rl.take('a'), rl.take('a')], [0, 0, 0]);
  assert.ok(rl.take('a') > 0);
  assert.equal(rl.take('b'), 0); // another caller is unaffected
  now += 500; // one token back at 2/s
  assert.equal(rl.take('a'), 0);
  assert.ok(rl.take('a') > 0);
  for (let i = 0; i < 1000; i++) rl.take(`caller-${i}`);
  assert.equal(rl.callers, 100);
});
