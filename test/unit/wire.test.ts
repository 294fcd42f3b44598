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

test('what a connection owed when it closed (cut, failed, idle) is charged then, in whole starts (a head alone is not)', async () => {
  const owner = {};
  const closed: number[] = [];
  const conn = () => {
    const s = new PassThrough({ readableHighWaterMark: 1024 * KiB });
    meterReads(s, owner, 'x', (n) => closed.push(n));
    return s;
  };
  const shut = async (s: PassThrough) => { s.on('error', () => {}).destroy(); await new Promise((r) => s.once('close', r)); };
  const a = conn();
  a.write(Buffer.alloc(40 * KiB));
  a.read();
  wireOwed(owner, null); // a head: nothing charged yet
  await shut(a);
  assert.deepEqual(closed, [2], '40 KiB: two starts');
  const b = conn(); // a head and its body, then Connection: close
  b.write(Buffer.alloc(KiB));
  b.read();
  wireOwed(owner, null);
  wireOwed(owner, 900);
  await shut(b);
  assert.deepEqual(closed, [2], 'less than 16 KiB left: not charged');
});

test('what the parser gives back moves the bound\'s mark back too: a read never takes more than 64 KiB past progress', () => {
  const { s, owner, take } = metered();
  take(60 * KiB);
  wireOwed(owner, 0); // progress at 60 KiB taken
  s.unshift(Buffer.alloc(50 * KiB)); // paused: 50 KiB of it read again later
  s.write(Buffer.alloc(100 * KiB));
  assert.equal(s.read()?.length, maxSilentBytes);
});
