// Flags with environment-variable twins: --port-range <-> ACCESS_GATEWAY_PORT_RANGE.
import { parseArgs, type ParseArgsConfig } from 'node:util';

export type FlagSpec = Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string; default?: string | boolean | string[] }>;

export function envName(flag: string): string {
  return 'ACCESS_GATEWAY_' + flag.toUpperCase().replace(/-/g, '_');
}

export function parseFlags(args: string[], spec: FlagSpec, env: NodeJS.ProcessEnv = process.env): Record<string, any> {
  // defaults are applied below, after the environment: parseArgs must not fill them in first
  const options = Object.fromEntries(Object.entries(spec).map(([k, { default: _d, ...o }]) => [k, o]));
  const { values } = parseArgs({ args, options: options as ParseArgsConfig['options'], strict: true, allowPositionals: false });
  const out: Record<string, any> = { ...values };
  for (const [name, s] of Object.entries(spec)) {
    if (out[name] !== undefined) continue;
    const e = env[envName(name)];
    if (e !== undefined && e !== '') {
      if (s.type === 'boolean') out[name] = e === 'true' || e === '1';
      else out[name] = s.multiple ? e.split(',').map((x) => x.trim()).filter(Boolean) : e;
    } else if (s.default !== undefined) {
      out[name] = s.default;
    }
  }
  return out;
}

export function hostPort(v: string, what: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(v);
  if (!m) throw new Error(`${what}: expected HOST:PORT, got ${JSON.stringify(v)}`);
  return { host: m[1]!.replace(/^\[(.*)\]$/, '$1') || '0.0.0.0', port: Number(m[2]) };
}

export function portRange(v: string): [number, number] {
  const m = /^(\d+)-(\d+)$/.exec(v);
  const lo = Number(m?.[1]);
  const hi = Number(m?.[2]);
  if (!m || lo < 1 || hi > 65535 || lo > hi) throw new Error(`--port-range: expected LOW-HIGH within 1-65535, got ${JSON.stringify(v)}`);
  return [lo, hi];
}

/** A whole number within [min, max], or a clear error naming the flag. */
export function intFlag(v: string, flag: string, min: number, max: number): number {
  const n = Number(v);
  if (!/^\d+$/.test(String(v).trim()) || n < min || n > max) throw new Error(`--${flag}: expected a whole number from ${min} to ${max}, got ${JSON.stringify(v)}`);
  return n;
}
