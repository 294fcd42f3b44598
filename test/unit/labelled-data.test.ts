// The byte bound on labelled Secrets and ConfigMaps, against what a watch and a list really do:
// a list that fails midway, a namespace that flips over and under, a relist that crosses the
// bound midway. Fake apiserver answers; the informers, caches and bound are the real ones.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LabelledData, objectBytes } from '../../src/controller/labelled-data.js';
import { ApiError, type KubeClient } from '../../src/kube/client.js';
import { silentLogger } from '../../src/observability/logger.js';

type On = (ev: { type: string; object: unknown }) => void;
const configMaps = '/api/v1/configmaps?access-gateway.io/ca-bundle=true';
const cm = (name: string, rv: string, bytes: number) => ({ metadata: { name, namespace: 'a', resourceVersion: rv }, data: { k: 'x'.repeat(bytes - 1) } });
/** A bundle's text as read (not set aside, not missing). */
const isText = (v: string | null | undefined) => typeof v === 'string' && v !== 'aside' && v.startsWith('x');

/** Labelled data over a fake apiserver: `answer` answers each list (by path and call number). */
async function setup(answer: (path: URL, call: number) => unknown | Promise<unknown>, before?: (d: LabelledData) => void, perObject = 0) {
  const watches = new Map<string, { on: On; fail: (err: Error) => void }>();
  const calls = new Map<string, number>();
  const client = {
    request: async (_m: string, path: string) => {
      const u = new URL(path, 'https://x');
      const key = `${u.pathname}?${u.searchParams.get('labelSelector')}`;
      calls.set(key, (calls.get(key) ?? 0) + 1);
      return (await answer(u, calls.get(key)!)) ?? { items: [], metadata: { resourceVersion: '1' } };
    },
    watch: (path: string, signal: AbortSignal, _t: number, _a: string | undefined, on: On) => {
      const u = new URL(path, 'https://x');
      return new Promise<void>((resolve, reject) => {
        watches.set(`${u.pathname}?${u.searchParams.get('labelSelector')}`, { on, fail: reject });
        signal.addEventListener('abort', () => resolve());
      });
    },
  } as unknown as KubeClient;
  // (objects' data alone counts here; what each object counts besides is tried on its own)
  const data = new LabelledData(client, { namespaces: [], log: silentLogger, maxBytesPerNamespace: 1000, onChange: () => {}, bytesPerObject: perObject });
  before?.(data);
  for (const w of data.watches) w.start();
  await Promise.all(data.watches.map((w) => w.firstSync()));
  while (!watches.has(configMaps)) await new Promise((r) => setImmediate(r));
  const stop = async () => {
    data.close();
    await Promise.all(data.watches.map((w) => w.stop()));
  };
  return { data, watch: watches.get(configMaps)!, watches, calls, stop };
}

const total = (d: LabelledData) => (d as unknown as { budget: { total(ns: string): number } }).budget.total('a');
const until = async (ok: () => boolean, ms = 5_000) => {
  for (const end = Date.now() + ms; !ok() && Date.now() < end;) await new Promise((r) => setTimeout(r, 10));
  assert.ok(ok(), 'in time');
};

test('what a list read but never cached counts nothing: a relist that fails midway leaves no bytes behind', async () => {
  const { data, watch, calls, stop } = await setup((u, call) => {
    if (`${u.pathname}?${u.searchParams.get('labelSelector')}` !== configMaps || call === 1) return undefined;
    if (call === 2) return { items: [cm('gone', '5', 600)], metadata: { continue: 'c1', resourceVersion: '5' } };
    if (call === 3) throw new ApiError(500, 'boom', 'list');
    return { items: [], metadata: { resourceVersion: '9' } }; // deleted meanwhile
  });
  watch.fail(new ApiError(410, 'gone', 'watch'));
  await until(() => (calls.get(configMaps) ?? 0) >= 4);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(total(data), 0);
  watch.on({ type: 'ADDED', object: cm('ca', '10', 500) });
  assert.ok(isText(data.bundle('ConfigMap', 'a', 'ca', 'k')), '500 of 1000 bytes: read');
  await stop();
});

test('a namespace flipping over and under is read again once at a time, not once a flip', async () => {
  let inFlight = 0;
  let most = 0;
  let lists = 0;
  const { watch, stop } = await setup(async (u) => {
    if (!u.pathname.startsWith('/api/v1/namespaces/a/')) return undefined;
    lists++;
    most = Math.max(most, ++inFlight);
    await new Promise((r) => setTimeout(r, 100));
    inFlight--;
    return { items: [], metadata: {} };
  });
  watch.on({ type: 'ADDED', object: cm('big', '1', 990) });
  let rv = 2;
  for (let i = 0; i < 100; i++) {
    watch.on({ type: 'ADDED', object: cm('t', String(rv++), 20) }); // over
    watch.on({ type: 'DELETED', object: cm('t', String(rv++), 20) }); // under: read again
    await new Promise((r) => setTimeout(r, 2));
  }
  await new Promise((r) => setTimeout(r, 800));
  assert.equal(most, 1, 'one list of the namespace at a time');
  assert.ok(lists <= 3 * 6, `${lists} lists (each read again lists 3 kinds; the flips meanwhile ask for one more)`);
  await stop();
});

test('a relist that takes a namespace back under its bound midway leaves nothing set aside: a lookup of one reads it again', async () => {
  let phase = 0;
  const { data, watch, stop } = await setup(async (u) => {
    if (u.pathname === '/api/v1/namespaces/a/configmaps') return { items: [cm('ca', '2', 100), cm('big', '5', 10)], metadata: {} };
    if (`${u.pathname}?${u.searchParams.get('labelSelector')}` !== configMaps || phase === 0) return undefined;
    const page = u.searchParams.get('continue');
    if (!page) return { items: [cm('ca', '2', 100)], metadata: { continue: 'p2', resourceVersion: '6' } };
    if (page === 'p2') return { items: [cm('big', '5', 10)], metadata: { continue: 'p3', resourceVersion: '6' } };
    await new Promise((r) => setTimeout(r, 200));
    return { items: [], metadata: { resourceVersion: '6' } };
  });
  watch.on({ type: 'ADDED', object: cm('ca', '2', 100) });
  watch.on({ type: 'ADDED', object: cm('big', '3', 990) });
  assert.equal(data.bundle('ConfigMap', 'a', 'ca', 'k'), 'aside');
  // big shrinks while the watch is away; the relist reads ca (still over: set aside), then big
  phase = 1;
  watch.fail(new ApiError(410, 'gone', 'watch'));
  await until(() => total(data) === 110);
  await until(() => isText(data.bundle('ConfigMap', 'a', 'ca', 'k')));
  await stop();
});

test('one set aside in a namespace under its bound (its read again missed it) is read again when a gateway looks it up', async () => {
  let reads = 0;
  const { data, watch, stop } = await setup((u) => {
    if (u.pathname !== '/api/v1/namespaces/a/configmaps') return undefined;
    reads++;
    // the first read again sees a newer version the watch has not brought yet: it is left
    return { items: [cm('ca', reads === 1 ? '7' : '2', 100)], metadata: {} };
  });
  watch.on({ type: 'ADDED', object: cm('ca', '2', 100) });
  watch.on({ type: 'ADDED', object: cm('big', '3', 990) });
  watch.on({ type: 'DELETED', object: cm('big', '4', 990) });
  await until(() => reads === 1);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(data.bundle('ConfigMap', 'a', 'ca', 'k'), 'aside', 'still set aside, and now read again');
  await until(() => isText(data.bundle('ConfigMap', 'a', 'ca', 'k')));
  assert.ok(reads === 2 || reads === 3, `${reads} reads (a lookup while one runs asks for one more)`);
  await stop();
});

test('a list that takes a namespace over its bound midway: what it read before is not served either', async () => {
  const { data, stop } = await setup((u, call) => (`${u.pathname}?${u.searchParams.get('labelSelector')}` === configMaps && call === 1
    ? { items: [cm('a1', '2', 600), cm('a2', '3', 600), cm('small', '4', 10)], metadata: { resourceVersion: '4' } }
    : undefined));
  assert.equal(total(data), 1210);
  for (const name of ['a1', 'a2', 'small']) assert.equal(data.bundle('ConfigMap', 'a', name, 'k'), 'aside', name);
  await stop();
});

test('a list is held to the bound as it is read, not only once whole: what it keeps with data never passes the bound', async () => {
  const items = Array.from({ length: 100 }, (_, i) => cm(`c${i}`, String(i + 2), 100));
  let listed = false;
  const { data, stop } = await setup((u, call) => {
    if (`${u.pathname}?${u.searchParams.get('labelSelector')}` !== configMaps || call !== 1) return undefined;
    listed = true;
    return { items, metadata: { resourceVersion: '200' } };
  });
  assert.ok(listed);
  assert.equal(total(data), 10_000);
  const cached = data.watches[2]!;
  assert.equal([...cached.values()].filter((o) => o.data).length, 0, 'over: none kept with data');
  await stop();
  // what keep() returned as the list was read (before the cache took it): at most the bound
  const kept: number[] = [];
  const again = await setup((u, call) => (`${u.pathname}?${u.searchParams.get('labelSelector')}` === configMaps && call === 1 ? { items, metadata: { resourceVersion: '200' } } : undefined), (d) => {
    const keep = (d as any).keep.bind(d);
    (d as any).keep = (s: unknown, o: unknown) => {
      const r = keep(s, o);
      if (r.data) kept.push(r.bytes);
      return r;
    };
  });
  assert.ok(kept.length > 0 && kept.reduce((a, b) => a + b, 0) <= 1000, `${kept.length} kept with data as read`);
  await again.stop();
});

test('namespaces flipping over and under cannot hold every read-again place: another namespace is read again meanwhile', async () => {
  const lists: string[] = [];
  let running = 0;
  let most = 0;
  const { data, watch, stop } = await setup(async (u) => {
    const ns = u.pathname.split('/')[4];
    if (!ns || u.pathname.split('/')[3] !== 'namespaces') return undefined;
    lists.push(ns);
    most = Math.max(most, ++running);
    await new Promise((r) => setTimeout(r, 50));
    running--;
    return { items: ns === 'v' ? [{ ...cm('ca', '7', 100), metadata: { name: 'ca', namespace: 'v', resourceVersion: '7' } }] : [], metadata: {} };
  });
  const inNs = (ns: string, o: ReturnType<typeof cm>) => ({ ...o, metadata: { ...o.metadata, namespace: ns } });
  for (let i = 0; i < 4; i++) watch.on({ type: 'ADDED', object: inNs(`n${i}`, cm('big', '1', 990)) });
  watch.on({ type: 'ADDED', object: inNs('v', cm('ca', '7', 100)) });
  let rv = 10;
  const flip = setInterval(() => {
    for (let i = 0; i < 4; i++) {
      watch.on({ type: 'ADDED', object: inNs(`n${i}`, cm('t', String(rv++), 20)) });
      watch.on({ type: 'DELETED', object: inNs(`n${i}`, cm('t', String(rv++), 20)) });
    }
  }, 20);
  try {
    await new Promise((r) => setTimeout(r, 60)); // the four are reading
    watch.on({ type: 'ADDED', object: inNs('v', cm('pad', '8', 950)) });
    watch.on({ type: 'DELETED', object: inNs('v', cm('pad', '9', 950)) });
    await until(() => isText(data.bundle('ConfigMap', 'v', 'ca', 'k')), 3_000);
    lists.length = 0;
    await new Promise((r) => setTimeout(r, 1500)); // flipping on
  } finally {
    clearInterval(flip);
  }
  assert.ok(most <= 4, `${most} lists at once`);
  const n0 = lists.filter((ns) => ns === 'n0').length;
  assert.ok(n0 <= 9, `a flipping namespace listed ${n0} times in 1.5 s (3 kinds a pass): at most a pass a second`);
  await stop();
});

test('objects a list read with data, committed after another kind took the namespace over: set aside all the same', async () => {
  const caSecrets = '/api/v1/secrets?access-gateway.io/ca-bundle=true';
  let release!: () => void;
  const held = new Promise<void>((r) => { release = r; });
  const secret = (name: string, rv: string, bytes: number) => ({ metadata: { name, namespace: 'a', resourceVersion: rv }, data: { k: 'x'.repeat(bytes - 1) } });
  const { data, watch, watches, calls, stop } = await setup(async (u, call) => {
    if (`${u.pathname}?${u.searchParams.get('labelSelector')}` !== caSecrets || call === 1) return undefined;
    if (!u.searchParams.get('continue')) return { items: [secret('s1', '5', 400)], metadata: { continue: 'p2', resourceVersion: '5' } };
    await held;
    return { items: [], metadata: { resourceVersion: '6' } };
  });
  while (!watches.has(caSecrets)) await new Promise((r) => setImmediate(r));
  watches.get(caSecrets)!.fail(new ApiError(410, 'gone', 'watch')); // a relist: page 1 read, page 2 waits
  await until(() => (calls.get(caSecrets) ?? 0) >= 3);
  watch.on({ type: 'ADDED', object: cm('big', '2', 900) });
  watch.on({ type: 'ADDED', object: cm('more', '3', 200) }); // over, before the list is whole
  release();
  await until(() => data.watches[1]!.get('a', 's1') !== undefined);
  assert.equal(data.watches[1]!.get('a', 's1')!.data, undefined, 'set aside');
  assert.equal(data.bundle('Secret', 'a', 's1', 'k'), 'aside');
  await stop();
});

test('a CA reference reads the one key it names of a Secret (decoded) and never the others; a key an object inherits is no key', async () => {
  const caSecrets = '/api/v1/secrets?access-gateway.io/ca-bundle=true';
  const { data, watches, stop } = await setup(() => undefined);
  while (!watches.has(caSecrets)) await new Promise((r) => setImmediate(r));
  watches.get(caSecrets)!.on({ type: 'ADDED', object: { metadata: { name: 's', namespace: 'a', resourceVersion: '2' }, data: { 'ca.crt': Buffer.from('PEM').toString('base64'), other: 'T1RIRVI=' } } });
  await until(() => data.watches[1]!.get('a', 's') !== undefined);
  // the cached data as a team may make it (thousands of keys): every read of it recorded
  const cached = data.watches[1]!.get('a', 's')!;
  const reads: string[] = [];
  const real = cached.data!;
  cached.data = new Proxy(real, {
    get: (o, k) => (reads.push(`get ${String(k)}`), Reflect.get(o, k)),
    ownKeys: (o) => (reads.push('keys'), Reflect.ownKeys(o)),
    getOwnPropertyDescriptor: (o, k) => (reads.push(`has ${String(k)}`), Reflect.getOwnPropertyDescriptor(o, k)),
  });
  assert.equal(data.bundle('Secret', 'a', 's', 'ca.crt'), 'PEM');
  assert.deepEqual(reads, ['has ca.crt', 'get ca.crt']);
  // decoded once for this version of the object: each plan gets that one string, not a copy
  assert.equal(data.bundle('Secret', 'a', 's', 'ca.crt'), 'PEM');
  assert.deepEqual(reads, ['has ca.crt', 'get ca.crt'], 'read and decoded again');
  for (const k of ['constructor', 'toString', '__proto__', 'missing']) assert.equal(data.bundle('Secret', 'a', 's', k), null, k);
  // a new version is read again
  watches.get(caSecrets)!.on({ type: 'MODIFIED', object: { metadata: { name: 's', namespace: 'a', resourceVersion: '3' }, data: { 'ca.crt': Buffer.from('NEW').toString('base64') } } });
  await until(() => data.watches[1]!.get('a', 's')!.metadata.resourceVersion === '3');
  assert.equal(data.bundle('Secret', 'a', 's', 'ca.crt'), 'NEW');
  await stop();
});

test('a namespace\'s many small labelled objects are listed in pages growing from 10 to 32', async () => {
  const items = Array.from({ length: 100 }, (_, i) => ({ metadata: { name: `c${i}`, namespace: 'a', resourceVersion: String(i + 1) } }));
  const limits: number[] = [];
  const { stop, data } = await setup((u) => {
    if (`${u.pathname}?${u.searchParams.get('labelSelector')}` !== configMaps) return undefined;
    const limit = Number(u.searchParams.get('limit'));
    const from = Number(u.searchParams.get('continue') ?? 0);
    limits.push(limit);
    const next = from + limit;
    return { items: items.slice(from, next), metadata: { resourceVersion: '200', ...(next < items.length ? { continue: String(next) } : {}) } };
  });
  assert.deepEqual(limits, [10, 20, 32, 32, 32]);
  assert.ok(data.watches.some((w) => w.get('a', 'c99')), 'all listed');
  await stop();
});

test('labelled objects without data are not free: each counts what is kept of it, so thousands of them take their namespace over the bound, not read again at each flip', async () => {
  const empty = (i: number) => ({ metadata: { name: `e${i}`, namespace: 'a', resourceVersion: String(i + 1) } });
  const { data, watch, stop } = await setup((u, call) => (`${u.pathname}?${u.searchParams.get('labelSelector')}` === configMaps && call === 1
    ? { items: [0, 1].map(empty), metadata: { resourceVersion: '3' } } : undefined), undefined, objectBytes);
  assert.equal(total(data), 2 * objectBytes);
  watch.on({ type: 'ADDED', object: cm('ca', '10', 100) });
  assert.ok(isText(data.bundle('ConfigMap', 'a', 'ca', 'k')), `${2 * objectBytes + 100 + objectBytes} of 1000 bytes: read`);
  watch.on({ type: 'ADDED', object: empty(2) }); // a fourth object: past the bound, though it holds nothing
  assert.equal(data.bundle('ConfigMap', 'a', 'ca', 'k'), 'aside');
  await stop();
});
