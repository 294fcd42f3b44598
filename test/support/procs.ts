// Child processes for tests that never outlive the test process: each is started under
// `setpriv --pdeathsig KILL`, so even a test runner killed with SIGKILL leaves no orphan.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { createServer } from 'node:net';

export interface Proc {
  child: ChildProcess;
  logFile: string;
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<void>;
}

export function startProc(cmd: string, args: string[], logFile: string, env?: NodeJS.ProcessEnv): Proc {
  const out = createWriteStream(logFile, { flags: 'a' });
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', cmd, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: env ?? process.env,
  });
  child.stdout!.pipe(out, { end: false });
  child.stderr!.pipe(out, { end: false });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    logFile,
    exited,
    async stop(signal = 'SIGTERM', graceMs = 5000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * A free TCP port on loopback (bound then released), below the kernel's ephemeral range and above
 * the operators' port ranges (`testPortRange`): a port from the ephemeral range can be taken by
 * any outgoing connection (to etcd, the apiserver) before the child that was given it binds it.
 * Never the same one twice in a test process.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const low = ephemeralLow();
  for (let i = 0; i < 100; i++) {
    const port = low - 1 - Math.floor(Math.random() * freePortSpan);
    if (given.has(port) || !(await bindable(port, host))) continue;
    given.add(port);
    return port;
  }
  return new Promise((resolve, reject) => { // (that area full: one the kernel picks)
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Ports under the ephemeral range that freePort gives; the operators' ranges are below them. */
export const freePortSpan = 2_000;
const given = new Set<number>();

/** The first port of the kernel's ephemeral range. */
export function ephemeralLow(): number {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 32768;
  } catch {
    return 32768;
  }
}

function bindable(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

/** Thrown inside a waitFor callback: stop waiting at once and fail with it (other errors are retried). */
export class WaitAbort extends Error {}

/**
 * Polls `fn` until it returns a value (not undefined/false), retrying errors until `timeoutMs`.
 * Never assert inside `fn`: a failed assertion is just retried. Throw WaitAbort to fail at once.
 */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 30_000, stepMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      if (err instanceof WaitAbort) throw new Error(`gave up waiting for ${what}: ${err.message}`);
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
