// The SubjectAccessReviews' limiter: a background check (a cached decision's renewal) never queues.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KubeAccessReviewer } from '../../src/kube/access-review.js';
import { FairLimiter } from '../../src/auth/review-limiter.js';
import { createMetrics } from '../../src/observability/metrics.js';
import type { KubeClient } from '../../src/kube/client.js';

test('a background impersonation check is refused at once when the limiter has no slot free; a request\'s waits in the queue', async () => {
  const limiter = new FairLimiter({ maxInFlight: 1 });
  let release!: () => void;
  const busy = limiter.run('team-a', () => new Promise<void>((res) => { release = res; }));
  const client = {} as KubeClient; // (never reached: nothing is sent while the limiter is full)
  const r = new KubeAccessReviewer(client, limiter, createMetrics());
  const as = { verb: 'impersonate' as const, group: '', resource: 'users', name: 'alice' };
  const caller = { username: 'system:serviceaccount:team-a:lead', uid: 'u', groups: [], extra: {} };
  await assert.rejects(r.review(caller, as, 'team-a', true), /not made in the background/);
  const queued = r.review(caller, as, 'team-a').catch((e: Error) => e);
  assert.equal(limiter.waiting('team-a'), 1);
  release();
  await busy;
  assert.ok(await queued instanceof Error, 'sent, and failed on the empty client');
});
