// The Event recorder's de-duplication bound (pure logic, a stand-in client that records calls and
// a fake clock): past 10,000 remembered Events the expired and then the oldest go, not all of them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AccessGateway } from '../../src/api/types.js';
import type { KubeClient } from '../../src/kube/client.js';
import { EventRecorder, eventMessage } from '../../src/kube/events.js';
import { silentLogger } from '../../src/observability/logger.js';
import { FakeClock } from '../support/fake-clock.js';

const gw = (ns: string, name: string) => ({ apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name, namespace: ns, uid: `${ns}-${name}` } }) as AccessGateway;

function recorder() {
  const calls: string[] = [];
  const clock = new FakeClock();
  const r = new EventRecorder({ request: async (method: string, path: string) => { calls.push(`${method} ${path}`); return {}; } } as unknown as KubeClient,
    silentLogger, 'access-gateway', clock);
  const flood = async (from: number, n: number) => { for (let i = from; i < from + n; i++) await r.record(gw('team-a', `g${i}`), 'Warning', 'TooManyGateways', 'over'); };
  const b = () => r.record(gw('team-b', 'b'), 'Warning', 'NoReadyEndpoints', 'none ready');
  return { r, calls, clock, flood, b };
}

test('one namespace\'s flood of Events pushes out the oldest remembered, not another gateway\'s recent one', async () => {
  const { r, calls, flood, b } = recorder();
  await flood(0, 9_999);
  await b();
  await flood(9_999, 2); // 10,001 distinct: the oldest tenth goes, b (recent) stays
  const posts = calls.length;
  assert.equal(posts, 10_002);
  await b();
  assert.equal(calls.length, posts, 'team-b\'s Event was forgotten: created again instead of counted');
  await flood(0, 1);
  assert.equal(calls.length, posts + 1, 'the oldest was forgotten');
  assert.match(calls.at(-1)!, /^POST \/api\/v1\/namespaces\/team-a\/events$/);
  assert.equal((r as unknown as { sent: Map<string, unknown> }).sent.size, 9_002, 'pruned to 90%: the next thousand records sweep nothing');
});

test('an Event created again after its 10 minutes counts as the newest: a flood pushes out the older ones first', async () => {
  const { calls, clock, flood, b } = recorder();
  await b();
  clock.advance(9 * 60_000);
  await flood(0, 9_000);
  clock.advance(2 * 60_000);
  await b(); // b's 10 minutes are over: created again
  assert.equal(calls.length, 9_002);
  await flood(9_000, 1_000); // reaches the bound: nothing has expired (9,000 are 2 minutes old)
  await b();
  assert.equal(calls.length, 10_002, 'b was counted as the oldest and forgotten');
});

test('an Event\'s message is at most 1 KiB of UTF-8, cut between whole characters', () => {
  assert.equal(eventMessage('listening on port 8080'), 'listening on port 8080');
  for (const [what, long] of [['ASCII', 'a'.repeat(40_000)], ['CJK (3 bytes each)', '漢'.repeat(12_000)], ['emoji (surrogate pairs)', 'x😀'.repeat(8_000)]] as const) {
    const m = eventMessage(long);
    assert.ok(Buffer.byteLength(m) <= 1024 && Buffer.byteLength(m) > 1000, `${what}: ${Buffer.byteLength(m)} bytes`);
    assert.ok(m.endsWith('…') && long.startsWith(m.slice(0, -1)), `${what}: a prefix of the message, marked as cut`);
    assert.doesNotMatch(m, /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|\uFFFD/, `${what}: no character cut in half`);
  }
  const exact = 'é'.repeat(512); // 1,024 bytes: kept whole
  assert.equal(eventMessage(exact), exact);
});

test('a team\'s long condition messages are sent cut to 1 KiB and remembered by a digest, not whole', async () => {
  const bodies: Array<{ message?: string }> = [];
  const r = new EventRecorder({ request: async (_m: string, _p: string, o: { body?: { message?: string } }) => { bodies.push(o.body ?? {}); return {}; } } as unknown as KubeClient,
    silentLogger, 'access-gateway', new FakeClock());
  for (let i = 0; i < 100; i++) await r.record(gw('team-a', 'a'), 'Warning', 'BackendNotFound', `${i} ${'漢'.repeat(24_000)}`);
  assert.equal(bodies.length, 100, 'each message is another Event');
  for (const b of bodies) assert.ok(Buffer.byteLength(b.message!) <= 1024, `sent ${Buffer.byteLength(b.message!)} bytes`);
  const kept = [...(r as unknown as { sent: Map<string, unknown> }).sent.keys()];
  assert.equal(kept.length, 100);
  for (const k of kept) assert.ok(k.length <= 64, `a remembered key of ${k.length} characters`);
  // the same (cut) message again is counted, not created
  await r.record(gw('team-a', 'a'), 'Warning', 'BackendNotFound', `0 ${'漢'.repeat(24_000)}`);
  assert.equal(bodies.length, 100);
});
