// The TokenReview client's failure log (pure logic: a fake apiserver client, a fake clock).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import pino from 'pino';
import { failureLogIntervalMs, KubeTokenReviewer } from '../../src/kube/token-review.js';
import { ApiError, type KubeClient } from '../../src/kube/client.js';
import { testMetrics } from '../../src/observability/metrics.js';

test('a failed TokenReview is logged, once per interval with a count of those left out, never with the token', async () => {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, new Writable({ write(chunk, _e, cb) { lines.push(JSON.parse(String(chunk))); cb(); } }));
  let now = 1_000;
  let fail = true;
  const client = {
    request: async () => {
      if (fail) throw new ApiError(503, { reason: 'ServiceUnavailable', message: 'etcd leader changed' }, 'TokenReview');
      return { status: { authenticated: false } };
    },
  } as unknown as KubeClient;
  const metrics = testMetrics();
  const r = new KubeTokenReviewer(client, metrics, 5_000, log, () => now);
  const token = 'eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2Vu.c2lnbmF0dXJl';
  const attempt = () => r.review(token, ['gw']).then(() => assert.fail('resolved'), (e) => assert.ok(e instanceof ApiError));

  await attempt();
  assert.equal(lines.length, 1, 'the first failure is logged at once');
  assert.equal(lines[0]!.level, 40);
  assert.match(String(lines[0]!.err), /TokenReview: HTTP 503: etcd leader changed/);
  assert.equal(lines[0]!.notLogged, 0);

  for (let i = 0; i < 3; i++) { now += 1_000; await attempt(); }
  fail = false;
  await r.review(token, ['gw']); // an answer is not a failure
  fail = true;
  assert.equal(lines.length, 1, 'failures within the interval are counted, not logged');

  now += failureLogIntervalMs;
  await attempt();
  assert.equal(lines.length, 2);
  assert.equal(lines[1]!.notLogged, 3);
  for (const l of lines) assert.ok(!JSON.stringify(l).includes('c2VjcmV0LXRva2Vu'));
  assert.match(await metrics.registry.metrics(), /token_reviews_total\{result="error"\} 5/);
});
