// Leader election over a real Lease: one leader at a time, hand-over on release, take-over after
// a crashed leader's Lease expires, and stepping down when the apiserver is gone.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startControlPlane, type ControlPlane } from '../support/control-plane.js';
import { waitFor } from '../support/procs.js';
import { KubeClient, loadKubeConfig } from '../../src/kube/client.js';
import { LeaderElector } from '../../src/kube/leader.js';
import { silentLogger } from '../../src/observability/logger.js';

const ns = 'leader-test';
const timings = { leaseDurationMs: 3_000, renewDeadlineMs: 2_000, retryPeriodMs: 500 };
const microTime = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;

let cp: ControlPlane;
const clients: KubeClient[] = [];
const electors: LeaderElector[] = [];

before(async () => {
  cp = await startControlPlane();
  const r = await cp.api('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
  assert.equal(r.status, 201, JSON.stringify(r.body));
}, { timeout: 180_000 });

after(async () => {
  for (const e of electors) await e.abandon();
  for (const c of clients) await c.close();
  await cp?.stop();
});

interface Candidate { e: LeaderElector; id: string; started: number; stopped: number }

/** Two candidates for one Lease, each with its own connection (as two replicas would have). */
async function pair(lease: string): Promise<[Candidate, Candidate]> {
  const make = async (id: string): Promise<Candidate> => {
    const client = await KubeClient.create(loadKubeConfig(cp.kubeconfig), silentLogger);
    clients.push(client);
    const c = { id, started: 0, stopped: 0 } as Candidate;
    c.e = new LeaderElector(client, {
      namespace: ns, name: lease, identity: id, ...timings, log: silentLogger,
      onStartedLeading: () => { c.started++; }, onStoppedLeading: () => { c.stopped++; },
    });
    electors.push(c.e);
    return c;
  };
  const cs = [await make(`${lease}-a`), await make(`${lease}-b`)] as [Candidate, Candidate];
  for (const c of cs) c.e.start();
  return cs;
}

async function leaseSpec(name: string): Promise<any> {
  const r = await cp.api('GET', `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases/${name}`);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.spec;
}

/** Waits for exactly one leader and checks it stays the only one for a few renewals. */
async function soleLeader(cs: Candidate[], timeoutMs = 10_000): Promise<[Candidate, Candidate]> {
  await waitFor('a leader', async () => cs.some((c) => c.e.isLeader), timeoutMs, 50);
  for (let i = 0; i < 15; i++) {
    assert.equal(cs.filter((c) => c.e.isLeader).length, 1, 'exactly one leader');
    await new Promise((r) => setTimeout(r, 100));
  }
  const leader = cs.find((c) => c.e.isLeader)!;
  return [leader, cs.find((c) => c !== leader)!];
}

async function timeUntilLeads(c: Candidate, timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  await waitFor(`${c.id} to lead`, async () => c.e.isLeader, timeoutMs, 20);
  return Date.now() - t0;
}

test('two electors for one Lease: exactly one leads, and the Lease names it', async () => {
  const cs = await pair('one');
  const [leader, follower] = await soleLeader(cs);
  assert.equal(leader.started, 1);
  assert.equal(follower.started, 0);
  const spec = await leaseSpec('one');
  assert.equal(spec.holderIdentity, leader.id);
  assert.equal(spec.leaseDurationSeconds, 3);
  assert.equal(spec.leaseTransitions, 0);
  assert.match(spec.renewTime, microTime);
  assert.match(spec.acquireTime, microTime);
  // renewed every retryPeriod, keeping acquireTime
  const later = await waitFor('a renewal', async () => { const l = await leaseSpec('one'); return l.renewTime !== spec.renewTime ? l : undefined; }, 5_000, 100);
  assert.equal(later.acquireTime, spec.acquireTime);
  assert.equal(later.holderIdentity, leader.id);
});

test('stopping the leader releases the Lease and the follower takes over at once', async (t) => {
  const cs = await pair('release');
  const [leader, follower] = await soleLeader(cs);
  await leader.e.stop();
  assert.equal(leader.e.isLeader, false);
  assert.equal(leader.stopped, 1);
  const waited = await timeUntilLeads(follower, 5_000);
  t.diagnostic(`follower led ${waited} ms after the release`);
  assert.ok(waited < 2_000, `follower took over after ${waited} ms`);
  const spec = await leaseSpec('release');
  assert.equal(spec.holderIdentity, follower.id);
  assert.equal(spec.leaseDurationSeconds, 3);
  assert.equal(spec.leaseTransitions, 1);
  assert.equal(follower.started, 1);
});

test('a released Lease has no holder and a 1 s duration', async () => {
  const client = await KubeClient.create(loadKubeConfig(cp.kubeconfig), silentLogger);
  clients.push(client);
  const e = new LeaderElector(client, { namespace: ns, name: 'alone', identity: 'alone', ...timings, log: silentLogger });
  electors.push(e);
  e.start();
  await waitFor('alone to lead', async () => e.isLeader, 10_000, 20);
  await e.stop();
  const spec = await leaseSpec('alone');
  assert.equal(spec.holderIdentity ?? '', '');
  assert.equal(spec.leaseDurationSeconds, 1);
  assert.match(spec.renewTime, microTime);
});

test('a leader that dies without releasing is replaced once its Lease expires', async (t) => {
  const cs = await pair('crash');
  const [leader, follower] = await soleLeader(cs);
  await leader.e.abandon();
  assert.equal(leader.stopped, 0, 'a crash runs no callbacks');
  const waited = await timeUntilLeads(follower, 15_000);
  t.diagnostic(`follower led ${waited} ms after the leader died`);
  const { leaseDurationMs: lease, retryPeriodMs: retry } = timings;
  assert.ok(waited >= lease - 2 * retry, `follower took over after only ${waited} ms, before the Lease expired`);
  assert.ok(waited <= lease + 2 * retry + 1_500, `follower took over after ${waited} ms`);
  const spec = await leaseSpec('crash');
  assert.equal(spec.holderIdentity, follower.id);
  assert.equal(spec.leaseTransitions, 1);
});

test('the leader steps down when it cannot renew for renewDeadline, and leadership resumes after', { timeout: 120_000 }, async (t) => {
  const cs = await pair('outage');
  const [leader] = await soleLeader(cs);
  const t0 = Date.now();
  const stopping = cp.stopApiserver();
  await waitFor('the leader to step down', async () => !leader.e.isLeader, 15_000, 20);
  const waited = Date.now() - t0;
  t.diagnostic(`leader stepped down ${waited} ms after the apiserver was told to stop`);
  const { renewDeadlineMs: deadline, retryPeriodMs: retry } = timings;
  assert.ok(waited <= deadline + retry + 1_500, `stepped down after ${waited} ms`);
  assert.equal(leader.stopped, 1);
  await stopping;
  assert.ok(cs.every((c) => !c.e.isLeader), 'no leader without an apiserver');
  await cp.startApiserver();
  const [again] = await soleLeader(cs, 20_000);
  assert.equal((await leaseSpec('outage')).holderIdentity, again.id);
});
