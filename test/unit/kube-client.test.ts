// The operator's apiserver client against a local HTTP server standing in for the apiserver's
// framing (pure client logic: answers cut at a size, watch events in pieces).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeClient, TooLarge } from '../../src/kube/client.js';
import { silentLogger } from '../../src/observability/logger.js';

async function serve(t: TestContext, handle: (path: string, res: ServerResponse) => void): Promise<KubeClient> {
  const server = createServer((req, res) => handle(req.url!, res));
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
    // pieces of 1 to 4,099 bytes, so lines, and the two bytes of é, are cut anywhere
    let at = 0, n = 1;
    const next = () => {
      if (at >= lines.length) return res.end();
      const len = (n = (n * 7919) % 4099 + 1);
      res.write(lines.subarray(at, at + len));
      at += len;
      setImmediate(next);
    };
    next();
  });
  const got: unknown[] = [];
  await client.watch('/w', new AbortController().signal, 30_000, undefined, (ev) => got.push(ev));
  assert.equal(got.length, 4);
  assert.deepEqual(got, [big, small(3), small(4), big]);
});
