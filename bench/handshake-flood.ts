// New TLS connections, one request each, `--connections` at a time for `--seconds`: every
// handshake a full one (node:tls resumes no session unless given one; wrk resumes every other).
// Prints a wrk-like report for bench/wrk.ts. The bearer token comes from AGW_FLOOD_TOKEN.
//   node handshake-flood.js --port P --connections 64 --seconds 7
import { connect } from 'node:tls';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { port: { type: 'string' }, connections: { type: 'string', default: '64' }, seconds: { type: 'string', default: '5' } } });
const port = Number(values.port);
const seconds = Number(values.seconds);
const request = `GET / HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${process.env.AGW_FLOOD_TOKEN ?? ''}\r\nConnection: close\r\n\r\n`;
const times: number[] = [];
let ok = 0, non2xx = 0, errors = 0;
const end = performance.now() + seconds * 1000;

/** One connection: handshake, request, the whole answer; its status. */
const once = () => new Promise<number>((resolve) => {
  const t0 = performance.now();
  let head = '';
  const s = connect({ port, host: '127.0.0.1', rejectUnauthorized: false }, () => s.write(request));
  s.on('data', (c: Buffer) => { if (head.length < 16) head += c.toString('latin1'); });
  s.on('error', () => {});
  s.setTimeout(10_000, () => s.destroy()); // a stalled one counts as an error, not a hung benchmark
  s.on('close', () => {
    times.push(performance.now() - t0);
    resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0));
  });
});

async function loop(): Promise<void> {
  while (performance.now() < end) {
    const status = await once();
    if (status === 0) errors++;
    else if (status < 200 || status > 399) non2xx++;
    else ok++;
  }
}

await Promise.all(Array.from({ length: Number(values.connections) }, loop));
times.sort((a, b) => a - b);
const at = (q: number) => (times[Math.min(times.length - 1, Math.floor(q * times.length))] ?? 0).toFixed(2);
console.log(`    Latency     0.00ms    0.00ms   ${(times.at(-1) ?? 0).toFixed(2)}ms    0.00%`);
console.log(`  Latency Distribution\n     50%    ${at(0.5)}ms\n     99%    ${at(0.99)}ms`);
console.log(`  Socket errors: connect 0, read ${errors}, write 0, timeout 0`);
if (non2xx) console.log(`  Non-2xx or 3xx responses: ${non2xx}`);
console.log(`Requests/sec: ${((ok + non2xx) / seconds).toFixed(2)}`);
