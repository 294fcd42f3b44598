// The test-host harness: upstreams in network namespaces at 198.18.0.0/15 addresses, reachable
// from the root namespace only through the harness's bridge, and removed without a trace.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import WebSocket from 'ws';
import { makeCA, makeLeaf } from '../support/certs.js';
import { assertRoutesLocally, createTestNet, startServer, type TestNet, type TestServer } from '../support/netns.js';

let net: TestNet;
let servers: TestServer[] = [];
const agent = new Agent();

/** Names of this machine's network namespaces and links that belong to test net `id`. */
function leftovers(id: string): string[] {
  const ns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').map((l) => l.split(' ')[0]!);
  const links = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).split('\n').map((l) => l.split(': ')[1]?.split('@')[0] ?? '');
  return [...ns, ...links].filter((n) => n === `agwbr${id}` || n.startsWith(`agw${id}h`) || n.startsWith(`agw${id}v`));
}

async function getJson(url: string, init: { method?: string; body?: string; headers?: Record<string, string>; dispatcher?: Agent } = {}) {
  assertRoutesLocally(new URL(url).hostname, net.dev);
  const res = await request(url, { dispatcher: init.dispatcher ?? agent, method: (init.method ?? 'GET') as any, body: init.body, headers: init.headers });
  const text = await res.body.text();
  return { status: res.statusCode, body: text ? JSON.parse(text) : undefined };
}

before(async () => {
  net = await createTestNet({ hosts: 3 });
  servers = await Promise.all(net.hosts.map((h) => startServer(h)));
});

after(async () => {
  await agent.close();
  await net?.destroy();
});

test('three hosts in their own namespaces, each answering /whoami from the root namespace', async () => {
  assert.match(net.subnet, /^198\.(18|19)\.\d+\.0\/24$/);
  assert.equal(net.hosts.length, 3);
  assert.equal(new Set(net.hosts.map((h) => h.ip)).size, 3);
  for (const s of servers) {
    const r = await getJson(`${s.url}/whoami`, { headers: { 'x-probe': s.name } });
    assert.equal(r.status, 200);
    assert.equal(r.body.name, s.host.name);
    assert.equal(r.body.path, '/whoami');
    assert.equal(r.body.method, 'GET');
    assert.equal(r.body.headers['x-probe'], s.name);
  }
});

test('assertRoutesLocally accepts only addresses routed straight through the bridge', () => {
  for (const h of net.hosts) assertRoutesLocally(h.ip, net.dev);
  // only `ip route get` is consulted; nothing is sent to any of these
  assert.throws(() => assertRoutesLocally('192.0.2.1', net.dev), /outside 198\.18\.0\.0\/15/);
  assert.throws(() => assertRoutesLocally('8.8.8.8', net.dev), /outside 198\.18\.0\.0\/15/);
  const [, o2, r] = /^198\.(\d+)\.(\d+)\./.exec(net.hostIp)!;
  const elsewhere = `198.${o2 === '18' ? 19 : 18}.${r}.11`; // in range, but not on this net
  assert.throws(() => assertRoutesLocally(elsewhere, net.dev), /does not route via/);
  assert.throws(() => assertRoutesLocally(net.hosts[0]!.ip, 'eth0'), /does not route via eth0/);
  assert.throws(() => assertRoutesLocally('not-an-ip', net.dev), /not an IPv4 address/);
});

test('the test host server: echo, POST length, /status, /slow, WebSocket echo, refused upgrade', async () => {
  const s = servers[0]!;
  const echo = await getJson(`${s.url}/some/rewritten/path?q=1`, { method: 'DELETE' });
  assert.deepEqual([echo.status, echo.body.method, echo.body.path], [200, 'DELETE', '/some/rewritten/path?q=1']);
  const post = await getJson(`${s.url}/upload`, { method: 'POST', body: 'x'.repeat(100_000) });
  assert.equal(post.body.bodyLength, 100_000);
  assert.equal((await getJson(`${s.url}/status/418`)).status, 418);
  assert.equal((await getJson(`${s.url}/status/204`)).status, 204);
  const t0 = Date.now();
  assert.equal((await getJson(`${s.url}/slow?ms=300`)).status, 200);
  assert.ok(Date.now() - t0 >= 290);

  const ws = new WebSocket(`ws://${s.host.ip}:${s.port}/ws`);
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  const reply = new Promise<string>((resolve) => ws.once('message', (d) => resolve(d.toString())));
  ws.send('hello');
  assert.equal(await reply, 'hello');
  ws.close();

  const refused = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = httpRequest(`${s.url}/upgrade-refuse`, { headers: { connection: 'Upgrade', upgrade: 'websocket' } });
    req.once('upgrade', () => reject(new Error('unexpected 101')));
    req.once('response', (res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.once('error', reject);
    req.end();
  });
  assert.equal(refused.status, 200);
  assert.equal(JSON.parse(refused.body).path, '/upgrade-refuse');
});

test('https when given a certificate; addHost/removeHost', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'agw-netns-certs-'));
  try {
    const extra = await net.addHost();
    const ca = makeCA(dir, 'ca');
    const leaf = makeLeaf(dir, ca, 'host', { cn: extra.name, ips: [extra.ip] });
    const s = await startServer(extra, { port: 8443, name: 'tls-host', tls: { certFile: leaf.certFile, keyFile: leaf.keyFile } });
    assert.match(s.url, /^https:/);
    const tlsAgent = new Agent({ connect: { ca: ca.cert } });
    try {
      const r = await getJson(`${s.url}/whoami`, { dispatcher: tlsAgent });
      assert.equal(r.body.name, 'tls-host');
    } finally {
      await tlsAgent.close();
    }
    await net.removeHost(extra);
    assert.equal(net.hosts.length, 3);
    assert.equal(s.proc.child.exitCode !== null || s.proc.child.signalCode !== null, true);
    assert.ok(!execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).includes(extra.name));
    assert.throws(() => assertRoutesLocally(extra.ip, 'eth0'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Runs a child that creates a 1-host net and prints its id, then `then` (crash or hang). */
function childNet(then: 'throw' | 'hang'): { id: Promise<string>; child: ReturnType<typeof spawn> } {
  const mod = new URL('../support/netns.js', import.meta.url).href;
  const code = `import { createTestNet, startServer } from ${JSON.stringify(mod)};
    const n = await createTestNet({ hosts: 1 }); await startServer(n.hosts[0]);
    console.log(n.id);
    ${then === 'throw' ? "throw new Error('boom');" : 'setInterval(() => {}, 1000);'}`;
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', process.execPath, '--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
  const id = new Promise<string>((resolve, reject) => {
    let out = '';
    let err = '';
    child.stderr!.on('data', (d) => { err += d; });
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /^(\d+x\d+)$/m.exec(out);
      if (m) resolve(m[1]!);
    });
    child.once('exit', () => reject(new Error(`child exited before creating a net: ${err}`)));
  });
  return { id, child };
}

test('a test process that crashes leaves nothing behind', async () => {
  const { id, child } = childNet('throw');
  const got = await id;
  const code = await new Promise((resolve) => child.once('exit', resolve));
  assert.notEqual(code, 0);
  assert.deepEqual(leftovers(got), []);
});

test('a net left by a SIGKILLed test process is swept by the next createTestNet', async () => {
  const { id, child } = childNet('hang');
  const got = await id;
  assert.notDeepEqual(leftovers(got), []);
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('exit', resolve));
  const other = await createTestNet();
  try {
    // the swept subnet is free again: `other` claims it 1 time in 512, and then the bridge is its own
    if (other.id !== got) assert.deepEqual(leftovers(got), []);
    else assert.deepEqual(leftovers(got), [`agwbr${got}`]);
  } finally {
    await other.destroy();
  }
  assert.deepEqual(leftovers(got), []);
});

test('destroy removes every namespace, veth and the bridge', async () => {
  const id = net.id;
  const ips = net.hosts.map((h) => h.ip);
  assert.equal(leftovers(id).length, 1 + 3 + 3); // bridge + netns + veths
  await net.destroy();
  assert.deepEqual(leftovers(id), []);
  for (const s of servers) assert.ok(s.proc.child.exitCode !== null || s.proc.child.signalCode !== null);
  for (const a of ips) assert.throws(() => assertRoutesLocally(a, `agwbr${id}`), /does not route via/);
  await net.destroy(); // idempotent
});
