// Command-line flags, each with an environment twin (--port-range <-> ACCESS_GATEWAY_PORT_RANGE),
// parsed into a typed object: a bad value is an error naming the flag, never a silent NaN.
import { parseArgs } from 'node:util';

/** One flag: how it is read (string, boolean, repeated) and how its text becomes a value. */
export interface Flag<T> {
  kind: 'string' | 'boolean' | 'list';
  /** The value when neither the flag nor its twin is given. */
  fallback: T;
  parse(text: string, flag: string): T;
}

export const flag = {
  string: (fallback = ''): Flag<string> => ({ kind: 'string', fallback, parse: (t) => t }),
  optional: (): Flag<string | undefined> => ({ kind: 'string', fallback: undefined, parse: (t) => t }),
  boolean: (fallback = false): Flag<boolean> => ({
    kind: 'boolean', fallback,
    parse: (t, f) => {
      if (t === 'true' || t === '1') return true;
      if (t === 'false' || t === '0') return false;
      throw new Error(`--${f}: expected true or false, got ${JSON.stringify(t)}`);
    },
  }),
  list: (): Flag<string[]> => ({ kind: 'list', fallback: [], parse: (t) => t.split(',').map((x) => x.trim()).filter(Boolean) }),
  int: (fallback: number, min: number, max: number): Flag<number> => ({ kind: 'string', fallback, parse: (t, f) => intFlag(t, f, min, max) }),
  oneOf: <V extends string>(values: readonly V[], fallback: V): Flag<V> => ({
    kind: 'string', fallback,
    parse: (t, f) => {
      if ((values as readonly string[]).includes(t)) return t as V;
      throw new Error(`--${f}: expected ${values.join(' or ')}, got ${JSON.stringify(t)}`);
    },
  }),
  hostPort: (fallback: string): Flag<{ host: string; port: number }> => ({ kind: 'string', fallback: hostPort(fallback, 'default'), parse: (t, f) => hostPort(t, `--${f}`) }),
  portRange: (fallback: string, name = 'port-range'): Flag<[number, number]> => ({ kind: 'string', fallback: portRange(fallback, name), parse: (t) => portRange(t, name) }),
};

export type FlagSpec = Record<string, Flag<unknown>>;
export type Parsed<S extends FlagSpec> = { [K in keyof S]: S[K] extends Flag<infer T> ? T : never };

export function envName(name: string): string {
  return 'ACCESS_GATEWAY_' + name.toUpperCase().replace(/-/g, '_');
}

/** The flags given in `args`, else their environment twins, else their fallbacks; each checked. */
export function parseFlags<S extends FlagSpec>(args: string[], spec: S, env: NodeJS.ProcessEnv = process.env): Parsed<S> {
  return parseCommand(args, spec, env, false).flags;
}

/** parseFlags for a command that also takes arguments (`can-i VERB PATH`). */
export function parseCommand<S extends FlagSpec>(args: string[], spec: S, env: NodeJS.ProcessEnv = process.env, allowPositionals = true):
  { flags: Parsed<S>; args: string[] } {
  const options = Object.fromEntries(Object.entries(spec).map(([k, f]) => [k, f.kind === 'list'
    ? { type: 'string' as const, multiple: true } : { type: f.kind === 'boolean' ? 'boolean' as const : 'string' as const }]));
  const { values, positionals } = parseArgs({ args, options, strict: true, allowPositionals });
  const out: Record<string, unknown> = {};
  for (const [name, f] of Object.entries(spec)) {
    const given = values[name];
    if (given !== undefined) {
      out[name] = f.kind === 'boolean' ? given : f.kind === 'list' ? (given as string[]).flatMap((v) => f.parse(v, name) as string[]) : f.parse(given as string, name);
      continue;
    }
    const twin = env[envName(name)];
    out[name] = twin !== undefined && twin !== '' ? f.parse(twin, name) : f.fallback;
  }
  return { flags: out as Parsed<S>, args: positionals };
}

export function hostPort(v: string, what: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(v);
  const port = Number(m?.[2]);
  if (!m || port > 65535) throw new Error(`${what}: expected HOST:PORT, got ${JSON.stringify(v)}`);
  return { host: m[1]!.replace(/^\[(.*)\]$/, '$1') || '0.0.0.0', port };
}

export function portRange(v: string, name = 'port-range'): [number, number] {
  const m = /^(\d+)-(\d+)$/.exec(v);
  const lo = Number(m?.[1]);
  const hi = Number(m?.[2]);
  if (!m || lo < 1 || hi > 65535 || lo > hi) throw new Error(`--${name}: expected LOW-HIGH within 1-65535, got ${JSON.stringify(v)}`);
  return [lo, hi];
}

/** A whole number within [min, max], or a clear error naming the flag. */
export function intFlag(v: string, flag: string, min: number, max: number): number {
  const n = Number(v);
  if (!/^\d+$/.test(String(v).trim()) || n < min || n > max) throw new Error(`--${flag}: expected a whole number from ${min} to ${max}, got ${JSON.stringify(v)}`);
  return n;
}
