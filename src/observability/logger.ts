// pino JSON logs on stdout; `pretty` for people. Token-bearing fields are redacted by paths
// fixed at start-up.
import { pino, type Logger } from 'pino';

export type { Logger };

export const redactPaths = [
  'authorization', '*.authorization', 'headers.authorization', 'req.headers.authorization',
  'token', '*.token', 'spec.token', 'status.token',
];

export function createLogger(opts: { level?: string; format?: 'json' | 'pretty' } = {}): Logger {
  const base = { level: opts.level ?? 'info', redact: { paths: redactPaths, censor: '[REDACTED]' } };
  if (opts.format === 'pretty') {
    return pino({ ...base, transport: { target: 'pino-pretty', options: { colorize: true } } });
  }
  return pino(base);
}

/** A logger that writes nothing (unit tests, library use). */
export const silentLogger: Logger = pino({ level: 'silent' });
