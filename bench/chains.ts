// Client certificate chains and TLS handshakes that are metered (stop 33), measured side by side
// in one run: keep-alive req/s over a listener with a client CA (metered: its bytes pass through
// JavaScript) and one without (native TLS), and how long costly client chains (RSA-3072 links with
// a ~2,400-bit public exponent, ~6 ms a signature check; sect571r1 links, ~4 ms in ~370 bytes)
// hold the event loop. The listeners run in
// bench/chains-server.ts pinned to CPU 1; wrk and the clients on CPU 0.
//   node dist/bench/chains.js [--rounds 3] [--seconds 5] [--connections 64]
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { parseArgs } from 'node:util';
import { makeCA, makeCostlyChain, makeLeaf } from '../test/support/certs.js';
import { startProc } from '../test/support/procs.js';
import { wrk, type WrkResult } from './wrk.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '3' }, seconds: { type: 'string', default: '5' }, connections: { type: 'string', default: '64' } } });
const rounds = Number(values.rounds), seconds = Number(values.seconds), connections = Number(values.connections);
const dir = mkdtempSync(join(tmpdir(), 'agw-chains-'));
const listener = makeLeaf(dir, makeCA(dir, 'ca'), 'listener', { cn: 'gw', dnsNames: ['gw'] });
writeFileSync(join(dir, 'listener.crt'), listener.cert);
writeFileSync(join(dir, 'listener.key'), listener.key);
makeCA(dir, 'clients');
console.log('making chains of 69 costly RSA links and 40 sect571r1 links…');
const chains = { rsa: makeCostlyChain(dir, 69), sect571r1: makeCostlyChain(mkdtempSync(join(tmpdir(), 'agw-chains-')), 40, 'sect571r1') };
const pemsOf = (c: { chain: string }) => c.chain.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n/g)!;
const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
const token = `${b64({ alg: 'RS256' })}.${b64({ aud: ['gw'], exp: Math.floor(Date.now() / 1000) + 3600, sub: 'bench' })}.sig`; // shaped as a JWT; the server's reviewer takes it
const freePort = async () => {
  const s = createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const p = (s.address() as { port: number }).port;
  s.close();
  return p;
};
const [pa, pb] = [await freePort(), await freePort()];
const server = startProc('taskset', ['-c', '1', process.execPath, join(import.meta.dirname, 'chains-server.js'), dir, token, String(pa), String(pb)], join(dir, 'server.log'));
let out = '';
server.child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
for (let i = 0; i < 100 && !out.includes('{'); i++) await new Promise((r) => setTimeout(r, 100));
const ports = JSON.parse(/\{.*\}/.exec(out)![0]) as { a: number; b: number };

/** The event loop's largest delay (ms) while `fn` runs. */
async function held(fn: () => Promise<unknown>): Promise<number> {
  server.child.kill('SIGUSR2');
  await new Promise((r) => setTimeout(r, 200));
  await fn();
  await new Promise((r) => setTimeout(r, 300));
  const before = out.length;
  server.child.kill('SIGUSR2');
  for (let i = 0; i < 50 && !/maxdelay/.test(out.slice(before)); i++) await new Promise((r) => setTimeout(r, 20));
  return Number(/maxdelay ([\d.]+)/.exec(out.slice(before))![1]);
}

/** `k` clients at once, each sending a chain of `links` costly links and one request: their answers. */
const clients = (kind: keyof typeof chains, links: number, k: number) => Promise.all(Array.from({ length: k }, () => new Promise<string>((resolve) => {
  const c = tlsConnect({ port: ports.a, host: '127.0.0.1', rejectUnauthorized: false, key: chains[kind].key, cert: pemsOf(chains[kind]).slice(0, links + 1).join('') }, () => {
    c.write(`GET /.well-known/access-gateway HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${token}\r\n\r\n`);
  });
  c.on('data', (d: Buffer) => { resolve(d.toString('latin1').split('\r\n')[0]!.replace('HTTP/1.1 ', '')); c.destroy(); });
  c.on('error', () => {});
  c.on('close', () => resolve('closed'));
})));

const rows: string[] = [];
const ratios: number[] = [];
for (let r = 1; r <= rounds; r++) {
  const url = (port: number) => `https://127.0.0.1:${port}/.well-known/access-gateway`;
  const o = { seconds, connections, cpu: 0, headers: { authorization: `Bearer ${token}` } };
  const got: Partial<Record<'a' | 'b', WrkResult>> = {};
  for (const k of r % 2 ? ['a', 'b'] as const : ['b', 'a'] as const) got[k] = await wrk(url(ports[k]), o); // in turn, first
  const [metered, native] = [got.a!, got.b!];
  ratios.push(metered.rps / native.rps);
  rows.push(`| ${r} | ${native.rps.toFixed(0)} | ${metered.rps.toFixed(0)} | ${(metered.rps / native.rps).toFixed(2)}× | ${native.p99.toFixed(1)} / ${metered.p99.toFixed(1)} |`);
}
console.log(`\nkeep-alive GETs over TLS, ${connections} connections, ${seconds} s a case:`);
console.log('| round | native req/s (no clientCA) | metered req/s (clientCA) | metered / native | p99 ms native / metered |\n| ---: | ---: | ---: | ---: | --- |');
for (const row of rows) console.log(row);
ratios.sort((x, y) => x - y);
console.log(`metered / native: ${ratios[Math.floor(ratios.length / 2)]!.toFixed(2)}× (rounds ${ratios[0]!.toFixed(2)}–${ratios.at(-1)!.toFixed(2)})`);

console.log('\ncostly client chains at the clientCA listener (the event loop\'s largest delay meanwhile):');
console.log('| clients | answers | loop held ms |\n| --- | --- | ---: |');
for (const [kind, links, k] of [['rsa', 69, 1], ['rsa', 8, 1], ['rsa', 3, 1], ['rsa', 3, 8], ['sect571r1', 40, 1], ['sect571r1', 32, 1], ['sect571r1', 24, 1], ['sect571r1', 24, 8]] as const) {
  let answers: string[] = [];
  const ms = await held(async () => { answers = await clients(kind, links, k); });
  console.log(`| ${k} × ${links} ${kind} links | ${[...new Set(answers)].join(', ')} | ${ms} |`);
}
server.child.kill();
