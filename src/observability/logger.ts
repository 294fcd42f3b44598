// pino JSON logs on stdout; `pretty` for people. Token-bearing fields are redacted by paths
// fixed at start-up.
import { createHash } from 'node:crypto';
import { writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import { pino, type Logger } from 'pino';
import { Lately } from '../lately.js';

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
  return pino(base, stdout);
}

/** The logger's and the access log's one writer on stdout: their writes never interleave within
 * a line, and they are written off the event loop (a log reader that lags makes lines wait in
 * memory, not the loop: past 16 MiB waiting, new lines are dropped, and counted). */
type Destination = ReturnType<typeof pino.destination> & { _writing?: boolean; _len?: number };
const stdout: Destination = pino.destination({ dest: 1, sync: false, maxLength: 16 * 1024 * 1024 });
let dropped = 0;
// a log that cannot be written must not end the process; nor hold it at exit (sonic-boom's
// flushSync, which pino runs at exit, retries an EPIPE or EIO for ever): what waits then is lost
stdout.on('error', () => { stdout.flushSync = () => {}; });
stdout.on('drop', (data: string | Buffer) => { dropped += lineCount(data); });

/** Whether stdout's writer has lines it has not written (sonic-boom's own state). */
function writing(): boolean {
  return stdout._writing === true || (stdout._len ?? 0) > 0;
}

/** Whether log lines wait to be written to stdout (access lines in their batch included). */
export function logsPending(): boolean {
  return stdoutBatch.pending || writing();
}

/** Hands the access lines waiting for their batch to stdout, and resolves once all is written, or
 * after `ms` (a log reader that stopped reading must not hold a shutdown). */
export async function drainLogs(ms: number): Promise<void> {
  stdoutBatch.flush();
  const deadline = Date.now() + ms;
  while (logsPending() && Date.now() < deadline) {
    await new Promise<void>((resolve) => {
      const t = setTimeout(done, Math.max(1, deadline - Date.now()));
      function done() { clearTimeout(t); stdout.off('drain', done); resolve(); }
      stdout.once('drain', done);
    });
  }
}

/** At exit (no event loop left): the batch's lines, written directly when stdout is idle, trying
 * for at most ~1 s; else, or what stdout does not take, counted as dropped (a write of pino's in
 * flight would be spliced). */
function writeAtExit(text: string): void {
  if (!text) return;
  if (writing()) {
    dropped += lineCount(text);
    return;
  }
  let buf = Buffer.from(text);
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (let tries = 0; buf.length > 0 && tries < 20;) {
    try {
      buf = buf.subarray(writeSync(1, buf));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') break;
      tries++;
      Atomics.wait(pause, 0, 0, 50);
    }
  }
  if (buf.length) dropped += lineCount(buf);
}

/** Log lines dropped so far because 16 MiB of lines waited for stdout (its reader stopped reading). */
export function droppedLogLines(): number {
  return dropped;
}

/** Bytes waiting to be written to stdout: sonic-boom's and the access lines' batch. */
function waitingBytes(): number {
  return (stdout._len ?? 0) + stdoutBatch.waiting;
}

/**
 * Which namespace's lines (access lines, upstream failures, sessions) are shed while stdout is
 * congested (a log reader slower than the lines): past `congestedBytes` waiting, a namespace that
 * wrote more lines lately than the mean of
 * the namespaces writing loses its lines (counted), so one team's flood does not fill the 16 MiB
 * past which every team's lines are dropped: the quieter teams' lines still go out. "Lately": the
 * counts are halved each second, not cleared (a flood is known before the quiet team's next line).
 * Lines are counted from half that on (`watchBytes`); below it nothing is done per line.
 */
export class FairShed {
  readonly watchBytes: number;
  /** Lines per share (weighed by size), halved each second. */
  private readonly lately: Lately<string>;
  readonly shed = new Map<string, number>();

  constructor(private readonly congestedBytes = 4 * 1024 * 1024, now: () => number = () => performance.now()) {
    this.watchBytes = congestedBytes / 2;
    this.lately = new Lately(now);
  }

  /** Whether a line of `namespace` is written, `waiting` bytes waiting for stdout (`always`:
   * written whatever, but counted). `weight`: the line's size in usual lines (a share is loud by
   * its bytes: a team's long lines were counted as one each). */
  admit(namespace: string, waiting: number, always = false, weight = 1): boolean {
    const mine = this.lately.get(namespace);
    if (!always && waiting >= this.congestedBytes && mine * this.lately.size > this.lately.total) {
      this.shed.set(namespace, (this.shed.get(namespace) ?? 0) + 1);
      return false;
    }
    this.lately.add(namespace, weight);
    return true;
  }
}

const fairShed = new FairShed();

/** Whether a log line a request of `namespace`'s gateways made (its access line, its upstream's
 * failure, a session's start or end) is written: false while stdout is congested and the
 * share (the namespace, or its refused requests: `refusedLines`) is among the loudest (FairShed). `always` (the audit of a pod's exec, attach,
 * port-forward): written whatever, but counted, so a namespace making many is seen as loud. */
export function keepsLine(namespace: string, always = false, weight = 1): boolean {
  const waiting = waitingBytes();
  return waiting < fairShed.watchBytes || fairShed.admit(namespace, waiting, always, weight);
}

/** The most characters of a client's text a line keeps. */
const maxClientChars = 512;

/** A value a client chose (a header's, a token's claim), as a log line holds it: at most `max`
 * characters (512: a service account's name is at most 339), then its length and a digest (an
 * `Impersonate-User` of 15,000 quotes made a 30 KiB line, refused from a cache as fast as it was
 * sent). */
export function clipped(s: string, max = maxClientChars): string {
  if (s.length <= max) return s;
  const cut = /[\ud800-\udbff]/.test(s[max - 1]!) ? max - 1 : max; // (not half a surrogate pair)
  return `${s.slice(0, cut)}…(${s.length} characters, sha256 ${createHash('sha256').update(s).digest('hex').slice(0, 16)})`;
}

/** What a line weighs in usual lines, by its variable fields (FairShed counts a share by its
 * bytes): one more per 128 characters, as JSON may write each of them as two. */
export function lineWeight(a: string, b?: string, c?: string): number {
  return 1 + Math.floor((a.length + (b?.length ?? 0) + (c?.length ?? 0)) / 128); // (no array: once a request)
}

/** The FairShed share of the access lines of `namespace`'s gateways' refused requests (401, or
 * 403 before a route was chosen). */
export function refusedLines(namespace: string): string {
  return `${namespace}\u0000refused`;
}

/** Gateways' log lines shed so far while stdout was congested, by namespace and whether their
 * requests were refused (FairShed's shares). */
export function shedLogLines(): { namespace: string; kind: 'admitted' | 'refused'; lines: number }[] {
  return [...fairShed.shed].map(([share, lines]) => {
    const i = share.indexOf('\u0000');
    return i < 0 ? { namespace: share, kind: 'admitted', lines } : { namespace: share.slice(0, i), kind: 'refused', lines };
  });
}

function lineCount(data: string | Buffer): number {
  const s = typeof data === 'string' ? data : data.toString('latin1');
  let n = 0;
  for (let i = s.indexOf('\n'); i !== -1; i = s.indexOf('\n', i + 1)) n++;
  return n;
}

/** One access-log line: fixed fields, none of which can hold a token. */
export interface AccessEntry {
  reqId: string; caller: string; route: string; method: string | undefined; status: number;
  durationMs: number; upstream: string; error?: string;
  /** Whom the caller acted as (kubectl --as), when it asked to. */
  as?: string;
  /** The ID of the apiserver's audit event of it, on apiserver routes. */
  auditId?: string;
}

/** The entry with what a client chose clipped (the caller's name, whom it asked to act as, the
 * error's text, which may quote them). */
function clippedEntry(e: AccessEntry): AccessEntry {
  const m = maxClientChars;
  if (e.caller.length <= m && (e.as?.length ?? 0) <= m && (e.error?.length ?? 0) <= m) return e;
  return { ...e, caller: clipped(e.caller), ...(e.as === undefined ? {} : { as: clipped(e.as) }), ...(e.error === undefined ? {} : { error: clipped(e.error) }) };
}

/** Writes access-log lines for one gateway. */
export interface AccessLog {
  write(e: AccessEntry): void;
}

/**
 * The access log: one JSON line per request, in the same shape as the other log lines (level,
 * time, pid, hostname, then the gateway and the entry), built directly — no generic serializer
 * and no redaction pass, which cost more than the line itself — and written in batches
 * (LineBatch). With `pretty`, lines go through the given logger instead.
 */
export function accessLogFor(gateway: string, opts: { format?: 'json' | 'pretty'; logger: Logger }): AccessLog {
  if (opts.format === 'pretty' || !opts.logger.isLevelEnabled('info')) {
    const child = opts.logger.child({ gateway });
    return { write: (e) => child.info(clippedEntry(e), 'request') };
  }
  const prefix = `{"level":30,"time":`;
  const middle = `,"pid":${process.pid},"hostname":${JSON.stringify(hostname())},"gateway":${JSON.stringify(gateway)},"reqId":"`;
  const namespace = gateway.includes('/') ? gateway.slice(0, gateway.indexOf('/')) : gateway;
  const refused = refusedLines(namespace);
  return {
    write(entry) {
      const e = clippedEntry(entry);
      // requests no access rule admitted (401, or 403 before a route was chosen: anyone who
      // reaches the listener can make them) are shed as a share of their own, so a flood of them
      // does not take the place of the lines of the team's admitted callers
      const weight = lineWeight(e.caller, e.as, e.error);
      if (!keepsLine(e.status === 401 || (e.status === 403 && e.route === '-') ? refused : namespace, false, weight)) return;
      stdoutBatch.write(`${prefix}${Date.now()}${middle}${e.reqId}","caller":${JSON.stringify(e.caller)}${e.as === undefined ? '' : `,"as":${JSON.stringify(e.as)}`},"route":${JSON.stringify(e.route)},`
        + `"method":${JSON.stringify(e.method ?? '')},"status":${e.status},"durationMs":${e.durationMs},"upstream":${JSON.stringify(e.upstream)}`
        + `${e.auditId === undefined ? '' : `,"auditId":${JSON.stringify(e.auditId)}`}`
        + `${e.error ? `,"error":${JSON.stringify(e.error)}` : ''},"msg":"request"}\n`);
    },
  };
}

/**
 * Lines go out together, in one write: when 64 KiB wait, or 20 ms after the first of them. A busy
 * gateway makes one write call per 64 KiB instead of one per request (or per event-loop turn, a
 * few requests each); a quiet one's line is written 20 ms late. The timer does not keep a process
 * alive (stdout's batch is written when the process is done, or exits: below).
 */
export class LineBatch {
  private parts: string[] = [];
  private size = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly dest: { write(s: string): unknown }, private readonly maxBytes = 64 * 1024, private readonly maxMs = 20) {}

  get pending(): boolean {
    return this.parts.length > 0;
  }

  /** Characters waiting (bytes, for the ASCII lines). */
  get waiting(): number {
    return this.size;
  }

  /** What waits, taken out of the batch (not written). */
  take(): string {
    clearTimeout(this.timer);
    this.timer = undefined;
    const text = this.parts.join('');
    this.parts = [];
    this.size = 0;
    return text;
  }

  write(line: string): boolean {
    this.parts.push(line);
    this.size += line.length; // (characters: bytes for the ASCII lines are)
    if (this.size >= this.maxBytes) this.flush();
    else this.timer ??= setTimeout(this.flush, this.maxMs).unref();
    return true;
  }

  /** Writes what waits. */
  readonly flush = (): void => {
    const text = this.take();
    if (text) this.dest.write(text);
  };
}

/** A logger that writes nothing (unit tests, library use). */
export const silentLogger: Logger = pino({ level: 'silent' });

const stdoutBatch = new LineBatch(stdout);
// a process that is done (nothing left but the batch's unref'd timer) writes what waits now; one
// that exits, as it can (writeAtExit)
process.on('beforeExit', stdoutBatch.flush);
process.once('exit', () => writeAtExit(stdoutBatch.take()));
