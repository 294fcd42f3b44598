// The AccessGateway reconciler's steps with fakes around it (pure logic: the integration tests
// run it against a real apiserver): status written once, terminal refusals, deletion, the limit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AccessGateway, AccessGatewayStatus } from '../../src/api/types.js';
import { TerminalError } from '../../src/controller/controller.js';
import { GatewayReconciler, recordOf, type GatewayReconcilerDeps } from '../../src/controller/gateway-reconciler.js';
import { NamespaceLimit, rankOf } from '../../src/controller/namespace-limit.js';
import { PortAllocator } from '../../src/controller/ports.js';
import type { GatewayPlan } from '../../src/translate/plan.js';
import { silentLogger } from '../../src/observability/logger.js';
import { FakeClock } from '../support/fake-clock.js';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';

const gw = (name: string, created: string, extra: Partial<AccessGateway> = {}): AccessGateway => ({
  apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway',
  metadata: { name, namespace: 'team-a', generation: 1, uid: `uid-${name}`, creationTimestamp: created, resourceVersion: '1' },
  spec: { authentication: { audiences: ['gw'] }, routes: [{ name: 'r', pathPrefix: '/', apiserver: {} }] }, ...extra,
});

function setup(gateways: AccessGateway[], over: Partial<GatewayReconcilerDeps> = {}) {
  const store = new Map(gateways.map((g) => [`${g.metadata.namespace}/${g.metadata.name}`, g]));
  const applied: [string, GatewayPlan | null][] = [];
  const written: [string, AccessGatewayStatus][] = [];
  const requeued: string[] = [];
  const ports = over.ports ?? new PortAllocator([100, 109]);
  const r = new GatewayReconciler({
    gateways: { get: (ns, n) => store.get(`${ns}/${n}`), values: () => store.values(), keys: () => [...store.keys()] },
    cluster: { snapshotFor: () => ({}), exposureState: () => ({ service: false, slice: false, foreign: null }) },
    dataplane: { apply: async (key, plan) => { applied.push([key, plan]); return plan ? { programmed: true, port: plan.port } : null; } },
    ports,
    writeStatus: async (g, s) => { written.push([g.metadata.name, s]); g.status = s; },
    advertiseHost: '127.0.0.1', requeue: (k) => requeued.push(k),
    ...over,
  });
  return { r, store, applied, written, requeued, ports };
}

test('a port another namespace gave up is PortConflict until its hold ends, and the gateway is tried again then', async () => {
  const clock = new FakeClock(1_000_000);
  const ports = new PortAllocator([100, 109], () => clock.now(), 300_000);
  const b = gw('b', '2026-01-01T00:00:00Z', { spec: { listener: { port: 8080 }, authentication: { audiences: ['gw'] }, routes: [{ name: 'r', pathPrefix: '/', apiserver: {} }] } });
  b.metadata.namespace = 'team-b';
  const squat = gw('squat', '2026-01-01T00:00:01Z', { spec: { listener: { port: 8080 }, authentication: { audiences: ['gw'] }, routes: [{ name: 'r', pathPrefix: '/', apiserver: {} }] } });
  const { r, store, written } = setup([b, squat], { ports, clock });
  await r.reconcile('team-b/b', silentLogger);
  store.delete('team-b/b');
  await r.reconcile('team-b/b', silentLogger);
  clock.advance(1_000);
  assert.deepEqual(await r.reconcile('team-a/squat', silentLogger), { requeueAfterMs: 299_000 });
  const accepted = written.at(-1)![1].conditions!.find((c) => c.type === 'Accepted')!;
  assert.equal(accepted.reason, 'PortConflict');
  assert.match(accepted.message, /given up by a gateway of another namespace/);
  clock.advance(299_000);
  assert.deepEqual(await r.reconcile('team-a/squat', silentLogger), {});
  assert.equal(ports.portOf('team-a/squat'), 8080);
});

test('programs the plan and writes the status once; an unchanged status is not written again', async () => {
  const { r, applied, written } = setup([gw('a', '2026-01-01T00:00:00Z')]);
  assert.deepEqual(await r.reconcile('team-a/a', silentLogger), {});
  assert.equal(applied.length, 1);
  assert.equal(applied[0]![1]!.port, 100);
  assert.equal(written.length, 1);
  const ready = written[0]![1].conditions!.find((c) => c.type === 'Ready')!;
  assert.equal(ready.status, 'True');
  assert.equal(written[0]![1].listener?.url, 'http://127.0.0.1:100');
  await r.reconcile('team-a/a', silentLogger);
  assert.equal(written.length, 1, 'the same status was written twice');
});

test('a follower serves on the port the leader recorded, and writes no status; before one is recorded it serves nothing', async () => {
  const a = gw('a', '2026-01-01T00:00:00Z');
  const { r, applied, written } = setup([a], { isLeader: () => false });
  await r.reconcile('team-a/a', silentLogger);
  assert.deepEqual(applied, [['team-a/a', null]]);
  a.status = { listener: { port: 104 } };
  await r.reconcile('team-a/a', silentLogger);
  assert.equal(applied.at(-1)![1]!.port, 104, 'the leader\'s port, not the first free one here (100)');
  assert.equal(written.length, 0);
});

test('a follower that saw two gateways in the other order than the leader serves each on the leader\'s port: a swap here is undone', async () => {
  // here: a took 100 and b 101 (say the leader saw b first and recorded b=100, a=101)
  const a = gw('a', '2026-01-01T00:00:00Z', { status: { listener: { port: 100 } } });
  const b = gw('b', '2026-01-01T00:00:01Z', { status: { listener: { port: 101 } } });
  const { r, applied, requeued, ports } = setup([a, b], { isLeader: () => false });
  await r.reconcile('team-a/a', silentLogger);
  await r.reconcile('team-a/b', silentLogger);
  assert.deepEqual([ports.portOf('team-a/a'), ports.portOf('team-a/b')], [100, 101]);
  // the leader's record says otherwise
  a.status = { listener: { port: 101 } };
  b.status = { listener: { port: 100 } };
  await r.reconcile('team-a/a', silentLogger);
  // a gave up 100 at once, and waits for 101, which b still holds here: b is tried
  assert.equal(ports.portOf('team-a/a'), undefined);
  assert.deepEqual(applied.at(-1), ['team-a/a', null]);
  assert.ok(requeued.includes('team-a/b'));
  await r.reconcile('team-a/b', silentLogger);
  assert.equal(ports.portOf('team-a/b'), 100);
  assert.ok(requeued.filter((k) => k === 'team-a/a').length >= 1, 'a, waiting for the port b gave up, is tried again');
  await r.reconcile('team-a/a', silentLogger);
  assert.deepEqual([ports.portOf('team-a/a'), ports.portOf('team-a/b')], [101, 100]);
  assert.equal(applied.at(-1)![1]!.port, 101);
});

test('a gateway whose status could not record its move does not get its old port back from the gateway given it since: on a replica started again, and on a follower', async () => {
  // the red team's case: team a keeps its status from being written (a full quota, a spec at
  // etcd's size bound) once it has recorded 100, moves off it, and team b is given 100
  const clock = new FakeClock(Date.parse('2026-01-01T00:00:00Z'));
  const ports = new PortAllocator([100, 109], () => clock.now(), 300_000);
  const a = gw('a', '2026-01-01T00:00:00Z');
  const b = gw('b', '2026-01-01T00:00:01Z');
  b.metadata = { ...b.metadata, namespace: 'team-b' };
  const frozen = new Set<string>();
  const written: [string, AccessGatewayStatus][] = [];
  const { r } = setup([a, b], {
    ports, clock,
    writeStatus: async (g, s) => {
      if (frozen.has(g.metadata.name)) throw Object.assign(new Error('exceeded quota'), { status: 403 });
      written.push([g.metadata.name, s]);
      g.status = s;
    },
  });
  await r.reconcile('team-a/a', silentLogger);
  assert.deepEqual(a.status?.listener, { port: 100, since: '2026-01-01T00:00:00.000Z', url: 'http://127.0.0.1:100' });
  clock.advance(1_000);
  a.metadata.generation = 2; // a change that keeps the port keeps when it was given
  await r.reconcile('team-a/a', silentLogger);
  assert.equal(written.length, 2);
  assert.equal(a.status?.listener?.since, '2026-01-01T00:00:00.000Z');
  frozen.add('a');
  a.spec = { ...a.spec, listener: { port: 8080 } };
  await assert.rejects(r.reconcile('team-a/a', silentLogger));
  clock.advance(300_001); // a's hold on 100 ends
  await r.reconcile('team-b/b', silentLogger);
  assert.deepEqual(b.status?.listener, { port: 100, since: '2026-01-01T00:05:01.001Z', url: 'http://127.0.0.1:100' });
  a.spec = { ...a.spec, listener: {} };
  await assert.rejects(r.reconcile('team-a/a', silentLogger));
  assert.deepEqual([ports.portOf('team-a/a'), ports.portOf('team-b/b')], [101, 100], 'the leader');
  assert.equal(a.status?.listener?.port, 100, 'a\'s status still records 100');

  // a replica started again seeds from status (as GatewayController.start does): b, given 100 last, has it
  const fresh = new PortAllocator([100, 109]);
  fresh.seed([a, b].map(recordOf));
  assert.deepEqual([fresh.portOf('team-a/a'), fresh.portOf('team-b/b')], [undefined, 100], 'seeded');
  const follower = setup([a, b], { ports: fresh, isLeader: () => false });
  await follower.r.reconcile('team-a/a', silentLogger);
  await follower.r.reconcile('team-b/b', silentLogger);
  assert.deepEqual([fresh.portOf('team-a/a'), fresh.portOf('team-b/b')], [undefined, 100], 'the replica started again');
  assert.deepEqual(follower.applied.at(-1)![0], 'team-b/b');
  assert.equal(follower.applied.at(-1)![1]!.port, 100);

  // a follower that served a on 100 (its record) before b's was written: b takes it, a waits
  const seen = new PortAllocator([100, 109]);
  const was = b.status;
  b.status = undefined;
  const f = setup([a, b], { ports: seen, isLeader: () => false });
  await f.r.reconcile('team-a/a', silentLogger);
  assert.equal(seen.portOf('team-a/a'), 100);
  b.status = was;
  await f.r.reconcile('team-b/b', silentLogger);
  assert.equal(seen.portOf('team-b/b'), 100, 'b, given 100 after a was, takes it here');
  assert.deepEqual(f.applied.slice(-2).map(([k, plan]) => [k, plan?.port ?? null]), [['team-a/a', null], ['team-b/b', 100]], 'a\'s listener closed first, not at its own reconcile');
  assert.ok(f.requeued.includes('team-a/a'));
  await f.r.reconcile('team-a/a', silentLogger);
  assert.equal(seen.portOf('team-a/a'), undefined);
  assert.deepEqual(f.applied.at(-1), ['team-a/a', null]);
});

test('a follower gives no time to a record of before there were times (only the leader, which holds the port, does): a later record takes the port', async () => {
  const a = gw('a', '2026-01-01T00:00:00Z', { status: { listener: { port: 100 } } });
  const b = gw('b', '2026-01-01T00:00:01Z');
  b.metadata = { ...b.metadata, namespace: 'team-b' };
  const { r, ports } = setup([a, b], { isLeader: () => false });
  await r.reconcile('team-a/a', silentLogger);
  assert.equal(ports.portOf('team-a/a'), 100);
  b.status = { listener: { port: 100, since: '2026-01-01T00:06:00.000Z' } };
  await r.reconcile('team-b/b', silentLogger);
  assert.equal(ports.portOf('team-b/b'), 100);
});

test('a follower whose gateway is being programmed when a later record takes its port closes it again once it listens', async () => {
  const a = gw('a', '2026-01-01T00:00:00Z', { status: { listener: { port: 100, since: '2026-01-01T00:00:00.000Z' } } });
  const b = gw('b', '2026-01-01T00:00:01Z');
  b.metadata = { ...b.metadata, namespace: 'team-b' };
  let open!: () => void;
  const listening = new Promise<void>((resolve) => { open = resolve; });
  let programming = false;
  const applied: [string, number | null][] = [];
  const ports = new PortAllocator([100, 109]);
  const { r } = setup([a, b], {
    ports, isLeader: () => false,
    dataplane: { apply: async (key, plan) => {
      if (key === 'team-a/a' && plan) { programming = true; await listening; } // (its route table's steps take their turns)
      applied.push([key, plan?.port ?? null]);
      return plan ? { programmed: true, port: plan.port } : null;
    } },
  });
  const reconciled = r.reconcile('team-a/a', silentLogger);
  for (let i = 0; i < 100 && !programming; i++) await new Promise((resolve) => setImmediate(resolve));
  assert.equal(ports.portOf('team-a/a'), 100);
  b.status = { listener: { port: 100, since: '2026-01-01T00:06:00.000Z' } };
  await r.reconcile('team-b/b', silentLogger);
  open();
  assert.deepEqual(await reconciled, { requeueAfterMs: 1_000 });
  assert.deepEqual(applied, [['team-a/a', null], ['team-b/b', 100], ['team-a/a', 100], ['team-a/a', null]]);
});

test('a follower does not serve a gateway on its recorded port once its spec asks for another: the leader may have given that port to another team already', async () => {
  // the leader moved a to 105 and gave 100 to team-b's b, but could not record a's move
  const a = gw('a', '2026-01-01T00:00:00Z', { status: { listener: { port: 100 } } });
  const b = { ...gw('b', '2026-01-01T00:00:01Z', { status: { listener: { port: 100 } } }) };
  b.metadata = { ...b.metadata, namespace: 'team-b' };
  const { r, applied, requeued, ports } = setup([a, b], { isLeader: () => false });
  await r.reconcile('team-a/a', silentLogger);
  await r.reconcile('team-b/b', silentLogger);
  assert.equal(ports.portOf('team-a/a'), 100);
  assert.equal(ports.portOf('team-b/b'), undefined, 'b waits for 100 while a holds it here');
  a.spec = { ...a.spec, listener: { port: 105 } };
  await r.reconcile('team-a/a', silentLogger);
  assert.equal(ports.portOf('team-a/a'), undefined, 'a, moving, still served on the port the leader gave up');
  assert.deepEqual(applied.at(-1), ['team-a/a', null]);
  assert.ok(requeued.includes('team-b/b'));
  await r.reconcile('team-b/b', silentLogger);
  assert.equal(ports.portOf('team-b/b'), 100);
  assert.equal(applied.at(-1)![1]!.port, 100);
  // the leader records the move: a is served on its new port
  a.status = { listener: { port: 105 } };
  await r.reconcile('team-a/a', silentLogger);
  assert.equal(ports.portOf('team-a/a'), 105);  // asked for a port outside the range (recorded), then for none: the leader moves it into the
  // range and may give the old one away; not served on it here meanwhile
  a.spec = { ...a.spec, listener: { port: 8080 } };
  a.status = { listener: { port: 8080 } };
  await r.reconcile('team-a/a', silentLogger);
  assert.equal(ports.portOf('team-a/a'), 8080);
  a.spec = { ...a.spec, listener: {} };
  await r.reconcile('team-a/a', silentLogger);
  assert.equal(ports.portOf('team-a/a'), undefined, 'a, leaving an out-of-range port, still served on it');
});

test('condition messages are cut to the CRD\'s 32768 characters: a longer one would have the whole status refused', async () => {
  const long = 'x'.repeat(250);
  const routes = Array.from({ length: 64 }, (_, i) => ({
    name: `r${i}`, pathPrefix: `/r${i}`, service: { name: `s${i}`, port: 80, scheme: 'https' as const, caRef: { kind: 'ConfigMap' as const, name: `${long}${i}`, key: long } },
  }));
  const services = Object.fromEntries(routes.map((r) => [`team-a/${r.service.name}`, { metadata: { name: r.service.name, namespace: 'team-a' }, spec: { ports: [{ port: 80 }] } }]));
  const a = gw('a', '2026-01-01T00:00:00Z');
  a.spec = { ...a.spec, routes };
  const { r, written } = setup([a], { cluster: { snapshotFor: () => ({ services }), exposureState: () => ({ service: false, slice: false, foreign: null }) } });
  await r.reconcile('team-a/a', silentLogger);
  const refs = written[0]![1].conditions!.find((c) => c.type === 'ResolvedRefs')!;
  assert.equal(refs.status, 'False');
  assert.ok(refs.message.length <= 32_768, `message of ${refs.message.length} characters`);
  assert.match(refs.message, /^route r0: .* characters, cut\)$/);
  assert.ok(written[0]![1].conditions!.every((c) => c.message.length <= 32_768));
});

test('a status the apiserver refuses as invalid (422) is a terminal error; other failures are retried', async () => {
  const invalid = Object.assign(new Error('status.conditions: Invalid value'), { status: 422 });
  const { r } = setup([gw('a', '2026-01-01T00:00:00Z')], { writeStatus: async () => { throw invalid; } });
  await assert.rejects(r.reconcile('team-a/a', silentLogger), (e: unknown) => e instanceof TerminalError && e.cause === invalid);
  const away = Object.assign(new Error('connection refused'), { status: 0 });
  const { r: r2 } = setup([gw('b', '2026-01-01T00:00:00Z')], { writeStatus: async () => { throw away; } });
  await assert.rejects(r2.reconcile('team-a/b', silentLogger), (e: unknown) => e === away);
});

test('a deleted gateway: listener closed first, port freed, the gateways waiting for it tried again', async () => {
  const { r, store, applied, requeued, ports } = setup([gw('a', '2026-01-01T00:00:00Z', { spec: { ...gw('a', '').spec, listener: { port: 8080 } } }),
    gw('b', '2026-01-02T00:00:00Z', { spec: { ...gw('b', '').spec, listener: { port: 8080 } } })]);
  await r.reconcile('team-a/a', silentLogger);
  await r.reconcile('team-a/b', silentLogger);
  assert.equal(ports.portOf('team-a/b'), undefined); // a holds 8080
  store.delete('team-a/a');
  assert.deepEqual(await r.reconcile('team-a/a', silentLogger), { gone: true }, 'the queue drops a time it was to come back');
  assert.deepEqual(applied.at(-1), ['team-a/a', null]);
  assert.equal(ports.portOf('team-a/a'), undefined);
  assert.ok(requeued.includes('team-a/b'));
});

test('a deleted gateway that held no port does not requeue those waiting for one; one that held a port does', async () => {
  const on8080 = (name: string, created: string) => gw(name, created, { spec: { ...gw(name, '').spec, listener: { port: 8080 } } });
  const { r, store, requeued, ports } = setup([on8080('a', '2026-01-01T00:00:00Z'), on8080('b', '2026-01-02T00:00:00Z'), on8080('c', '2026-01-03T00:00:00Z')]);
  for (const n of ['a', 'b', 'c']) await r.reconcile(`team-a/${n}`, silentLogger);
  assert.deepEqual([ports.portOf('team-a/b'), ports.portOf('team-a/c')], [undefined, undefined]);
  requeued.length = 0;
  store.delete('team-a/c');
  await r.reconcile('team-a/c', silentLogger);
  assert.deepEqual(requeued, [], 'c held no port: b was requeued for nothing');
  store.delete('team-a/a');
  await r.reconcile('team-a/a', silentLogger);
  assert.deepEqual(requeued, ['team-a/b']);
});

test('tenancy: a port given up wakes only those waiting for it (or for the range, if in it); another namespace\'s waiting for the range when its hold ends', async () => {
  const clock = new FakeClock(1_000_000);
  const ports = new PortAllocator([100, 100], () => clock.now(), 300_000, 16, [1, 9000]);
  const requeued: [string, number | undefined][] = [];
  const on = (ns: string, name: string, created: string, port?: number) => {
    const g = gw(name, created, { spec: { ...gw(name, '').spec, ...(port ? { listener: { port } } : {}) } });
    g.metadata.namespace = ns;
    return g;
  };
  const { r, store } = setup([
    on('team-b', 'b8080', '2026-01-01T00:00:00Z', 8080), on('team-b', 'b8081', '2026-01-01T00:00:01Z', 8081),
    on('team-b', 'brange', '2026-01-01T00:00:02Z'), on('team-b', 'brefused', '2026-01-01T00:00:03Z', 9999),
    on('team-c', 'c8080', '2026-01-01T00:00:04Z', 8080), on('team-c', 'crange', '2026-01-01T00:00:05Z'),
  ], { ports, clock, requeue: (k, ms) => requeued.push([k, ms]) });
  // team-a holds 8081 and the range's one port; team-b's and team-c's wait
  store.set('team-a/a8081', on('team-a', 'a8081', '2025-01-01T00:00:00Z', 8081));
  store.set('team-a/arange', on('team-a', 'arange', '2025-01-01T00:00:01Z'));
  await r.reconcile('team-a/a8081', silentLogger);
  await r.reconcile('team-a/arange', silentLogger);
  for (const k of ['team-b/b8080', 'team-c/c8080', 'team-b/b8081', 'team-b/brange', 'team-b/brefused', 'team-c/crange']) await r.reconcile(k, silentLogger);
  assert.equal(ports.portOf('team-b/b8080'), 8080);
  assert.deepEqual(['team-c/c8080', 'team-b/b8081', 'team-b/brange', 'team-b/brefused', 'team-c/crange'].map((k) => ports.portOf(k)), [undefined, undefined, undefined, undefined, undefined]);
  requeued.length = 0;
  // team-a makes and deletes its gateways in a loop: no one is woken at once, team-b's and
  // team-c's waiters once its holds end (each timer kept by the queue per key)
  for (let i = 0; i < 3; i++) {
    for (const k of ['team-a/a8081', 'team-a/arange']) { const g = store.get(k)!; store.delete(k); await r.reconcile(k, silentLogger); store.set(k, g); }
    for (const k of ['team-a/a8081', 'team-a/arange']) await r.reconcile(k, silentLogger);
  }
  const woken = (k: string) => requeued.filter(([x]) => x === k);
  assert.deepEqual(woken('team-b/b8080'), [], 'it holds its port');
  assert.deepEqual(woken('team-c/c8080'), [], '8080 was not given up');
  assert.deepEqual(woken('team-b/brefused'), [], 'a port --requestable-ports refuses is never given up');
  for (const k of ['team-b/brange', 'team-c/crange']) {
    assert.ok(woken(k).length > 0, k);
    assert.ok(woken(k).every(([, ms]) => ms === 300_000), `${k}: when the hold ends, not at once: ${JSON.stringify(woken(k))}`);
  }
  // one that asked for the port is told at once that it is held (its status says until when)
  assert.ok(woken('team-b/b8081').length > 0 && woken('team-b/b8081').every(([, ms]) => ms === undefined), JSON.stringify(woken('team-b/b8081')));
  // team-b's b8080 deleted wakes team-c's c8080, which asked for it, at once ...
  requeued.length = 0;
  store.delete('team-b/b8080');
  await r.reconcile('team-b/b8080', silentLogger);
  assert.deepEqual(woken('team-c/c8080'), [['team-c/c8080', undefined]]);
  // ... and a team-b gateway waiting for 8080 at once
  requeued.length = 0;
  store.set('team-b/b8080', on('team-b', 'b8080', '2026-01-01T00:00:00Z', 8080));
  await r.reconcile('team-b/b8080', silentLogger);
  store.set('team-b/b2', on('team-b', 'b2', '2026-01-02T00:00:00Z', 8080));
  await r.reconcile('team-b/b2', silentLogger);
  store.delete('team-b/b8080');
  await r.reconcile('team-b/b8080', silentLogger);
  assert.deepEqual(woken('team-b/b2'), [['team-b/b2', undefined]]);
});

test('a gateway moving to another port wakes those waiting for the one it left (a requested one, or the range\'s)', async () => {
  const on = (name: string, created: string, port?: number) => gw(name, created, { spec: { ...gw(name, '').spec, ...(port ? { listener: { port } } : {}) } });
  const ports = new PortAllocator([100, 100]);
  const requeued: string[] = [];
  const wokenAfter: [string, number][] = [];
  const { r, store, applied } = setup([on('a', '2026-01-01T00:00:00Z', 8080), on('b', '2026-01-02T00:00:00Z', 8080), on('c', '2026-01-03T00:00:00Z'), on('d', '2026-01-04T00:00:00Z')],
    { ports, requeue: (k) => { requeued.push(k); wokenAfter.push([k, applied.length]); } });
  for (const n of ['a', 'b', 'c', 'd']) await r.reconcile(`team-a/${n}`, silentLogger);
  assert.deepEqual(['a', 'b', 'c', 'd'].map((n) => ports.portOf(`team-a/${n}`)), [8080, undefined, 100, undefined]);
  requeued.length = 0;
  store.set('team-a/a', on('a', '2026-01-01T00:00:00Z', 8081));
  const at = applied.length;
  await r.reconcile('team-a/a', silentLogger);
  assert.deepEqual(requeued, ['team-a/b'], 'b waits for 8080, which a left');
  assert.deepEqual(wokenAfter, [['team-a/b', at + 1]], 'once a\'s listener moved (programmed), not before: 8080 was still bound');
  requeued.length = 0;
  store.set('team-a/c', on('c', '2026-01-03T00:00:00Z', 8082));
  await r.reconcile('team-a/c', silentLogger);
  assert.deepEqual(requeued, ['team-a/d'], 'd waits for the range\'s port, which c left');
});

test('a follower waiting for the leader to record its port is not woken by a release, only by its own update', async () => {
  const a = gw('a', '2026-01-01T00:00:00Z', { status: { listener: { port: 100 } } });
  const b = gw('b', '2026-01-01T00:00:01Z'); // not recorded yet
  const { r, store, requeued } = setup([a, b], { isLeader: () => false });
  await r.reconcile('team-a/a', silentLogger);
  await r.reconcile('team-a/b', silentLogger);
  requeued.length = 0;
  store.delete('team-a/a');
  await r.reconcile('team-a/a', silentLogger);
  assert.deepEqual(requeued, []);
});

test('a status write that finds the gateway gone or made again writes no Event and remembers nothing', async () => {
  const events: string[] = [];
  let gone = true;
  const { r } = setup([gw('a', '2026-01-01T00:00:00Z')], {
    writeStatus: async () => !gone,
    events: { record: async (_g, type, reason) => { events.push(`${type} ${reason}`); } },
  });
  await r.reconcile('team-a/a', silentLogger);
  assert.deepEqual(events, []);
  assert.equal(r.lastWritten('team-a/a'), undefined);
  gone = false;
  await r.reconcile('team-a/a', silentLogger);
  assert.equal(events.length, 1);
  assert.notEqual(r.lastWritten('team-a/a'), undefined);
});

test('no free port in the range: tried again when a port another process holds is tried again, as when a hold ends', () => {
  let now = 1_000;
  const ports = new PortAllocator([100, 101], () => now);
  ports.block(100, 60_000);
  assert.deepEqual(ports.claim({ key: 'team-a/a', rank: '1' }), { port: 101 });
  assert.deepEqual(ports.claim({ key: 'team-b/b', rank: '2' }), { conflict: 'no free port left in the range 100-101', retryInMs: 60_000 });
  now += 60_001;
  assert.deepEqual(ports.claim({ key: 'team-b/b', rank: '2' }), { port: 100 });
});

test('gateways over the namespace limit are TooManyGateways, the oldest keep theirs', async () => {
  const gateways = [gw('old', '2026-01-01T00:00:00Z'), gw('new', '2026-01-02T00:00:00Z')];
  const limit = new NamespaceLimit(1);
  for (const g of gateways) limit.set(`team-a/${g.metadata.name}`, rankOf(g));
  const read: string[] = [];
  const { r, written } = setup(gateways, {
    limit, cluster: { snapshotFor: (g) => (read.push(g.metadata.name), {}), exposureState: () => ({ service: false, slice: false, foreign: null }) },
  });
  await r.reconcile('team-a/new', silentLogger);
  await r.reconcile('team-a/old', silentLogger);
  const accepted = (name: string) => written.find(([n]) => n === name)![1].conditions!.find((c) => c.type === 'Accepted')!;
  assert.equal(accepted('new').reason, 'TooManyGateways');
  assert.equal(accepted('old').status, 'True');
  assert.deepEqual(read, ['old'], 'the references of a gateway over the limit are not read');
});

test('while the watch has not brought back its own write, a reconcile neither writes the status again nor records a second Event', async () => {
  const events: string[] = [];
  const written: AccessGatewayStatus[] = [];
  const { r, store } = setup([gw('a', '2026-01-01T00:00:00Z')], {
    writeStatus: async (_g, s) => { written.push(s); }, // the cache keeps the old status (no watch event yet)
    events: { record: async (_g, type, reason) => { events.push(`${type} ${reason}`); } },
  });
  await r.reconcile('team-a/a', silentLogger);
  await r.reconcile('team-a/a', silentLogger);
  assert.equal(written.length, 1);
  assert.deepEqual(events, ['Normal Programmed']);
  // someone else changed the status (a newer resourceVersion in the cache): it is put right again
  const g = store.get('team-a/a')!;
  g.metadata.resourceVersion = '7';
  g.status = { observedGeneration: 0 };
  await r.reconcile('team-a/a', silentLogger);
  assert.equal(written.length, 2);
  const before = events.length;
  // a write that fails is not remembered: the retry writes (and records) it
  const failing = setup([gw('b', '2026-01-01T00:00:00Z')], {
    writeStatus: async () => { throw new Error('apiserver away'); },
    events: { record: async (_g, type, reason) => { events.push(`b ${type} ${reason}`); } },
  });
  await assert.rejects(failing.r.reconcile('team-a/b', silentLogger));
  assert.equal(events.length, before, 'an Event for a status that was not written');
});

test('expired access rules are listed in status, and the reconcile comes back when the next one expires', async () => {
  const t0 = Date.parse('2026-12-01T09:00:00Z');
  const clock = new FakeClock(t0);
  const sa = [{ namespace: 'team-a', name: 'ci' }];
  const g = gw('a', '2026-01-01T00:00:00Z');
  g.spec.access = [
    { serviceAccounts: sa, notAfter: '2026-12-01T08:00:00Z' }, // expired an hour ago
    { serviceAccounts: sa, notBefore: '2026-12-01T08:00:00Z', notAfter: '2026-12-01T09:10:00Z' },
    { serviceAccounts: sa },
  ];
  const { r, written, applied } = setup([g], { clock });
  assert.deepEqual(await r.reconcile('team-a/a', silentLogger), { requeueAfterMs: 10 * 60_000 + 1000 });
  assert.deepEqual(written.at(-1)![1].expiredAccessRules, [{ index: 0, notAfter: '2026-12-01T08:00:00Z' }]);
  // the plan carries the windows to the data plane, which stops matching on its own
  assert.deepEqual(applied.at(-1)![1]!.access.map((a) => [a.notBefore, a.notAfter]),
    [[null, t0 - 3_600_000], [t0 - 3_600_000, t0 + 600_000], [null, null]]);
  clock.advance(10 * 60_000 + 1000);
  assert.deepEqual(await r.reconcile('team-a/a', silentLogger), {});
  assert.deepEqual(written.at(-1)![1].expiredAccessRules, [{ index: 0, notAfter: '2026-12-01T08:00:00Z' }, { index: 1, notAfter: '2026-12-01T09:10:00Z' }]);
  // a notAfter months away: waits at most an hour (a longer timer would overflow)
  g.spec.access = [{ serviceAccounts: sa, notAfter: '2027-06-01T00:00:00Z' }];
  assert.deepEqual(await r.reconcile('team-a/a', silentLogger), { requeueAfterMs: 3_600_000 });
  assert.equal(written.at(-1)![1].expiredAccessRules, undefined, 'nothing expired: the field is dropped');
});

/** A reconciler of gateway `g` whose agw-NAME objects the cache shows as `cached` says; what it
 * writes, in order (kind, and whether the cache showed it). */
function exposing(over: Partial<GatewayReconcilerDeps> = {}, g = gw('a', '2026-01-01T00:00:00Z')) {
  const cached = { service: false, slice: false, foreign: null as string | null };
  const writes: [string, boolean][] = [];
  const { r } = setup([g], {
    cluster: { snapshotFor: () => ({}), exposureState: () => ({ ...cached }) },
    exposure: { addresses: () => ['198.18.0.1'], write: async (o, exists) => { writes.push([(o as { kind: string }).kind, exists]); } },
    ...over,
  });
  return { r, cached, writes };
}

test('the agw-NAME Service and EndpointSlice: written once, not again before the cache shows them, again when one is deleted', async () => {
  const { r, cached, writes } = exposing();
  await r.reconcile('team-a/a', silentLogger);
  assert.deepEqual(writes, [['Service', false], ['EndpointSlice', false]]);
  await r.reconcile('team-a/a', silentLogger); // the watch has not brought them yet: no second create
  Object.assign(cached, { service: true });
  await r.reconcile('team-a/a', silentLogger); // the Service arrived, the slice not yet
  Object.assign(cached, { slice: true });
  await r.reconcile('team-a/a', silentLogger);
  assert.equal(writes.length, 2, 'unchanged objects were written again');
  Object.assign(cached, { service: false }); // someone deleted the Service
  await r.reconcile('team-a/a', silentLogger);
  assert.deepEqual(writes.slice(2), [['Service', false], ['EndpointSlice', true]]);
});

test('the agw-NAME objects rewritten where the cache shows them (a new expose type): one deleted later is written again, though the rewrite brought no reconcile', async () => {
  // a rewrite that changes nothing the cache keeps (the Service's type) makes no watch event
  // reconcile the gateway; a deletion after it must still be repaired
  const g = gw('a', '2026-01-01T00:00:00Z');
  const { r, cached, writes } = exposing({ exposurePolicy: { types: ['ClusterIP', 'NodePort'], defaultType: 'ClusterIP', annotations: [] } }, g);
  await r.reconcile('team-a/a', silentLogger);
  Object.assign(cached, { service: true, slice: true });
  g.spec.listener = { expose: { type: 'NodePort' } } as never;
  g.metadata.generation = 2;
  await r.reconcile('team-a/a', silentLogger);
  assert.deepEqual(writes.slice(2), [['Service', true], ['EndpointSlice', true]]);
  Object.assign(cached, { service: false }); // deleted by hand, the next reconcile its deletion's
  await r.reconcile('team-a/a', silentLogger);
  assert.deepEqual(writes.slice(4), [['Service', false], ['EndpointSlice', true]]);
});

// The flake of resilience's "written again": the cache showed the objects' creation and their
// deletion before any reconcile read it (a team's queue paused, or the events in one batch); the
// reconcile then took them for creates not seen yet, and they were never written again.
test('the agw-NAME objects created and deleted before a reconcile read the cache: the deletion told (exposureGone), they are written again', async () => {
  const { r, writes } = exposing();
  await r.reconcile('team-a/a', silentLogger);
  assert.equal(writes.length, 2);
  await r.reconcile('team-a/a', silentLogger); // not in the cache yet: not written again (a create would be refused)
  assert.equal(writes.length, 2);
  r.exposureGone('team-a/a');
  r.exposureGone('team-a/other'); // (another gateway's: nothing held for it)
  await r.reconcile('team-a/a', silentLogger);
  assert.deepEqual(writes.slice(2), [['Service', false], ['EndpointSlice', false]]);
});

// A review: with a create answered 409 taken as done, the gateway's EndpointSlice was written for
// a Service someone else had made of that name (its endpoints the gateway's).
test('a Service create that finds one there already writes no EndpointSlice: written whole at the next reconcile, once the cache says whose it is', async () => {
  const cached = { service: false, slice: false, foreign: null as string | null };
  const writes: [string, boolean][] = [];
  let there = true;
  const { r } = setup([gw('a', '2026-01-01T00:00:00Z')], {
    cluster: { snapshotFor: () => ({}), exposureState: () => ({ ...cached }) },
    exposure: { addresses: () => ['198.18.0.1'], write: async (o, exists) => { writes.push([(o as { kind: string }).kind, exists]); return !(there && (o as { kind: string }).kind === 'Service'); } },
  });
  assert.deepEqual(await r.reconcile('team-a/a', silentLogger), { requeueAfterMs: 1_000 });
  assert.deepEqual(writes, [['Service', false]]);
  // someone else's: said, nothing written
  cached.foreign = 'Service team-a/agw-a exists and is not owned by this AccessGateway';
  await r.reconcile('team-a/a', silentLogger);
  assert.deepEqual(writes, [['Service', false]]);
  // ours after all (the cache had lagged): both written
  Object.assign(cached, { foreign: null, service: true });
  there = false;
  await r.reconcile('team-a/a', silentLogger);
  assert.deepEqual(writes.slice(1), [['Service', true], ['EndpointSlice', false]]);
});

test('a reconcile charges its namespace the event-loop time its translate, apply and status write held the loop (not what they awaited), also when apply throws', async () => {
  const charged: [string, number][] = [];
  let fail = false;
  const { r } = setup([gw('a', '2026-01-01T00:00:00Z')], {
    // an apply that holds the loop 30 ms, as building a costly listener does, then waits 500 ms
    dataplane: { apply: async (_key, plan) => {
      const end = performance.now() + 30;
      while (performance.now() < end);
      if (fail) throw new Error('the listener could not be made');
      await new Promise((res) => setTimeout(res, 500));
      return plan ? { programmed: true, port: plan.port } : null;
    } },
    // and a status write whose patch takes 30 ms to make (a red team: a reconcile's status and
    // exposure were not charged, ~2/3 of a cheap reconcile's time)
    writeStatus: (g, st) => {
      const end = performance.now() + 30;
      while (performance.now() < end);
      g.status = st;
      return new Promise((res) => setTimeout(res, 500));
    },
    charge: (ns, ms) => charged.push([ns, ms]),
  });
  await r.reconcile('team-a/a', silentLogger);
  assert.equal(charged.length, 1);
  assert.equal(charged[0]![0], 'team-a');
  assert.ok(charged[0]![1] >= 60 && charged[0]![1] < 400, `${charged[0]![1]} ms: the 30 + 30 held, not the 1,000 awaited`);
  fail = true;
  await assert.rejects(r.reconcile('team-a/a', silentLogger), /could not be made/);
  assert.equal(charged.length, 2);
  assert.ok(charged[1]![1] >= 30, `${charged[1]![1]} ms`);
});

test('a Service or EndpointSlice the apiserver refuses as invalid (an allowed annotation key it does not take; an admission policy): Programmed=False ExposureInvalid in status; written again a minute later, or at once for a new spec', async () => {
  const writes: string[] = [];
  let refuse: string | null = 'Service';
  const clock = new FakeClock(1_000_000);
  const g = gw('a', '2026-01-01T00:00:00Z');
  g.spec.listener = { expose: { annotations: { 'lb.example/bad key': 'x' } } } as never;
  const { r, written } = setup([g], {
    clock,
    cluster: { snapshotFor: () => ({}), exposureState: () => ({ service: false, slice: false, foreign: null }) },
    exposurePolicy: { types: ['ClusterIP'], defaultType: 'ClusterIP', annotations: ['lb.example/*'] },
    exposure: { addresses: () => ['198.18.0.1'], write: async (o) => {
      const kind = (o as { kind: string }).kind;
      writes.push(kind);
      if (kind === refuse) throw Object.assign(new Error(`${kind} "agw-a" is invalid: metadata.annotations: Invalid value: "lb.example/bad key"`), { status: 422 });
    } },
  });
  const programmed = () => written.at(-1)![1].conditions!.find((c) => c.type === 'Programmed')!;
  assert.deepEqual(await r.reconcile('team-a/a', silentLogger), { requeueAfterMs: 60_000 });
  assert.deepEqual(writes, ['Service'], 'the EndpointSlice is not written after its Service was refused');
  assert.deepEqual([programmed().status, programmed().reason], ['False', 'ExposureInvalid']);
  assert.match(programmed().message, /refused the Service agw-a the gateway needs: .*bad key/);
  assert.equal(written.at(-1)![1].conditions!.find((c) => c.type === 'Ready')!.status, 'False');
  clock.advance(10_000);
  assert.deepEqual(await r.reconcile('team-a/a', silentLogger), { requeueAfterMs: 50_000 });
  assert.deepEqual(writes, ['Service'], 'the same spec within the minute: not written again');
  assert.equal(programmed().reason, 'ExposureInvalid', 'still said');
  // a minute later it is written again: what refused it (a policy) may be gone; here the slice is refused
  refuse = 'EndpointSlice';
  clock.advance(50_000);
  assert.deepEqual(await r.reconcile('team-a/a', silentLogger), { requeueAfterMs: 60_000 });
  assert.deepEqual(writes, ['Service', 'Service', 'EndpointSlice']);
  assert.match(programmed().message, /refused the EndpointSlice agw-a/);
  // a new spec: written at once
  g.spec.listener = { expose: { annotations: { 'lb.example/good': 'x' } } } as never;
  g.metadata.generation = 2;
  refuse = null;
  assert.deepEqual(await r.reconcile('team-a/a', silentLogger), {});
  assert.deepEqual(writes, ['Service', 'Service', 'EndpointSlice', 'Service', 'EndpointSlice']);
  assert.equal(programmed().status, 'True');
});

test('a Service the apiserver forbids (the namespace\'s ResourceQuota is full) is Programmed=False ExposureForbidden in status, with the port it listens on; another error is thrown, nothing written', async () => {
  let fail: { status: number; message: string } | null = { status: 403, message: 'services "agw-a" is forbidden: exceeded quota: q, requested: services=1, used: services=4, limited: services=4' };
  const clock = new FakeClock(1_000_000);
  const g = gw('a', '2026-01-01T00:00:00Z');
  const { r, written } = setup([g], {
    clock,
    exposure: { addresses: () => ['198.18.0.1'], write: async (o) => {
      if ((o as { kind: string }).kind === 'Service' && fail) throw Object.assign(new Error(fail.message), { status: fail.status });
    } },
  });
  assert.deepEqual(await r.reconcile('team-a/a', silentLogger), { requeueAfterMs: 60_000 });
  const programmed = written.at(-1)![1].conditions!.find((c) => c.type === 'Programmed')!;
  assert.deepEqual([programmed.status, programmed.reason], ['False', 'ExposureForbidden']);
  assert.match(programmed.message, /refused the Service agw-a the gateway needs: .*exceeded quota/);
  assert.equal(written.at(-1)![1].listener?.port, 100);
  fail = { status: 500, message: 'etcdserver: request timed out' };
  clock.advance(60_000); // (written again a minute later)
  await assert.rejects(r.reconcile('team-a/a', silentLogger), /timed out/);
  assert.equal(written.length, 1);
});

test('a follower writes no agw-NAME Service or EndpointSlice (the leader does), refused before or not', async () => {
  const writes: string[] = [];
  const a = gw('a', '2026-01-01T00:00:00Z');
  a.status = { listener: { port: 104 } };
  const { r } = setup([a], {
    isLeader: () => false,
    cluster: { snapshotFor: () => ({}), exposureState: () => ({ service: false, slice: false, foreign: null }) },
    exposure: { addresses: () => ['198.18.0.1'], write: async (o) => { writes.push((o as { kind: string }).kind); } },
  });
  await r.reconcile('team-a/a', silentLogger);
  await r.reconcile('team-a/a', silentLogger);
  assert.deepEqual(writes, []);
});

test('a pathPrefix or rewritePrefix stored before the CRD refused it is Accepted=False InvalidPath, nothing served', async () => {
  for (const route of [{ name: 'r', pathPrefix: '/a/../b', apiserver: {} }, { name: 'r', pathPrefix: '/x', rewritePrefix: '/x/../..', apiserver: {} }]) {
    const g = gw('p', '2026-01-01T00:00:00Z');
    g.spec.routes = [route] as never;
    const { r, applied, written } = setup([g]);
    await r.reconcile('team-a/p', silentLogger);
    assert.deepEqual(applied, [['team-a/p', null]]);
    const accepted = written.at(-1)![1].conditions!.find((c) => c.type === 'Accepted')!;
    assert.deepEqual([accepted.status, accepted.reason], ['False', 'InvalidPath']);
    assert.match(accepted.message, /^spec\.routes\[0\]\.(pathPrefix|rewritePrefix) "[^"]+": a decoded path: no '\/\/' but trailing, no '\.' or '\.\.' segment/);
  }
});

test('a name stored before the CRD refused it (over 59 characters: agw-NAME is no Service name) is Accepted=False InvalidName, nothing served', async () => {
  const long = gw('a'.repeat(60), '2026-01-01T00:00:00Z');
  const { r, applied, written } = setup([long]);
  assert.deepEqual(await r.reconcile(`team-a/${'a'.repeat(60)}`, silentLogger), {});
  assert.deepEqual(applied, [[`team-a/${'a'.repeat(60)}`, null]]);
  const accepted = written.at(-1)![1].conditions!.find((c) => c.type === 'Accepted')!;
  assert.deepEqual([accepted.status, accepted.reason], ['False', 'InvalidName']);
  assert.match(accepted.message, /at most 59 characters/);
});

test('defaults, translate and apply run in turns of their own, one reconcile\'s chunk at a time over the workers: another team\'s I/O is read between any two', async () => {
  const order: string[] = [];
  const other = anotherTeam(order);
  const io = () => other.io(); // another team's request arriving while the chunk runs
  const base = setup([gw('a', '2026-01-01T00:00:00Z'), gw('b', '2026-01-01T00:00:00Z')]);
  const { r } = setup([], {
    gateways: { get: (ns, n) => { order.push(`read ${n}`); io(); return base.store.get(`${ns}/${n}`); }, values: () => base.store.values(), keys: () => [...base.store.keys()] },
    cluster: { snapshotFor: (g) => { order.push(`translate ${g.metadata.name}`); io(); return {}; }, exposureState: () => ({ service: false, slice: false, foreign: null }) },
    dataplane: { apply: async (key, plan) => { order.push(`apply ${key}`); io(); return plan ? { programmed: true, port: plan.port } : null; } },
  });
  await other.run(() => Promise.all([r.reconcile('team-a/a', silentLogger), r.reconcile('team-a/b', silentLogger)]));
  const chunks = order.filter((o) => o !== 'io');
  assert.equal(chunks.length, 6, order.join(', '));
  for (let i = 1; i < order.length; i++) {
    assert.ok(order[i] === 'io' || order[i - 1] === 'io', `two chunks back to back: ${order.join(', ')}`);
  }
});

/** Another team's client, writing to the operator while a reconcile runs (`io`): each byte the
 * operator reads meanwhile is an 'io' in `order`. `run` starts the reconciles in an I/O callback,
 * as a watch event starts them. */
function anotherTeam(order: string[]) {
  let peer: Socket | undefined;
  return {
    io: () => peer!.write('x'),
    async run(reconciles: () => Promise<unknown>): Promise<void> {
      const server = createServer((s) => s.on('data', (d: Buffer) => {
        if (d.toString() === 'go') void reconciles().then(() => s.end());
        else for (let i = 0; i < d.length; i++) order.push('io');
      }));
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const port = (server.address() as { port: number }).port;
      const starter = connect(port, '127.0.0.1');
      peer = connect(port, '127.0.0.1');
      await Promise.all([once(starter, 'connect'), once(peer, 'connect')]);
      await pauseMs(20);
      starter.write('go');
      await once(starter, 'end');
      starter.destroy();
      peer.destroy();
      server.close();
    },
  };
}

function pauseMs(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

test('translate runs in turns as its routes need them: another team\'s I/O is read between costly routes, and all their time is charged', async () => {
  const order: string[] = [];
  const other = anotherTeam(order);
  const busy = (ms: number) => { for (const end = performance.now() + ms; performance.now() < end;); };
  // each Service route's lookup holds the loop 2 ms (as compiling a route's patterns may)
  const services = new Proxy({}, { get: (_t, key) => { order.push(`route ${String(key)}`); other.io(); busy(2); return undefined; } });
  const routes = Array.from({ length: 8 }, (_, i) => ({ name: `r${i}`, pathPrefix: `/r${i}`, service: { name: `s${i}`, port: 80 } }));
  const charged: number[] = [];
  const { r } = setup([gw('a', '2026-01-01T00:00:00Z', { spec: { authentication: { audiences: ['gw'] }, routes } as never })], {
    cluster: { snapshotFor: () => ({ services }), exposureState: () => ({ service: false, slice: false, foreign: null }) },
    charge: (_ns, ms) => charged.push(ms),
  });
  await other.run(() => r.reconcile('team-a/a', silentLogger));
  const looked = order.filter((o) => o !== 'io');
  assert.deepEqual(looked, routes.map((x) => `route team-a/${x.service.name}`));
  for (let i = 1; i < order.length; i++) {
    assert.ok(order[i] === 'io' || order[i - 1] === 'io', `two routes back to back: ${order.join(', ')}`);
  }
  assert.equal(charged.length, 1);
  assert.ok(charged[0]! >= 16, `charged ${charged[0]} ms for 8 routes of 2 ms`);
});

test('--requestable-ports: a port outside them is PortConflict, saying why; the range still allocates; a restart does not seed it back', async () => {
  const ports = new PortAllocator([100, 109], Date.now, 0, undefined, [20000, 29999]);
  const sidecar = gw('sidecar', '2026-01-01T00:00:00Z', { spec: { listener: { port: 15006 }, authentication: { audiences: ['gw'] }, routes: [{ name: 'r', pathPrefix: '/', apiserver: {} }] } });
  const inside = gw('inside', '2026-01-01T00:00:01Z', { spec: { listener: { port: 20080 }, authentication: { audiences: ['gw'] }, routes: [{ name: 'r', pathPrefix: '/', apiserver: {} }] } });
  const ranged = gw('ranged', '2026-01-01T00:00:02Z');
  const { r, applied, written } = setup([sidecar, inside, ranged], { ports });
  assert.deepEqual(await r.reconcile('team-a/sidecar', silentLogger), {});
  const accepted = written.at(-1)![1].conditions!.find((c) => c.type === 'Accepted')!;
  assert.deepEqual([accepted.status, accepted.reason], ['False', 'PortConflict']);
  assert.match(accepted.message, /port 15006 is not one a gateway may ask for: the platform allows 20000-29999 \(--requestable-ports\)/);
  assert.deepEqual(applied, [['team-a/sidecar', null]]);
  assert.equal(ports.portOf('team-a/sidecar'), undefined);
  await r.reconcile('team-a/inside', silentLogger);
  await r.reconcile('team-a/ranged', silentLogger);
  assert.equal(ports.portOf('team-a/inside'), 20080);
  assert.equal(ports.portOf('team-a/ranged'), 100, 'the allocation range is not bound by it');
  // held before the flag was set (status says so): not given back after a restart
  const again = new PortAllocator([100, 109], Date.now, 0, undefined, [20000, 29999]);
  again.seed([{ key: 'team-a/sidecar', requested: 15006, previous: 15006, rank: 'a' }, { key: 'team-a/inside', requested: 20080, previous: 20080, rank: 'b' }]);
  assert.equal(again.portOf('team-a/sidecar'), undefined);
  assert.equal(again.portOf('team-a/inside'), 20080);
  // a follower does not bind it either, whatever status records (a leader without the flag wrote it)
  const recorded = { ...sidecar, status: { listener: { port: 15006 } } } as AccessGateway;
  const followerPorts = new PortAllocator([100, 109], Date.now, 0, undefined, [20000, 29999]);
  const follower = setup([recorded], { ports: followerPorts, isLeader: () => false });
  await follower.r.reconcile('team-a/sidecar', silentLogger);
  assert.deepEqual(follower.applied, [['team-a/sidecar', null]]);
  assert.equal(followerPorts.portOf('team-a/sidecar'), undefined);
});

test('a gateway\'s status is written at most 5 times at once, then once each 2 s: the last status is written when its turn comes; another gateway\'s writes are its own', async () => {
  const clock = new FakeClock(1_000_000);
  const a = gw('a', '2026-01-01T00:00:00Z');
  const b = gw('b', '2026-01-01T00:00:01Z');
  const { r, written } = setup([a, b], { clock });
  const results = [];
  // each reconcile brings a status that changed (a new generation: as endpoints flapping would)
  for (let g = 1; g <= 8; g++) {
    a.metadata.generation = g;
    results.push(await r.reconcile('team-a/a', silentLogger));
  }
  assert.equal(written.filter(([n]) => n === 'a').length, 5);
  assert.deepEqual(results.slice(5), [{ requeueAfterMs: 2_000 }, { requeueAfterMs: 2_000 }, { requeueAfterMs: 2_000 }]);
  assert.equal(written.at(-1)![1].observedGeneration, 5);
  // b is not held back by a's writes
  assert.deepEqual(await r.reconcile('team-a/b', silentLogger), {});
  assert.equal(written.at(-1)![0], 'b');
  clock.advance(2_000);
  assert.deepEqual(await r.reconcile('team-a/a', silentLogger), {});
  assert.equal(written.at(-1)![0], 'a');
  assert.equal(written.at(-1)![1].observedGeneration, 8, 'the status of now, once its turn came');
});

test('a namespace\'s gateways write at most 200 statuses at once, then 20 a second, together; another namespace\'s are its own', async () => {
  const clock = new FakeClock(1_000_000);
  const many = Array.from({ length: 202 }, (_, i) => gw(`g${i}`, '2026-01-01T00:00:00Z'));
  const other = { ...gw('b', '2026-01-01T00:00:00Z'), metadata: { ...gw('b', '2026-01-01T00:00:00Z').metadata, namespace: 'team-b' } };
  const { r, written } = setup([...many, other], { clock, ports: new PortAllocator([100, 1000]) });
  const results = [];
  for (let i = 0; i < 202; i++) results.push(await r.reconcile(`team-a/g${i}`, silentLogger));
  assert.equal(written.length, 200);
  assert.deepEqual(results.slice(200), [{ requeueAfterMs: 50 }, { requeueAfterMs: 50 }]);
  assert.deepEqual(await r.reconcile('team-b/b', silentLogger), {});
  assert.equal(written.at(-1)![0], 'b');
  clock.advance(50);
  assert.deepEqual(await r.reconcile('team-a/g200', silentLogger), {});
  assert.equal(written.at(-1)![0], 'g200');
  // a gateway held back by its namespace spent none of its own writes
  clock.advance(50);
  for (let g = 2; g <= 6; g++) {
    many[201]!.metadata.generation = g;
    assert.deepEqual(await r.reconcile('team-a/g201', silentLogger), {}, `write ${g}`);
    clock.advance(50);
  }
});
