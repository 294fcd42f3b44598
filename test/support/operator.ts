// Runs the real `access-gateway operator` binary as a child process against a control plane.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { request } from 'undici';
import type { ControlPlane } from './control-plane.js';
import { repoRoot } from './control-plane.js';
import { ephemeralLow, freePort, freePortSpan, startProc, WaitAbort, waitFor, type Proc } from './procs.js';

export interface OperatorProc extends Proc {
  adminPort: number;
  portRange: [number, number];
  readyz(): Promise<number>;
}

export const cliPath = join(repoRoot, 'dist', 'src', 'cli', 'main.js');

/** A port range no other test file uses at the same time (random base, 40 ports). */
/**
 * 40 ports below the kernel's ephemeral range: a port there can be taken at any time by an outgoing
 * connection (to etcd, the apiserver), and the gateway that wanted it would be PortConflict for a pass.
 */
export async function testPortRange(): Promise<[number, number]> {
  const low = ephemeralLow() - freePortSpan; // (freePort's ports are above)
  const slots = Math.max(1, Math.floor((Math.min(low, 65536) - 10000) / 40) - 1);
  const base = 10000 + Math.floor(Math.random() * slots) * 40;
  return [base, base + 39];
}

export async function startOperator(cp: ControlPlane, opts: { args?: string[]; logName?: string; env?: NodeJS.ProcessEnv; portRange?: [number, number]; cpu?: number; nodeArgs?: string[] } = {}): Promise<OperatorProc> {
  const adminPort = await freePort();
  const portRange = opts.portRange ?? await testPortRange();
  const [cmd, pre] = opts.cpu === undefined ? [process.execPath, []] : ['taskset', ['-c', String(opts.cpu), process.execPath]];
  const proc = startProc(cmd, [...pre, ...(opts.nodeArgs ?? []), cliPath, 'operator', '--kubeconfig', cp.kubeconfig,
    '--admin-address', `127.0.0.1:${adminPort}`, '--listen-address', '127.0.0.1',
    '--port-range', `${portRange[0]}-${portRange[1]}`, '--drain-seconds', '2', '--log-level', 'debug', ...(opts.args ?? [])],
  join(cp.dir, opts.logName ?? 'operator.log'), opts.env);
  const readyz = async () => (await request(`http://127.0.0.1:${adminPort}/readyz`)).statusCode;
  try {
    await waitFor('operator /readyz', async () => {
      if (proc.child.exitCode !== null) throw new WaitAbort(`operator exited ${proc.child.exitCode}; the end of ${proc.logFile} (removed with the test's directory):\n${logTail(proc.logFile)}`);
      return (await readyz()) === 200;
    }, 30_000, 100);
  } catch (err) {
    await proc.stop('SIGKILL'); // a child left running would keep the test process alive
    throw err;
  }
  return Object.assign(proc, { adminPort, portRange, readyz });
}

/** The last lines of a log file (a test's directory is removed when it ends: CI keeps only its output). */
function logTail(file: string, lines = 30): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).map((l) => l.slice(0, 2000)).join('\n');
  } catch (err) {
    return `(unread: ${(err as Error).message})`;
  }
}

/** The environment of a person with the kubectl plugin on PATH (what `npm install -g` makes of the
 * bin entry: an executable named kubectl-access_gateway), next to the Node.js that runs it. */
export function kubectlPluginEnv(dir: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const pluginDir = mkdtempSync(join(dir, 'plugins-'));
  writeFileSync(join(pluginDir, 'kubectl-access_gateway'), `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(cliPath)} "$@"\n`, { mode: 0o755 });
  return { ...process.env, PATH: `${pluginDir}:${dirname(process.execPath)}:${process.env.PATH}`, KUBECONFIG: '', ...extra };
}

/** The operator's log lines so far (JSON, whole lines only) that `pick` keeps. */
export function logLines(op: { logFile: string }, pick: (l: any) => boolean = () => true): any[] {
  return readFileSync(op.logFile, 'utf8').split('\n').slice(0, -1).filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).filter(pick);
}

/** logLines, once `n` of them are there or after 10 s (the operator's stdout reaches its log
 * file through a pipe: a line can arrive after the answer it logs). */
export async function waitForLogLines(op: { logFile: string }, n: number, pick: (l: any) => boolean): Promise<any[]> {
  const deadline = Date.now() + 10_000;
  let lines = logLines(op, pick);
  while (lines.length < n && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    lines = logLines(op, pick);
  }
  return lines;
}
