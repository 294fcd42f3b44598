// What reading frame headers costs the session relay, per byte, for the frame sizes a client
// chooses (a hostile one sends the smallest). Anchor, measured in the same run: the same bytes
// sent over a loopback TCP connection in this process (what relaying them costs at the least,
// before TLS).
//   node dist/bench/frame-watch.js
import { once } from 'node:events';
import { connect, createServer, type AddressInfo } from 'node:net';
import { FrameWatch, type FrameProtocol } from '../src/dataplane/session.js';

const fill = (frame: Buffer) => Buffer.concat(Array(Math.floor(65536 / frame.length)).fill(frame));
const cases: [string, FrameProtocol, Buffer][] = [
  ['WebSocket ping, 2 B frames', 'websocket', fill(Buffer.from([0x89, 0]))],
  ['WebSocket masked ping, 6 B', 'websocket', fill(Buffer.from([0x89, 0x80, 1, 2, 3, 4]))],
  ['WebSocket data, 1 KiB frames', 'websocket', fill(Buffer.concat([Buffer.from([0x82, 126, 4, 0]), Buffer.alloc(1024)]))],
  ['SPDY PING, 12 B frames', 'spdy', fill(Buffer.from([0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]))],
  ['SPDY in masked WebSocket, 16 KiB', 'websocket-spdy', fill(Buffer.concat([Buffer.from([0x82, 0xfe, 0x40, 0x00, 1, 2, 3, 4]), Buffer.alloc(16384)]))],
];

function rate(work: (c: Buffer) => void, c: Buffer): number {
  const start = performance.now();
  let bytes = 0;
  while (performance.now() - start < 1000) for (let k = 0; k < 20; k++) { work(c); bytes += c.length; }
  return bytes / ((performance.now() - start) / 1000) / 1e6;
}

/** MB/s of 64 KiB chunks through a loopback connection, for one second. */
async function loopback(): Promise<number> {
  let received = 0;
  const server = createServer((s) => s.on('data', (d: Buffer) => { received += d.length; }));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const c = connect((server.address() as AddressInfo).port, '127.0.0.1');
  await once(c, 'connect');
  const chunk = Buffer.alloc(65536, 1);
  const start = performance.now();
  while (performance.now() - start < 1000) if (!c.write(chunk)) await once(c, 'drain');
  const mbs = received / ((performance.now() - start) / 1000) / 1e6;
  c.destroy();
  server.close();
  return mbs;
}

const tcp = await loopback();
console.log(`anchor: loopback TCP in this process ${tcp.toFixed(0)} MB/s`);
console.log('case                                 MB/s  ratio to the anchor');
for (const [name, protocol, chunk] of cases) {
  const w = new FrameWatch(protocol);
  const watched = rate((c) => w.feed(c), chunk);
  console.log(`${name.padEnd(34)} ${watched.toFixed(0).padStart(7)} ${(watched / tcp).toFixed(2).padStart(6)}`);
}
