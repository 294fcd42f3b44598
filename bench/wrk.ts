// wrk, pinned to a CPU, and its report parsed: req/s, latency percentiles, errors.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

export interface WrkResult { rps: number; p50: number; p99: number; /** The slowest request (ms; NaN when not printed). */ max: number; /** Answers in all. */ requests: number; non2xx: number; errors: number; /** Set by the caller: CPU time of the proxy per request. */ cpuUsPerReq?: number }

const ms = (v: string, unit: string) => Number(v) * (unit === 'us' ? 0.001 : unit === 's' ? 1000 : 1);

export function parseWrk(out: string): WrkResult {
  const lat = (p: string) => {
    const m = new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s)[ \\t]*$`, 'm').exec(out); // (wrk pads seconds with a space)
    if (!m) throw new Error(`wrk printed no ${p}% latency:\n${out}`);
    return ms(m[1]!, m[2]!);
  };
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(out);
  if (!rps) throw new Error(`wrk printed no Requests/sec:\n${out}`);
  const errs = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  // the thread stats line: Latency  avg  stdev  max  +/-stdev
  const max = /^[ \t]*Latency[ \t]+\S+[ \t]+\S+[ \t]+([\d.]+)(us|ms|s)[ \t]/m.exec(out);
  return {
    rps: Number(rps[1]), p50: lat('50'), p99: lat('99'), max: max ? ms(max[1]!, max[2]!) : NaN, requests: Number(/^\s*(\d+) requests in /m.exec(out)?.[1] ?? NaN),
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0),
    errors: errs ? Number(errs[1]) + Number(errs[2]) + Number(errs[3]) + Number(errs[4]) : 0,
  };
}

/** `script`: a Lua file of wrk's (`-s`); `env`: what it reads with os.getenv. */
export async function wrk(url: string, o: { seconds: number; connections: number; cpu: number; headers?: Record<string, string>; script?: string; env?: Record<string, string> }): Promise<WrkResult> {
  const headers = Object.entries(o.headers ?? {}).flatMap(([k, v]) => ['-H', `${k}: ${v}`]);
  const script = o.script ? ['-s', o.script] : [];
  const { stdout } = await promisify(execFile)('taskset', ['-c', String(o.cpu), 'wrk', '-t1', `-c${o.connections}`, `-d${o.seconds}s`, '--latency', ...script, ...headers, url],
    { maxBuffer: 1 << 20, env: { ...process.env, ...o.env } });
  return parseWrk(stdout);
}
