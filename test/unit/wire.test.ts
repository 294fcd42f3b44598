// The count of what a connection's parser reads (wire.ts), on a stream read as undici reads its sockets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { maxSilentBytes, meterReads, wireOwed } from '../../src/dataplane/wire.js';

const KiB = 1024;
function metered() {
  const s = new PassThrough({ readableHighWaterMark: 1024 * KiB });
  const owner = {};
  meterReads(s, owner, 'Service team-a/b endpoint 10.0.0.1:80', () => {});
  /** Writes `n` bytes and reads them as undici does (`read()`, no size). */
  const take = (n: number) => {
    s.write(Buffer.alloc(n));
    return s.read() as Buffer | null;
  };
  return { s, owner, take };
}

test('what was read and not handed on as body is owed at a start per 16 KiB; what the parser gives back is not counted', () => {
  const { s, owner, take } = metered();
  assert.equal(take(40 * KiB)?.length, 40 * KiB);
  s.unshift(Buffer.alloc(20 * KiB)); // paused: the rest is read again later
  assert.equal(wireOwed(owner, 0), 1, '20 KiB taken, no body');
  assert.equal(wireOwed(owner, 0), 0, 'owed once');
  assert.equal(s.read()?.length, 20 * KiB);
  assert.equal(wireOwed(owner, 20 * KiB), 0, 'all body: nothing owed');
  take(30 * KiB);
  assert.equal(wireOwed({}, 0), 0, 'another pool\'s answer is not this connection\'s');
  assert.equal(wireOwed(owner, 2 * KiB), 2, '30 KiB more, 2 of it body: 4 + 28 = 32 KiB → two starts');
});

test('at 64 KiB read without a head or a body piece the connection fails (a protocol error), the read before stopping at the bound; an answer\'s end is not progress', async () => {
  const { s, owner, take } = metered();
  take(60 * KiB);
  assert.equal(wireOwed(owner, null), 0, 'a head: progress, nothing charged yet');
  s.write(Buffer.alloc(100 * KiB));
  assert.equal(s.read()?.length, maxSilentBytes, 'a read stops at the bound');
  wireOwed(owner, 0, true);
  const failed = new Promise<Error>((r) => s.once('error', r));
  assert.equal(s.read(), null);
  const err = await failed as Error & { code: string };
  assert.equal(err.code, 'AGW_ERR_UPSTREAM_PROTOCOL');
  assert.match(err.message, /^Service team-a\/b endpoint 10\.0\.0\.1:80 sent more than 64 KiB without a head or a body piece/);
  assert.ok(s.destroyed);
});

test('what a connection owed when it closed (cut, failed, idle) is charged then, rounded up', async () => {
  const owner = {};
  const closed: number[] = [];
  const a = new PassThrough({ readableHighWaterMark: 1024 * KiB });
  meterReads(a, owner, 'x', (n) => closed.push(n));
  a.write(Buffer.alloc(40 * KiB));
  a.read();
  wireOwed(owner, null);
  assert.equal(wireOwed(owner, KiB), 2, '39 KiB not body: two starts, 7 KiB owed');
  a.on('error', () => {}).destroy();
  await new Promise((r) => a.once('close', r));
  assert.deepEqual(closed, [1], 'the 7 KiB left: a start');
  const b = new PassThrough();
  meterReads(b, owner, 'x', (n) => closed.push(n));
  b.write(Buffer.alloc(KiB));
  b.read();
  assert.equal(wireOwed(owner, KiB), 0, 'all body');
  b.destroy();
  await new Promise((r) => b.once('close', r));
  assert.deepEqual(closed, [1], 'nothing owed: nothing charged');
});
