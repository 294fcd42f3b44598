// The operator's apiserver client against a local HTTP server standing in for the apiserver's
// framing (pure client logic: answers cut at a size, watch events in pieces).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApiError, KubeClient, TooLarge } from '../../src/kube/client.js';
import { decodeList } from '../../src/kube/protobuf.js';
import { decodePod } from '../../src/kube/wire-objects.js';
import { listPages } from '../../src/kube/informer.js';
import { envelope, event, msg, pod, podList, status } from '../support/protobuf-writer.js';
import { silentLogger } from '../../src/observability/logger.js';

async function serve(t: TestContext, handle: (path: string, res: ServerResponse, req: IncomingMessage) => void): Promise<KubeClient> {
  const server = createServer((req, res) => handle(req.url!, res, req));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const client = await KubeClient.create({
    server: new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`), insecureSkipTLSVerify: false, authorization: async () => undefined,
  }, silentLogger);
  t.after(async () => {
    await client.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
  return client;
}

/** Writes `b` in pieces of 1 to 4,099 bytes. */
function writeCut(res: ServerResponse, b: Buffer): void {
  let at = 0, n = 1;
  const next = () => {
    if (at >= b.length) return res.end();
    const len = (n = (n * 7919) % 4099 + 1);
    res.write(b.subarray(at, at + len));
    at += len;
    setImmediate(next);
  };
  next();
}

test('an answer longer than maxBytes is not read on: TooLarge; one within it is parsed', async (t) => {
  const body = JSON.stringify({ items: [{ v: '<'.repeat(100_000) }] });
  const client = await serve(t, (_p, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    for (let i = 0; i < body.length; i += 1000) res.write(body.slice(i, i + 1000)); // chunked, as the apiserver's lists
    res.end();
  });
  await assert.rejects(client.request('GET', '/x', { maxBytes: body.length - 1, what: 'list x' }),
    (err: Error) => err instanceof TooLarge && err.message === `list x: the answer is longer than ${body.length - 1} bytes`);
  let told = 0;
  assert.deepEqual(await client.request('GET', '/x', { maxBytes: body.length, onBytes: (n) => { told = n; } }), JSON.parse(body));
  assert.equal(told, body.length);
  assert.deepEqual(await client.request('GET', '/x'), JSON.parse(body));
});

test('watch events come whole however the stream cuts them: one in thousands of pieces, several in one, a character split in two', async (t) => {
  const big = { type: 'MODIFIED', object: { metadata: { name: 'fat', resourceVersion: '2' }, v: 'é<'.repeat(200_000) } };
  const small = (n: number) => ({ type: 'ADDED', object: { metadata: { name: `s${n}`, resourceVersion: String(n) } } });
  const lines = Buffer.from([big, small(3), small(4), big].map((e) => JSON.stringify(e)).join('\n') + '\n\n', 'utf8');
  const client = await serve(t, (_p, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    writeCut(res, lines); // lines, and the two bytes of é, are cut anywhere
  });
  const got: unknown[] = [];
  const ms: number[] = [];
  await client.watch('/w', new AbortController().signal, 30_000, undefined, (ev, decodeMs) => { got.push(ev); ms.push(decodeMs); });
  assert.equal(got.length, 4);
  assert.deepEqual(got, [big, small(3), small(4), big]);
  // what reading each took is told (charged to the namespace of a gateway read so): the big ones' most
  assert.ok(ms.every((x) => x >= 0) && ms[0]! > ms[1]! && ms[3]! > ms[2]!, String(ms));
});

test('a discarded answer is read through and not parsed, its connection kept; an error\'s is read', async (t) => {
  let sockets = 0;
  const body = JSON.stringify({ metadata: { name: 'g' }, v: '<'.repeat(300_000) });
  const client = await serve(t, (p, res, req) => {
    if (!(req.socket as { counted?: true }).counted) { (req.socket as { counted?: true }).counted = true; sockets++; }
    req.resume();
    res.writeHead(p === '/bad' ? 422 : 200, { 'content-type': 'application/json' });
    res.end(p === '/bad' ? JSON.stringify({ kind: 'Status', reason: 'Invalid', message: 'no' }) : body);
  });
  for (let i = 0; i < 6; i++) assert.equal(await client.request('PATCH', '/x', { body: {}, discard: true }), undefined);
  assert.ok(sockets <= 2, `connections kept: ${sockets} for 6 requests`);
  await assert.rejects(client.request('PATCH', '/bad', { body: {}, discard: true }), (e: Error) => e instanceof ApiError && e.status === 422 && /no$/.test(e.message));
});

test('a protobuf watch: frames whole however the stream cuts them; a frame cut off by the stream\'s end is an error', async (t) => {
  const big = pod({ name: 'fat', ns: 'a', rv: '2', pad: 300_000 });
  const frames = msg(event('ADDED', envelope('Pod', big)), ...[3, 4, 5].map((n) => event('MODIFIED', envelope('Pod', pod({ name: `s${n}`, ns: 'a', rv: String(n) })))), event('DELETED', envelope('Pod', big)));
  const accepts: string[] = [];
  let cut = false;
  const client = await serve(t, (_p, res, req) => {
    accepts.push(req.headers.accept!);
    res.writeHead(200, { 'content-type': 'application/vnd.kubernetes.protobuf;stream=watch' });
    writeCut(res, cut ? frames.subarray(0, frames.length - 2) : frames);
  });
  const got: { type: string; object: any }[] = [];
  await client.watch('/w', new AbortController().signal, 30_000, undefined, (ev) => got.push(ev), decodePod);
  assert.deepEqual(got.map((e) => `${e.type} ${e.object.metadata.name}@${e.object.metadata.resourceVersion}`), ['ADDED fat@2', 'MODIFIED s3@3', 'MODIFIED s4@4', 'MODIFIED s5@5', 'DELETED fat@2']);
  assert.equal(accepts[0], 'application/vnd.kubernetes.protobuf, application/json');
  cut = true;
  got.length = 0;
  await assert.rejects(client.watch('/w', new AbortController().signal, 30_000, undefined, (ev) => got.push(ev), decodePod), /ended inside a frame/);
  assert.equal(got.length, 4);
});

test('a frame longer than any object is refused before it is read', async (t) => {
  const client = await serve(t, (_p, res) => {
    res.writeHead(200, { 'content-type': 'application/vnd.kubernetes.protobuf;stream=watch' });
    res.end(Buffer.from([0x7f, 0xff, 0xff, 0xff, 1, 2, 3]));
  });
  await assert.rejects(client.watch('/w', new AbortController().signal, 30_000, undefined, () => {}, decodePod), /a watch frame of 2147483647 bytes/);
});

test('a server that answers JSON is read as JSON; a protobuf Status is the error\'s message', async (t) => {
  let json = false;
  const client = await serve(t, (url, res) => {
    if (url.includes('bad')) {
      res.writeHead(410, { 'content-type': 'application/vnd.kubernetes.protobuf' });
      return res.end(envelope('Status', status(410, 'Expired', 'The provided continue parameter is too old')));
    }
    if (url.includes('watch')) {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ type: 'ADDED', object: { metadata: { name: 'j', resourceVersion: '1' } } }) + '\n');
    }
    if (json) {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ metadata: { resourceVersion: '9' }, items: [{ metadata: { name: 'j' } }] }));
    }
    const u = new URL(url, 'http://x');
    res.writeHead(200, { 'content-type': 'application/vnd.kubernetes.protobuf' });
    res.end(envelope('PodList', u.searchParams.get('continue')
      ? podList([pod({ name: 'c', ns: 'a' })], '8')
      : podList([pod({ name: 'a', ns: 'a' }), pod({ name: 'b', ns: 'a' })], '8', 'more')));
  });
  const names: string[] = [];
  for await (const page of listPages(client, (q) => `/api/v1/pods?${q}`, { pageSize: 2, what: 'list pods', protobuf: decodePod })) names.push(...page.items!.map((p) => p.metadata.name));
  assert.deepEqual(names, ['a', 'b', 'c']);
  json = true;
  const page = await client.request<any>('GET', '/api/v1/pods', { protobuf: (m) => decodeList(m, decodePod) });
  assert.deepEqual(page.items, [{ metadata: { name: 'j' } }]);
  await assert.rejects(client.request('GET', '/bad', { protobuf: (m) => decodeList(m, decodePod), what: 'list pods' }),
    (err: Error) => err instanceof ApiError && err.status === 410 && err.reason === 'Expired' && err.message === 'list pods: HTTP 410: The provided continue parameter is too old');
  await assert.rejects(client.watch('/bad', new AbortController().signal, 30_000, undefined, () => {}, decodePod),
    (err: Error) => err instanceof ApiError && err.status === 410 && /too old/.test(err.message));
  const got: any[] = [];
  await client.watch('/watch', new AbortController().signal, 30_000, undefined, (ev) => got.push(ev), decodePod);
  assert.deepEqual(got, [{ type: 'ADDED', object: { metadata: { name: 'j', resourceVersion: '1' } } }]);
});
