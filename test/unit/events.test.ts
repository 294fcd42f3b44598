// The Event recorder's de-duplication bound (pure logic, a stand-in client that records calls):
// past 10,000 remembered Events the oldest go, not all of them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AccessGateway } from '../../src/api/types.js';
import type { KubeClient } from '../../src/kube/client.js';
import { EventRecorder } from '../../src/kube/events.js';
import { silentLogger } from '../../src/observability/logger.js';

const gw = (ns: string, name: string) => ({ apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name, namespace: ns, uid: `${ns}-${name}` } }) as AccessGateway;

test('one namespace\'s 10,000 Events push out the oldest remembered, not another gateway\'s recent one', async () => {
  const calls: string[] = [];
  const r = new EventRecorder({ request: async (method: string, path: string) => { calls.push(`${method} ${path}`); return {}; } } as unknown as KubeClient, silentLogger);
  await r.record(gw('team-a', 'first'), 'Warning', 'TooManyGateways', 'over');
  for (let i = 0; i < 9_998; i++) await r.record(gw('team-a', `g${i}`), 'Warning', 'TooManyGateways', 'over');
  await r.record(gw('team-b', 'b'), 'Warning', 'NoReadyEndpoints', 'none ready');
  await r.record(gw('team-a', 'one-more'), 'Warning', 'TooManyGateways', 'over'); // 10,001st: the oldest tenth goes
  const posts = calls.length;
  assert.equal(posts, 10_001);
  await r.record(gw('team-b', 'b'), 'Warning', 'NoReadyEndpoints', 'none ready');
  assert.equal(calls.length, posts, 'team-b\'s Event was forgotten: created again instead of counted');
  await r.record(gw('team-a', 'first'), 'Warning', 'TooManyGateways', 'over');
  assert.equal(calls.length, posts + 1, 'the oldest was forgotten');
  // pruned to 90%: the next thousand records sweep nothing
  assert.equal((r as unknown as { sent: Map<string, unknown> }).sent.size, 9_001);
  assert.match(calls.at(-1)!, /^POST \/api\/v1\/namespaces\/team-a\/events$/);
});
