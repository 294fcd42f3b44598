// Test hosts in network namespaces: real upstreams at non-loopback addresses (the apiserver
// refuses loopback in EndpointSlices) that only this machine can reach.
// Topology of one TestNet, id `<o2>x<R>` for the subnet 198.<o2>.<R>.0/24 (inside 198.18.0.0/15):
//   root namespace: bridge agwbr<id> with .1/24 (TestNet.hostIp)
//   host n:         netns agw<id>h<n>, eth0 = .(10+n)/24, peered by veth agw<id>v<n> into the bridge
// Hosts get no default route (only the connected /24), so nothing they send can leave the subnet.
// The bridge name is the lock on the subnet; its alias names the owning process so that nets left
// by a SIGKILLed test are swept by the next createTestNet. Everything else is removed on destroy()
// and, synchronously, on process exit or a termination signal.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startProc, type Proc } from './procs.js';

export interface TestHost {
  /** The netns name. */
  name: string;
  ip: string;
  /** Root-namespace device the host is reached through (the bridge). */
  dev: string;
  /** The net's scratch directory (logs). */
  dir: string;
  /** Runs cmd inside the netns; it dies with the test process (pdeathsig) and on stop(). */
  exec(cmd: string, args: string[]): ChildProcess;
  /** Like exec, as a procs.ts Proc logging to logFile. */
  start(cmd: string, args: string[], logFile: string): Proc;
  /** Stops every process started in the host (SIGTERM, then SIGKILL). */
  stop(): Promise<void>;
}

export interface TestNet {
  id: string;
  /** The bridge in the root namespace. */
  dev: string;
  subnet: string;
  /** Root-namespace side address, 198.1x.R.1. */
  hostIp: string;
  dir: string;
  hosts: TestHost[];
  addHost(): Promise<TestHost>;
  removeHost(h: TestHost): Promise<void>;
  /** Removes everything; throws if any namespace or link is left. Idempotent. */
  destroy(): Promise<void>;
}

const RANGE = { base: ipToInt('198.18.0.0'), bits: 15 };
const ALIAS = 'agw-testnet';
const serverScript = fileURLToPath(new URL('./test-host-server.js', import.meta.url));

function ipToInt(a: string): number {
  const p = a.split('.').map(Number);
  if (p.length !== 4 || p.some((n) => !Number.isInteger(n) || n < 0 || n > 255)) throw new Error(`not an IPv4 address: ${a}`);
  return ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0;
}

function inPrefix(addr: number, base: number, bits: number): boolean {
  const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
  return ((addr & mask) >>> 0) === ((base & mask) >>> 0);
}

function overlaps(aBase: number, aBits: number, bBase: number, bBits: number): boolean {
  const bits = Math.min(aBits, bBits);
  return inPrefix(aBase, bBase, bits);
}

function ip(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function ipQuiet(args: string[]): void {
  try { ip(args); } catch { /* already gone */ }
}

/** Throws unless addr is in 198.18.0.0/15 and `ip -4 route get` sends it straight out of dev
 *  (no gateway). Only asks the kernel's routing table; sends nothing. */
export function assertRoutesLocally(addr: string, dev: string): void {
  let n: number;
  try { n = ipToInt(addr); } catch (err) { throw new Error(`refusing test traffic to ${addr}: ${(err as Error).message}`); }
  if (!inPrefix(n, RANGE.base, RANGE.bits)) throw new Error(`refusing test traffic to ${addr}: outside 198.18.0.0/15`);
  let out: string;
  try {
    out = ip(['-4', '-o', 'route', 'get', addr]);
  } catch (err) {
    throw new Error(`refusing test traffic to ${addr}: ip route get failed: ${(err as Error).message}`);
  }
  const t = out.trim().split(/\s+/);
  const devAt = t.indexOf('dev');
  if (t[0] !== addr || t.includes('via') || devAt < 0 || t[devAt + 1] !== dev) {
    throw new Error(`refusing test traffic to ${addr}: it does not route via ${dev} directly: ${out.trim()}`);
  }
}

interface Owned { procs: Set<ChildProcess> }
interface NetState { id: string; bridge: string; dir: string; hosts: Map<string, Owned & { veth: string }>; done: boolean }
const live = new Set<NetState>();

function myPidNs(): string {
  return readlinkSync('/proc/self/ns/pid');
}

/** Synchronous teardown of everything named for `id` (also used on exit and for sweeping). */
function teardownId(id: string, bridge?: string): void {
  for (const line of ip(['netns', 'list']).split('\n')) {
    const ns = line.split(' ')[0];
    if (ns && ns.startsWith(`agw${id}h`)) ipQuiet(['netns', 'del', ns]);
  }
  const links = JSON.parse(ip(['-j', 'link', 'show'])) as { ifname: string }[];
  for (const l of links) if (l.ifname.startsWith(`agw${id}v`)) ipQuiet(['link', 'del', l.ifname]);
  if (bridge) ipQuiet(['link', 'del', bridge]);
}

function teardownSync(s: NetState): void {
  if (s.done) return;
  s.done = true;
  live.delete(s);
  for (const h of s.hosts.values()) for (const c of h.procs) c.kill('SIGKILL');
  for (const [ns, h] of s.hosts) {
    ipQuiet(['link', 'del', h.veth]);
    ipQuiet(['netns', 'del', ns]);
  }
  teardownId(s.id, s.bridge);
  if (!process.env.AGW_KEEP_TEST_DIRS) rmSync(s.dir, { recursive: true, force: true });
}

let hooked = false;
function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => { for (const s of [...live]) teardownSync(s); });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSig = () => {
      for (const s of [...live]) teardownSync(s);
      process.removeListener(sig, onSig);
      // nobody else handles it: die of the signal as we would have without this hook
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on(sig, onSig);
  }
}

/** Removes nets whose owner (same pid namespace) is dead, e.g. after a SIGKILLed test. */
function sweepStale(): void {
  const pidns = myPidNs();
  const bridges = JSON.parse(ip(['-j', 'link', 'show', 'type', 'bridge'])) as { ifname: string; ifalias?: string }[];
  for (const b of bridges) {
    const m = /^agwbr(\d+x\d+)$/.exec(b.ifname);
    const owner = new RegExp(`^${ALIAS} pid=(\\d+) pidns=(\\S+)$`).exec(b.ifalias ?? '');
    if (!m || !owner || owner[2] !== pidns) continue;
    try {
      process.kill(Number(owner[1]), 0);
      continue; // alive
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') continue;
    }
    teardownId(m[1]!, b.ifname);
  }
}

function subnetInUse(base: number): boolean {
  const routes = JSON.parse(ip(['-4', '-j', 'route', 'show', 'table', 'all'])) as { dst: string }[];
  for (const r of routes) {
    if (r.dst === 'default') continue;
    const [a, bits] = r.dst.split('/');
    if (overlaps(ipToInt(a!), bits === undefined ? 32 : Number(bits), base, 24)) return true;
  }
  const addrs = JSON.parse(ip(['-4', '-j', 'addr', 'show'])) as { addr_info?: { local: string; prefixlen: number }[] }[];
  for (const l of addrs) for (const a of l.addr_info ?? []) {
    if (overlaps(ipToInt(a.local), a.prefixlen, base, 24)) return true;
  }
  return false;
}

/** Claims a free random /24 in 198.18.0.0/15 by creating its bridge (the name is the lock). */
function claimSubnet(): { id: string; bridge: string; prefix: string } {
  const errors: string[] = [];
  for (let attempt = 0; attempt < 40; attempt++) {
    const o2 = 18 + randomInt(2);
    const r = randomInt(256);
    const prefix = `198.${o2}.${r}`;
    if (subnetInUse(ipToInt(`${prefix}.0`))) continue;
    const id = `${o2}x${r}`;
    const bridge = `agwbr${id}`;
    try {
      ip(['link', 'add', 'name', bridge, 'type', 'bridge']);
    } catch (err) {
      errors.push((err as Error).message.trim());
      continue; // taken concurrently
    }
    return { id, bridge, prefix };
  }
  throw new Error(`createTestNet: no free /24 in 198.18.0.0/15 after 40 attempts${errors.length ? `: ${errors.at(-1)}` : ''}`);
}

export async function createTestNet(opts: { hosts?: number } = {}): Promise<TestNet> {
  hookExit();
  sweepStale();
  const { id, bridge, prefix } = claimSubnet();
  const state: NetState = { id, bridge, dir: mkdtempSync(join(tmpdir(), `agw-net-${id}-`)), hosts: new Map(), done: false };
  live.add(state);
  const hostIp = `${prefix}.1`;
  const hosts: TestHost[] = [];
  let next = 1;

  const addHost = async (): Promise<TestHost> => {
    if (state.done) throw new Error(`test net ${id} is destroyed`);
    const n = next++;
    if (n > 244) throw new Error(`test net ${id}: too many hosts`);
    const ns = `agw${id}h${n}`;
    const veth = `agw${id}v${n}`;
    const addr = `${prefix}.${10 + n}`;
    const owned = { procs: new Set<ChildProcess>(), veth };
    state.hosts.set(ns, owned);
    ip(['netns', 'add', ns]);
    ip(['link', 'add', 'name', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    ip(['link', 'set', veth, 'master', bridge]);
    ip(['link', 'set', veth, 'up']);
    ip(['-n', ns, 'link', 'set', 'lo', 'up']);
    ip(['-n', ns, 'addr', 'add', `${addr}/24`, 'dev', 'eth0']);
    ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
    assertRoutesLocally(addr, bridge);
    const track = (c: ChildProcess) => {
      owned.procs.add(c);
      c.once('exit', () => owned.procs.delete(c));
    };
    const host: TestHost = {
      name: ns, ip: addr, dev: bridge, dir: state.dir,
      exec(cmd, args) {
        const c = spawn('setpriv', ['--pdeathsig', 'KILL', '--', 'ip', 'netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
        track(c);
        return c;
      },
      start(cmd, args, logFile) {
        const p = startProc('ip', ['netns', 'exec', ns, cmd, ...args], logFile);
        track(p.child);
        return p;
      },
      async stop() {
        await Promise.all([...owned.procs].map((c) => new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve();
          const timer = setTimeout(() => c.kill('SIGKILL'), 3000);
          c.once('exit', () => { clearTimeout(timer); resolve(); });
          c.kill('SIGTERM');
        })));
      },
    };
    hosts.push(host);
    return host;
  };

  const removeHost = async (h: TestHost): Promise<void> => {
    const owned = state.hosts.get(h.name);
    if (!owned) return;
    await h.stop();
    ipQuiet(['link', 'del', owned.veth]);
    ip(['netns', 'del', h.name]);
    state.hosts.delete(h.name);
    hosts.splice(hosts.indexOf(h), 1);
  };

  const net: TestNet = {
    id, dev: bridge, subnet: `${prefix}.0/24`, hostIp, dir: state.dir, hosts, addHost, removeHost,
    async destroy() {
      if (state.done) return;
      await Promise.all(hosts.map((h) => h.stop()));
      teardownSync(state);
      hosts.length = 0;
      const leftNs = ip(['netns', 'list']).split('\n').filter((l) => l.startsWith(`agw${id}h`));
      const leftLinks = (JSON.parse(ip(['-j', 'link', 'show'])) as { ifname: string }[])
        .map((l) => l.ifname).filter((n) => n === bridge || n.startsWith(`agw${id}v`));
      if (leftNs.length || leftLinks.length) throw new Error(`test net ${id} left behind: ${[...leftNs, ...leftLinks].join(', ')}`);
    },
  };

  try {
    ip(['link', 'set', bridge, 'alias', `${ALIAS} pid=${process.pid} pidns=${myPidNs()}`]);
    ip(['addr', 'add', `${hostIp}/24`, 'dev', bridge]);
    ip(['link', 'set', bridge, 'up']);
    // no other owner of the id may have left anything (the bridge was free, so these are stale)
    teardownId(id);
    for (let i = 0; i < (opts.hosts ?? 0); i++) await addHost();
  } catch (err) {
    teardownSync(state);
    throw new Error(`createTestNet ${id}: ${(err as Error).message}`);
  }
  return net;
}

export interface TestServer {
  url: string;
  name: string;
  host: TestHost;
  port: number;
  proc: Proc;
  /** SIGTERM, SIGKILL after 3 s. */
  stop(): Promise<void>;
  /** SIGKILL, now. */
  kill(): void;
}

/** Starts test-host-server.js inside host and waits for its `ready` line. */
export async function startServer(host: TestHost, opts: {
  port?: number; name?: string; tls?: { certFile: string; keyFile: string }; timeoutMs?: number;
  /** With tls: offer HTTP/2 too (ALPN h2 and http/1.1). */
  h2?: boolean;
  /** With tls: each new connection waits this long before its handshake (a slow connect). */
  handshakeDelayMs?: number;
} = {}): Promise<TestServer> {
  const port = opts.port ?? 8080;
  const name = opts.name ?? host.name;
  assertRoutesLocally(host.ip, host.dev);
  const args = [serverScript, '--host', host.ip, '--port', String(port), '--name', name];
  if (opts.tls) args.push('--tls-cert', opts.tls.certFile, '--tls-key', opts.tls.keyFile);
  if (opts.h2) args.push('--h2');
  if (opts.handshakeDelayMs) args.push('--handshake-delay-ms', String(opts.handshakeDelayMs));
  const logFile = join(host.dir, `server-${host.name}-${port}.log`);
  const proc = host.start(process.execPath, args, logFile);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const fail = (why: string) => {
      cleanup();
      proc.child.kill('SIGKILL');
      let tail = '';
      try { tail = readFileSync(logFile, 'utf8').split('\n').slice(-20).join('\n'); } catch { /* no log */ }
      reject(new Error(`test host server ${name} on ${host.ip}:${port} ${why}\n${tail}`));
    };
    const onData = (d: Buffer) => {
      out += d.toString();
      if (/^ready$/m.test(out)) { cleanup(); resolve(); }
    };
    const onExit = (code: number | null) => fail(`exited (${code}) before ready`);
    const timer = setTimeout(() => fail('not ready in time'), opts.timeoutMs ?? 20_000);
    const cleanup = () => {
      clearTimeout(timer);
      proc.child.stdout!.off('data', onData);
      proc.child.off('exit', onExit);
    };
    proc.child.stdout!.on('data', onData);
    proc.child.once('exit', onExit);
  });
  return {
    url: `${opts.tls ? 'https' : 'http'}://${host.ip}:${port}`,
    name, host, port, proc,
    stop: () => proc.stop('SIGTERM', 3000),
    kill: () => { proc.child.kill('SIGKILL'); },
  };
}
