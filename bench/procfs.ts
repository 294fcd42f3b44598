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

/** Busy and total time (ticks) of one CPU so far (/proc/stat): busy is all but idle and iowait. */
export function cpuTicks(cpu: number): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith(`cpu${cpu} `))!;
  const t = line.trim().split(/\s+/).slice(1, 9).map(Number); // user nice system idle iowait irq softirq steal
  const total = t.reduce((a, b) => a + b, 0);
  return { busy: total - t[3]! - t[4]!, total };
}

function children(pid: number): number[] {
  return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
}

/** A process and its descendants (nginx's worker under its master). */
export function tree(pid: number): number[] {
  return [pid, ...children(pid).flatMap(tree)];
}
