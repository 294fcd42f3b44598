// What the benchmarks read about processes from /proc, and CPU pinning (taskset).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Pins processes (all their threads) to one CPU. */
export function pin(pids: number[], cpu: number): void {
  for (const pid of pids) execFileSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { stdio: 'ignore' });
}

export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Math.round(Number(m?.[1] ?? 0) / 1024);
}

/** CPU time (user + system, ms) of processes and their threads so far. */
export function cpuMs(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    ticks += Number(f[11]) + Number(f[12]);
  }
  return ticks * 10; // USER_HZ = 100
}

function children(pid: number): number[] {
  return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
}

/** A process and its descendants (nginx's worker under its master). */
export function tree(pid: number): number[] {
  return [pid, ...children(pid).flatMap(tree)];
}
