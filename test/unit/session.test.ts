// The session relay's frame reading (pure): WebSocket and SPDY/3.1 frame boundaries across chunks,
// pings that are not activity, the first SPDY stream, what reading headers costs, and what a
// session is about.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Duplex } from 'node:stream';
import { FrameWatch, Session, closingFrame, frameProtocol, sessionTarget, spdyErrorFrame } from '../../src/dataplane/session.js';
import type { Turns } from '../../src/dataplane/upstream.js';
import { PausedAnswers } from '../../src/dataplane/namespace-budget.js';

/** A WebSocket frame: FIN, `opcode`, `payload`, masked when from a client. */
let keys = 0;
function ws(opcode: number, payload: Buffer, masked = false): Buffer {
  const k = ++keys; // each frame its own key, as clients do
  const key = [k & 0xff, (k * 7 + 1) & 0xff, (k * 13 + 2) & 0xff, (k * 31 + 3) & 0xff];
  if (masked) payload = Buffer.from(payload.map((b, i) => b ^ key[i & 3]!));
  const len = payload.length;
  const ext = len < 126 ? Buffer.alloc(0) : len < 65536 ? Buffer.alloc(2) : Buffer.alloc(8);
  if (len >= 126 && len < 65536) ext.writeUInt16BE(len);
  if (len >= 65536) ext.writeBigUInt64BE(BigInt(len));
  const head = Buffer.from([0x80 | opcode, (masked ? 0x80 : 0) | (len < 126 ? len : len < 65536 ? 126 : 127)]);
  return Buffer.concat([head, ext, masked ? Buffer.from(key) : Buffer.alloc(0), payload]);
}

/** A SPDY frame: data on `stream`, or a control frame of `type`. */
function spdy(kind: { stream: number } | { type: number }, payload: Buffer): Buffer {
  const h = Buffer.alloc(8);
  if ('stream' in kind) h.writeUInt32BE(kind.stream);
  else h.writeUInt32BE(((0x8003 << 16) | kind.type) >>> 0);
  h.writeUInt32BE(payload.length, 4);
  return Buffer.concat([h, payload]);
}

/** Feeds `bytes` in pieces of `size`: whether any piece held data, and whether it ends at a boundary. */
function feedIn(w: FrameWatch, bytes: Buffer, size: number): boolean {
  let data = false;
  for (let i = 0; i < bytes.length; i += size) data = w.feed(bytes.subarray(i, i + size)).data || data;
  return data;
}

test('WebSocket: pings and pongs are not activity, data is, in any chunking and with every length form', () => {
  for (const size of [1, 3, 7, 1 << 20]) {
    for (const masked of [false, true]) {
      const w = new FrameWatch('websocket');
      assert.equal(feedIn(w, Buffer.concat([ws(0x9, Buffer.from('hi'), masked), ws(0xa, Buffer.alloc(0), masked)]), size), false);
      assert.ok(w.atBoundary);
      for (const n of [5, 300, 70_000]) {
        assert.equal(feedIn(w, ws(0x2, Buffer.alloc(n, 7), masked), size), true, `${n} bytes in pieces of ${size}`);
        assert.ok(w.atBoundary);
        assert.equal(feedIn(w, ws(0x9, Buffer.alloc(0), masked), size), false);
      }
    }
  }
});

test('SPDY: PING is not activity; data and other control frames are; the first SYN_STREAM names the first stream', () => {
  const w = new FrameWatch('spdy');
  assert.equal(feedIn(w, spdy({ type: 6 }, Buffer.from([0, 0, 0, 1])), 3), false);
  const syn = Buffer.concat([Buffer.from([0, 0, 0, 5]), Buffer.alloc(20, 1)]);
  assert.equal(feedIn(w, Buffer.concat([spdy({ type: 1 }, syn), spdy({ type: 1 }, Buffer.concat([Buffer.from([0, 0, 0, 7]), Buffer.alloc(4)]))]), 2), true);
  assert.equal(w.firstStream, 5);
  assert.equal(feedIn(w, spdy({ stream: 5 }, Buffer.alloc(1000)), 1), true);
  // a frame's payload in a later chunk is activity too, a PING's is not
  const big = spdy({ stream: 5 }, Buffer.alloc(100));
  w.feed(big.subarray(0, 10));
  assert.equal(w.feed(big.subarray(10)).data, true);
  const ping = spdy({ type: 6 }, Buffer.from([0, 0, 0, 3]));
  w.feed(ping.subarray(0, 9));
  assert.equal(w.feed(ping.subarray(9)).data, false);
  assert.ok(w.atBoundary);
});

test('SPDY tunnelled in WebSocket (port-forward): a message is activity only if its SPDY frames are, masked or not', () => {
  for (const masked of [false, true]) {
    for (const size of [1, 5, 1 << 20]) {
      const w = new FrameWatch('websocket-spdy');
      const ping = spdy({ type: 6 }, Buffer.from([0, 0, 0, 1]));
      assert.equal(feedIn(w, ws(0x2, ping, masked), size), false, `ping, masked ${masked}, pieces of ${size}`);
      // a SPDY data frame split over two WebSocket messages, then two pings in one message
      const frame = spdy({ stream: 3 }, Buffer.alloc(300, 9));
      assert.equal(feedIn(w, ws(0x2, frame.subarray(0, 100), masked), size), true);
      assert.equal(feedIn(w, ws(0x2, frame.subarray(100), masked), size), true, 'the rest of a data frame');
      assert.equal(feedIn(w, ws(0x2, Buffer.concat([ping, ping]), masked), size), false);
      assert.equal(feedIn(w, ws(0x9, Buffer.alloc(0), masked), size), false);
      assert.ok(w.atBoundary);
    }
  }
  assert.equal(frameProtocol('websocket', 'SPDY/3.1+portforward.k8s.io'), 'websocket-spdy');
  assert.equal(frameProtocol('websocket', 'v5.channel.k8s.io'), 'websocket');
});

test('SPDY tunnelled in masked WebSocket: frames split over messages at odd offsets are read through each message\'s mask', () => {
  for (const size of [1, 3, 7, 1 << 20]) {
    const w = new FrameWatch('websocket-spdy');
    const ping = spdy({ type: 6 }, Buffer.from([0, 0, 0, 1]));
    const split = (f: Buffer) => Buffer.concat([ws(0x2, f.subarray(0, 3), true), ws(0x2, f.subarray(3, 9), true), ws(0x2, f.subarray(9), true)]);
    assert.equal(feedIn(w, Buffer.concat([split(ping), split(ping)]), size), false, `pings, pieces of ${size}`);
    assert.equal(feedIn(w, split(spdy({ stream: 3 }, Buffer.alloc(5))), size), true, `data, pieces of ${size}`);
    assert.ok(w.atBoundary);
  }
});

/** `count` copies of `frame`. */
const many = (frame: Buffer, count: number) => Buffer.concat(Array(count).fill(frame));

test('a frame watch owes a start per 4096 header bytes read, each frame counting 4 more; payload costs nothing past its pieces', () => {
  const w = new FrameWatch('websocket');
  w.feed(many(ws(0x9, Buffer.alloc(0)), 32768)); // 64 KiB of 2-byte pings: 32768 * (2 + 4)
  assert.equal(w.owed(), 48);
  assert.equal(w.owed(), 0, 'counted once');
  const big = ws(0x2, Buffer.alloc(1 << 20), true);
  for (let i = 0; i < big.length; i += 65536) w.feed(big.subarray(i, i + 65536));
  assert.equal(w.owed(), 0, '1 MiB of data in one frame');
  // less than a start is kept for later: SPDY PINGs of 12 bytes count 12 each
  const s = new FrameWatch('spdy');
  const ping = spdy({ type: 6 }, Buffer.from([0, 0, 0, 1]));
  s.feed(many(ping, 341)); // 4092
  assert.equal(s.owed(), 0);
  s.feed(ping.subarray(0, 5));
  assert.equal(s.owed(), 0, 'half a header');
  s.feed(ping.subarray(5));
  assert.equal(s.owed(), 1);
  s.feed(many(ping, 341)); // 8 left + 4092
  assert.equal(s.owed(), 1);
});

test('SPDY tunnelled in WebSocket: the tunnelled headers are owed too', () => {
  const w = new FrameWatch('websocket-spdy');
  // 3640 masked messages of one PING each: (6 + 4) + (8 + 4), and 4 for reading the message's payload
  w.feed(many(ws(0x2, spdy({ type: 6 }, Buffer.from([0, 0, 0, 1])), true), 3640));
  assert.equal(w.owed(), Math.floor(3640 * 26 / 4096));
  // 1-byte messages: each costs its reading, though it holds no whole SPDY header
  const bytes = new FrameWatch('websocket-spdy');
  const ping = spdy({ type: 6 }, Buffer.from([0, 0, 0, 1]));
  bytes.feed(many(Buffer.concat([...ping].map((b) => ws(0x2, Buffer.from([b]), true))), 300));
  assert.equal(bytes.owed(), Math.floor(300 * (12 * (6 + 4 + 4) + 8 + 4) / 4096));
});

/** One side of a relay: what `push`es comes out as its data; what the relay writes is kept. */
function side(): Duplex & { written: number } {
  const d = new Duplex({ read() {}, write(chunk: Buffer, _e, cb) { d.written += chunk.length; cb(); } }) as Duplex & { written: number };
  d.written = 0;
  return d;
}

test('a session charges its namespace each way for the frame headers it reads, past its pieces\' bytes; bulk frames cost nothing more', async () => {
  const charged: number[] = [];
  const turns: Turns = { tryStart: () => true, start: () => {}, charge: () => {}, wait: () => {}, chargeStarts: (ns, n) => { assert.equal(ns, 'team-a'); charged.push(n); } };
  const client = side(), upstream = side();
  const s = new Session(client, upstream, 'websocket', false, 60_000, () => {}, { turns, namespace: 'team-a', m: { pieceDeferred: () => {} } });
  s.start(Buffer.alloc(0), Buffer.alloc(0));
  const flush = () => new Promise((r) => setImmediate(r));
  const bulk = ws(0x2, Buffer.alloc(1 << 20), true);
  for (let i = 0; i < bulk.length; i += 65536) client.push(bulk.subarray(i, i + 65536));
  upstream.push(ws(0x2, Buffer.alloc(1 << 20)));
  await flush();
  assert.deepEqual([charged, upstream.written, client.written], [[], bulk.length, (1 << 20) + 10]);
  client.push(many(ws(0x9, Buffer.alloc(0), true), 10922)); // 64 KiB of 6-byte masked pings: 10922 * (6 + 4)
  await flush();
  assert.deepEqual(charged, [26], 'from the client');
  upstream.push(many(ws(0x9, Buffer.alloc(0)), 32768)); // 2-byte pings: 32768 * (2 + 4)
  await flush();
  assert.deepEqual(charged, [26, 48], 'from the upstream');
  client.destroy();
  upstream.destroy();
});

test('feed can stop at the first frame boundary (where a closing frame may go)', () => {
  const w = new FrameWatch('websocket');
  const a = ws(0x2, Buffer.alloc(10)), b = ws(0x2, Buffer.alloc(10));
  assert.equal(w.feed(a.subarray(0, 5)).used, 5);
  assert.equal(w.atBoundary, false);
  const rest = Buffer.concat([a.subarray(5), b]);
  assert.equal(w.feed(rest, true).used, a.length - 5);
  assert.ok(w.atBoundary);
  assert.equal(new FrameWatch('opaque').feed(rest, true).used, rest.length);
});

test('closing frames: a WebSocket close with code and reason; a SPDY Status on the error stream with FIN', () => {
  const c = closingFrame('websocket', 1008, 'the session was idle for 7 s')!;
  assert.equal(c[0], 0x88);
  assert.equal(c[1], c.length - 2);
  assert.equal(c.readUInt16BE(2), 1008);
  assert.equal(c.subarray(4).toString(), 'the session was idle for 7 s');
  assert.equal(closingFrame('spdy', 1001, 'x'), undefined);
  const s = spdyErrorFrame(1, 'the gateway is shutting down', 'ServiceUnavailable');
  assert.equal(s.readUInt32BE(0), 1);
  assert.equal(s[4], 0x01);
  assert.equal(s.readUInt32BE(4) & 0xffffff, s.length - 8);
  assert.deepEqual(JSON.parse(s.subarray(8).toString()), { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'the gateway is shutting down', reason: 'ServiceUnavailable' });
});

test('what a session is about: pod subresources from the path and query, anything else an upgrade', () => {
  assert.deepEqual(sessionTarget('/api/v1/namespaces/team-a/pods/app/exec?command=sh&command=-c&command=echo%20hi&container=main&stdout=true'),
    { kind: 'exec', pod: 'team-a/app', container: 'main', command: ['sh', '-c', 'echo hi'] });
  assert.deepEqual(sessionTarget('/api/v1/namespaces/team-a/pods/app/attach?stdin=true'), { kind: 'attach', pod: 'team-a/app' });
  assert.deepEqual(sessionTarget('/api/v1/namespaces/team-a/pods/app/portforward?ports=80&ports=443'), { kind: 'portforward', pod: 'team-a/app', ports: ['80', '443'] });
  assert.deepEqual(sessionTarget('/api/v1/namespaces/team-a/pods/app/portforward'), { kind: 'portforward', pod: 'team-a/app' });
  assert.deepEqual(sessionTarget('/chat/socket?x=1'), { kind: 'upgrade' });
  assert.equal(frameProtocol('WebSocket'), 'websocket');
  assert.equal(frameProtocol('SPDY/3.1'), 'spdy');
  assert.equal(frameProtocol('h2c'), 'opaque');
});

// A session whose reader takes nothing holds the kernel's socket buffers as a paused answer does:
// counted among its namespace's paused streams while it is full, cut past their bound, and cut
// when it stays full for the idle time (data flowing the other way kept it from being idle).
test('a session whose reader is full is counted among its namespace\'s paused streams: past the bound the longest waiting ends; it drains and gives its place back; it ends when full for the idle time', async () => {
  const turns: Turns = { tryStart: () => true, start: () => {}, charge: () => {}, wait: () => {}, chargeStarts: () => {} };
  const paused = new PausedAnswers(1);
  /** A client that takes what is written only when `drainAll` is called. */
  const slow = () => {
    const waiting: Array<() => void> = [];
    const d = new Duplex({ read() {}, write(_c: Buffer, _e, cb) { waiting.push(cb); } }) as Duplex & { drainAll(): void };
    d.drainAll = () => { for (const cb of waiting.splice(0)) cb(); };
    return d;
  };
  const ended: string[] = [];
  const open = (name: string, idleMs = 60_000) => {
    const client = slow(), upstream = side();
    const s = new Session(client, upstream, 'websocket', false, idleMs, (_s, reason) => ended.push(`${name} ${reason}`), { turns, namespace: 'team-a', m: { pieceDeferred: () => {} }, paused });
    s.start(Buffer.alloc(0), Buffer.alloc(0));
    return { client, upstream, s };
  };
  const flush = () => new Promise((r) => setImmediate(r));
  const a = open('a');
  a.upstream.push(ws(0x2, Buffer.alloc(64 * 1024)));
  await flush();
  assert.equal(paused.waiting('team-a'), 1, 'its client is full');
  a.client.drainAll();
  await flush();
  assert.equal(paused.waiting('team-a'), 0, 'drained: its place given back');
  a.upstream.push(ws(0x2, Buffer.alloc(64 * 1024)));
  await flush();
  const b = open('b');
  b.upstream.push(ws(0x2, Buffer.alloc(64 * 1024)));
  await flush();
  assert.deepEqual([ended, paused.waiting('team-a'), a.s.finished, b.s.finished], [['a idle'], 1, true, false], 'past the bound of 1: the longest waiting ended');
  b.s.end('shutdown', 1001, 'bye', 'ServiceUnavailable');
  b.client.drainAll();
  await flush();
  // full for its idle time (data flowing the other way all along): ended
  const c = open('c', 200);
  c.upstream.push(ws(0x2, Buffer.alloc(64 * 1024)));
  await flush();
  assert.equal(paused.waiting('team-a'), 1);
  const keepBusy = setInterval(() => c.client.push(ws(0x2, Buffer.alloc(16), true)), 20);
  try {
    for (let i = 0; i < 100 && !c.s.finished; i++) await new Promise((r) => setTimeout(r, 20));
  } finally {
    clearInterval(keepBusy);
  }
  assert.ok(c.s.finished, 'ended once full for its idle time');
  assert.equal(paused.waiting('team-a'), 0);
  // a review: the client sending once the upstream has gone (its side is open 2 s more) took a
  // place that was never given back
  const d = open('d');
  d.upstream.destroy();
  await flush();
  assert.ok(d.s.finished);
  for (let i = 0; i < 4; i++) d.client.push(ws(0x2, Buffer.alloc(32 * 1024), true));
  await flush();
  assert.equal(paused.waiting('team-a'), 0);
  d.client.destroy();
});
