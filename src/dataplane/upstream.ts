// Forwarding to an upstream (the apiserver or a Service endpoint): plain requests, streamed
// responses (watches), and upgrades (joined only on 101, else relayed and closed).
import { request as httpRequest, type Agent as HttpAgent, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import { request as httpsRequest, type Agent as HttpsAgent } from 'node:https';
import { pipeline, Transform, type Duplex, type Readable, type TransformCallback } from 'node:stream';
import type { Dispatcher } from 'undici';
import { createHash } from 'node:crypto';
import { wireOwed } from './wire.js';
import { UpstreamProtocolError, UpstreamTimeoutError, UpstreamUnreachableError, type AgwError } from '../errors.js';

/** How the data plane reaches the apiserver; provided by the kube layer. */
export interface ApiserverConnection {
  url: URL;
  /** Requests with the gateway's own credentials (client certificate, if any): a keep-alive pool. */
  identityPool: Dispatcher;
  /** Requests with no credentials of ours (Passthrough): the apiserver is still verified. */
  anonymousPool: Dispatcher;
  /** The same two for upgrades (node:http agents). */
  identityAgent: HttpAgent;
  anonymousAgent: HttpAgent;
  /** The gateway's own Authorization header (token credentials), kept fresh by the kube layer. */
  authorization(): string | undefined;
}

/** What a request (`pool`) or an upgrade (`agent`) is sent to and with. */
export interface UpstreamCall {
  /** Origin of the upstream (scheme, host, port). */
  url: URL;
  method: string;
  path: string;
  headers: OutgoingHttpHeaders;
  /** Time allowed until the response headers arrive (watches stream on after that). */
  timeoutMs: number;
  /** The upstream, as error messages name it. */
  what: string;
  /** What a new connection to it costs the event loop, in starts (a TLS handshake with the
   * apiserver: ~1.2 ms, ~3 requests'): charged to the namespace whose call makes one (an upgrade)
   * or ends one a pool would have kept (its client leaving mid-answer); absent: none. */
  connectStarts?: number;
}

/** A new TLS connection to the apiserver, in starts. */
export const apiserverConnectStarts = 3;

/** A plain request goes through a keep-alive pool. */
export type RequestCall = UpstreamCall & { pool: Dispatcher };
/** An upgrade goes through an agent (its socket is the session's). */
export type UpgradeCall = UpstreamCall & { agent: HttpAgent | HttpsAgent };

/** The turns of the event loop a namespace's work takes (`TurnShare`). */
export interface Turns {
  /** `bytes`: a piece of a body or session of that size (it costs a start per 16 KiB, and is not a request). */
  tryStart(namespace: string, bytes?: number): boolean;
  /** Counts a start in this turn (what a `wait`'s `go` does when it starts something). */
  start(namespace: string, bytes?: number): void;
  /** Counts what a request's one piece of `bytes` costs past the start its request took. */
  charge(namespace: string, bytes: number): void;
  /** Counts `n` starts of work done without a piece (an answer's header lines). */
  chargeStarts(namespace: string, n: number): void;
  wait(namespace: string, go: () => boolean | void): void;
}

/** A namespace's turns, for the pieces of its long bodies and sessions: each piece after a body's
 * first takes a start per 16 KiB (every piece of a session); past the namespace's share it is
 * held, its source paused, and sent at a later turn, which counts its start (deferrals counted in
 * `m`). */
export interface Pace {
  turns: Turns;
  namespace: string;
  m: { pieceDeferred(): void };
  /** Where a stream waiting for its reader is counted (its namespace's longest waiting is cut past a
   * bound), and how long it may wait (`ReaderWait`). */
  paused?: { pause(namespace: string, cut: () => void): () => void };
  stalledMs?: number;
}

/**
 * A reader (a client, or a session's upstream) that took no more: its buffers full, its source
 * paused. Each such stream holds the kernel's socket buffers, which no budget of the process counts
 * (toward a reader that reads slowly, autotuned up to ~4 MiB; a red team: 100 watches read 16 KiB
 * every 2 s held ~460 MiB of the operator's pod). So while it waits it is counted among its
 * namespace's paused streams (`Pace.paused`: past their bound the longest waiting is cut), and one
 * that waits `Pace.stalledMs` is cut.
 */
export class ReaderWait {
  private timer: NodeJS.Timeout | undefined;
  private unpause: (() => void) | undefined;
  private on = false;

  constructor(private readonly pace: Pace, private readonly cut: () => void) {}

  get waiting(): boolean {
    return this.on;
  }

  /** The reader is full (again: nothing new). */
  start(): void {
    if (this.on) return;
    this.on = true;
    if (this.pace.stalledMs !== undefined) this.timer = setTimeout(() => { this.stop(); this.cut(); }, this.pace.stalledMs);
    this.unpause = this.pace.paused?.pause(this.pace.namespace, this.cut);
  }

  /** It drained, or the stream ended. */
  stop(): void {
    if (!this.on) return;
    this.on = false;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.unpause?.();
    this.unpause = undefined;
  }
}

/** A failure before the response started; `connect`: no connection could be made. */
export interface UpstreamFailure {
  err: AgwError;
  connect: boolean;
}

const connectCodes = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ENOTFOUND', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT']);
const timeoutCodes = new Set(['UND_ERR_HEADERS_TIMEOUT']);

function failure(call: UpstreamCall, err: unknown, timedOut: boolean): UpstreamFailure {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  if (timedOut || timeoutCodes.has(code)) {
    return { err: new UpstreamTimeoutError(`${call.what} did not answer within ${call.timeoutMs / 1000} s`), connect: false };
  }
  return { err: new UpstreamUnreachableError(`${call.what} is unreachable: ${(err as Error).message}`, { cause: err }), connect: connectCodes.has(code) };
}

/** Header fields of an upstream's answer: past this, the answer is refused (a client's request
 * may have 256: listener.ts); trailers, which come after the body is relayed, are only charged. */
const maxUpstreamHeaderFields = 256;
/** Header or trailer fields parsed per start charged to the namespace (~0.05 ms of undici's parse). */
const fieldsPerStart = 64;
/** What a head (or trailers) of `fields` lines costs in starts; an informational answer one more. */
function headStarts(fields: number, informational: boolean): number {
  return Math.floor(fields / fieldsPerStart) + (informational ? 1 : 0);
}
/** Informational answers (102, 103) before the answer: past this, the request fails. */
const maxInformational = 8;

function fieldCount(headers: Record<string, string | string[] | undefined> | null | undefined): number {
  let n = 0;
  for (const k in headers) {
    const v = headers[k];
    n += Array.isArray(v) ? v.length : 1;
  }
  return n;
}

/** Stops a response in flight when the client has gone (not an error of the upstream's). */
class ClientGone extends Error {}

/**
 * Proxies one request over the call's keep-alive pool (undici's dispatch: no promise, no stream
 * wrapper per request). The body is `req` itself ('stream'), a buffered copy (so the request can
 * be retried), or nothing. Errors before the response starts go to `onError` (the caller answers
 * or retries), later ones reset the client. Response bodies stream through as they arrive, with
 * back-pressure (watches included).
 */
export function proxyRequest(call: RequestCall, req: IncomingMessage, res: ServerResponse, opts: ProxyOptions): void {
  // the client left before this (during its token check, or a failed first attempt): nothing to send
  if (res.destroyed) {
    opts.onEnd?.();
    return;
  }
  const answer = new Answer(call, res, opts);
  res.on('close', () => answer.closed()); // ('close' comes once)
  call.pool.dispatch({
    method: call.method as Dispatcher.HttpMethod, path: call.path, headers: call.headers as Record<string, string | string[]>,
    body: opts.body === 'stream' ? paced(req, opts.pace) : opts.body,
    headersTimeout: call.timeoutMs, bodyTimeout: 0, // once the headers are in, streams (watches) may idle
  }, answer);
}

export type ProxyOptions = {
  body: 'stream' | Buffer | null;
  respond: (status: number, headers: IncomingHttpHeaders) => void;
  onError: (f: UpstreamFailure) => void;
  onEnd?: () => void;
  /** Called once the response streams (no length; or one with a length that waits for its
   * client): `end` finishes it (cleanly when it has no length; else the connection is cut). */
  streaming?: (end: () => void) => void;
  /** Its namespace's turns (made once per table, not per request). */
  pace: Pace;
};

/** One request's answer, relayed to its client (undici's handler; its state in fields, not in a
 * dozen closures made for every request). */
class Answer implements Dispatcher.DispatchHandler {
  private ctl: Dispatcher.DispatchController | undefined;
  private started = false;
  private ending = false;
  private done = false;
  /** The upstream's answer has ended (its connection goes back to the pool). */
  private upstreamEnded = false;
  /** Handed to opts.streaming (a body without a length at once, one with a length from its second
   * piece or once it waits). */
  private tracked = false;
  private pieces = 0;
  private informational = 0;
  /** A client that reads none of the answer for pace.stalledMs is cut (it would hold the upstream
   * connection); made when it first waits (most answers never do). */
  private stalled: ReaderWait | undefined;
  /** Pieces waiting for a later turn (the namespace's share of this one was used): written then. */
  private held: Buffer[] | undefined;
  /** The answer ended while pieces were held: ended once they are written. */
  private endHeld = false;

  constructor(private readonly call: RequestCall, private readonly res: ServerResponse, private readonly opts: ProxyOptions) {}

  private get pace(): Pace {
    return this.opts.pace;
  }

  private finish(): void {
    if (!this.done) {
      this.done = true;
      this.opts.onEnd?.();
    }
  }

  /** Hands the response to opts.streaming, ended by `close` (cleanly without a length, else cut). */
  private track(close: () => void): void {
    this.tracked = true;
    this.opts.streaming?.(() => {
      this.ending = true;
      this.ctl?.abort(new ClientGone('the listener is draining, or its access ended'));
      this.finish();
      close();
    });
  }

  private resume(): void {
    this.stalled?.stop();
    if (!this.held) this.ctl?.resume();
  }

  /** What the client took: none past its buffer, then wait for it to drain. */
  private wrote(ok: boolean): void {
    if (ok || this.stalled?.waiting) return;
    this.ctl?.pause();
    this.res.once('drain', () => this.resume());
    (this.stalled ??= new ReaderWait(this.pace, () => this.res.destroy())).start();
  }

  /** Writes what is held, counted in this turn (past the share, owed); false: the client is full. */
  private flushHeld(): boolean {
    let ok = true, bytes = 0;
    for (const piece of this.held ?? []) {
      ok = this.res.write(piece);
      bytes += piece.length;
    }
    this.held = undefined;
    if (bytes) this.pace.turns.start(this.pace.namespace, bytes);
    return ok;
  }

  private nextTurn(): boolean {
    if (!this.held || this.done || this.res.destroyed) {
      this.held = undefined;
      return false; // takes no place in the turn
    }
    const ok = this.flushHeld();
    if (this.endHeld) {
      this.res.end();
      this.finish();
      return true;
    }
    this.wrote(ok);
    if (!this.stalled?.waiting) this.ctl?.resume(); // (else when the client drains)
    return true;
  }

  /** The client's response closed (answered, or its client gone). */
  closed(): void {
    this.stalled?.stop();
    this.finish();
    const ctl = this.ctl;
    if (!this.res.writableFinished && ctl && !ctl.aborted && !this.upstreamEnded) {
      ctl.abort(new ClientGone('the client went away'));
      // (undici ends the connection: a watch cut by its client costs the next request a handshake)
      if (this.call.connectStarts) this.pace.turns.chargeStarts(this.pace.namespace, this.call.connectStarts);
    }
  }

  onRequestStart(c: Dispatcher.DispatchController): void {
    this.ctl = c;
    // the client left while the request waited for a connection: not sent (an answer nobody
    // reads would hold the connection for ever)
    if (this.res.destroyed) c.abort(new ClientGone('the client went away'));
  }

  onResponseStart(c: Dispatcher.DispatchController, status: number, headers: IncomingHttpHeaders): void {
    const { opts, call, pace } = this;
    // undici has parsed the head: lines past the usual cost the namespace starts, past the
    // client side's bound the answer is refused (a team's backend could send ~3,000 a head)
    const fields = fieldCount(headers);
    pace.turns.chargeStarts(pace.namespace, headStarts(fields, status < 200));
    wireOwed(call.pool, null); // (a head: progress; its bytes are charged with its body's)
    if (fields > maxUpstreamHeaderFields) {
      c.abort(new UpstreamProtocolError(`${call.what} answered with ${fields} header fields (at most ${maxUpstreamHeaderFields})`));
      return;
    }
    if (status < 200) { // informational (102, 103 Early Hints): not the answer, not relayed
      if (++this.informational > maxInformational) c.abort(new UpstreamProtocolError(`${call.what} sent more than ${maxInformational} informational answers`));
      return;
    }
    this.started = true;
    opts.respond(status, headers);
    // a body without a length streams (a watch): send the headers now, not with the first event,
    // and let a draining listener end it cleanly
    if (headers['content-length'] !== undefined) return;
    this.res.flushHeaders();
    this.track(() => {
      this.flushHeld(); // what waits for its turn came before the end: it goes first
      this.res.end();
    });
  }

  onResponseData(c: Dispatcher.DispatchController, chunk: Buffer): void {
    if (chunk.length === 0) return; // (undici's resume hands over what it has read: maybe nothing)
    const { pace } = this;
    const owed = wireOwed(this.call.pool, chunk.length); // what the connection read that was not body
    if (owed) pace.turns.chargeStarts(pace.namespace, owed);
    if (this.held) { // (undici may hand over data after a pause: it goes behind)
      this.held.push(chunk);
      return;
    }
    // a body with a length that comes in more than one piece or waits for its client (a
    // download, a trickle): from now on it may outlive its access (notAfter, a spec change) or
    // the drain, and is cut then (one piece, the usual small answer, costs nothing here)
    if (++this.pieces === 1) {
      pace.turns.charge(pace.namespace, chunk.length); // a long first piece costs more than its request's start
    } else {
      if (!this.tracked) this.track(() => this.res.destroy());
      // each later piece takes a turn: past the namespace's share, it waits for a later one
      if (!pace.turns.tryStart(pace.namespace, chunk.length)) {
        this.held = [chunk];
        pace.m.pieceDeferred();
        c.pause();
        pace.turns.wait(pace.namespace, () => this.nextTurn());
        return;
      }
    }
    const ok = this.res.write(chunk);
    if (!ok && !this.tracked) this.track(() => this.res.destroy());
    this.wrote(ok);
  }

  onResponseEnd(_c: Dispatcher.DispatchController, trailers: IncomingHttpHeaders): void {
    this.upstreamEnded = true;
    this.pace.turns.chargeStarts(this.pace.namespace, headStarts(fieldCount(trailers), false) + wireOwed(this.call.pool, 0, true));
    if (this.held) {
      this.endHeld = true;
      return;
    }
    this.res.end();
    this.finish();
  }

  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    this.finish();
    // the client gone: undici may have failed the request on its own first, from the destroyed body
    if (err instanceof ClientGone || this.ending || this.res.destroyed) return;
    if (this.started) this.res.destroy();
    else this.opts.onError(err instanceof UpstreamProtocolError ? { err, connect: false } : failure(this.call, err, false));
  }
}

/**
 * A request body (streamed on, or read whole to be buffered), or the body of an upgrade's answer
 * that did not switch (`answer`), whose pieces after the first take `namespace`'s turns, as a long
 * answer's do (an upload must not fill every team's turns); the first piece, or a body of at most
 * 64 KiB, is charged what it costs past its request's start. `req` itself when it has at most
 * 64 KiB.
 */
export function paced(req: IncomingMessage, o: Pace, answer = false): Readable {
  // no body, or one that comes in one piece or two (at most 64 KiB is read at once): what it
  // costs past its request's start is counted. A request without a length has no body; an answer
  // without one has a body that ends with its connection, of any length.
  const len = Number(req.headers['content-length']);
  const endsWithConnection = answer && !(len >= 0);
  if (req.headers['transfer-encoding'] === undefined && !(len > 64 * 1024) && !endsWithConnection) {
    if (len > 0) o.turns.charge(o.namespace, len);
    return req;
  }
  let pieces = 0;
  const body = new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
      if (++pieces === 1) {
        o.turns.charge(o.namespace, chunk.length);
        done(null, chunk);
        return;
      }
      if (o.turns.tryStart(o.namespace, chunk.length)) {
        done(null, chunk);
        return;
      }
      // past the namespace's share of this turn: the piece goes on in a later one
      o.m.pieceDeferred();
      o.turns.wait(o.namespace, () => {
        // a body no one reads any more (the request is over: undici destroys it) takes no place
        if (body.destroyed) return false;
        o.turns.start(o.namespace, chunk.length);
        done(null, chunk);
        return true;
      });
    },
  });
  // the client's reset or abort fails the body (undici then fails the request); the upstream's
  // early end of it closes the client's request
  pipeline(req, body, () => {});
  return body;
}

/** A request for an upgrade, over a node:http agent (the response is a socket, not a body). */
function start(call: UpgradeCall) {
  const req = call.url.protocol === 'https:' ? httpsRequest : httpRequest;
  return req({
    protocol: call.url.protocol,
    hostname: call.url.hostname,
    port: call.url.port,
    method: call.method,
    path: call.path,
    headers: { ...call.headers, host: call.url.host },
    agent: call.agent as any,
  });
}

function rawHead(status: number, message: string, headers: Record<string, string | string[] | number | undefined>): string {
  let head = `HTTP/1.1 ${status} ${message}\r\n`;
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) head += `${k}: ${one}\r\n`;
  }
  return head + '\r\n';
}

/** Closes a raw socket the gateway has ended: once what is queued for it is sent, its client has
 * 2 s to close its side (it may keep it open: the socket would stay for ever), 30 s at most in all. */
export function closeSoon(socket: Duplex): void {
  const destroy = () => socket.destroy();
  const cap = setTimeout(destroy, 30_000);
  cap.unref();
  socket.once('close', () => clearTimeout(cap));
  const soon = () => setTimeout(destroy, 2000).unref();
  if (socket.writableFinished) soon();
  else socket.once('finish', soon);
}

/**
 * Proxies an upgrade (WebSocket, SPDY). The client socket is joined to the upstream only on 101
 * (`joined` relays them); any other answer is relayed and the connection closed (CVE-2018-1002105).
 * `relaying` gets what ends such an answer while it streams (a watch asked with an Upgrade header).
 * `fail`'s `connect`: no connection could be made (else the upstream reset or broke the exchange).
 */
/** Why a 101 is not the switch the client asked for (another protocol, or a WebSocket accept
 * that is not its key's), or null. */
export function switchedWrong(asked: OutgoingHttpHeaders, answer: IncomingHttpHeaders): string | null {
  const want = String(asked.upgrade ?? '').trim().toLowerCase();
  const got = String(answer.upgrade ?? '').trim().toLowerCase();
  if (got !== want) return `switched to ${JSON.stringify(answer.upgrade ?? '')} when asked for ${JSON.stringify(asked.upgrade ?? '')}`;
  if (want !== 'websocket') return null;
  const key = asked['sec-websocket-key'];
  const accept = typeof key === 'string' ? createHash('sha1').update(key.trim() + webSocketGuid).digest('base64') : undefined;
  return accept !== undefined && answer['sec-websocket-accept'] === accept ? null : 'answered a WebSocket upgrade without the Sec-WebSocket-Accept of its key';
}
const webSocketGuid = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export function proxyUpgrade(call: UpgradeCall, socket: Duplex, fail: (err: AgwError, connect: boolean) => void,
  answered: (status: number) => void, joined: (usocket: Duplex, uhead: Buffer, headers: IncomingHttpHeaders) => void,
  relaying: ((end: () => void) => void) | undefined, pace: Pace): void {
  const up = start(call);
  // the agent keeps no connection: each upgrade makes one
  if (call.connectStarts) pace.turns.chargeStarts(pace.namespace, call.connectStarts);
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; up.destroy(); }, call.timeoutMs);
  // the client left before the answer: not a failure of the upstream's (no 502, no ejection)
  let clientGone = false;
  socket.once('close', () => { clientGone = true; up.destroy(); });
  // informational answers (103) before the answer: at most maxInformational, as for requests
  let informational = 0;
  up.on('information', (info) => {
    pace.turns.chargeStarts(pace.namespace, headStarts(info.rawHeaders.length / 2, true));
    if (++informational > maxInformational) up.destroy(new UpstreamProtocolError(`${call.what} sent more than ${maxInformational} informational answers`));
  });
  /** An answer with more header fields than a request may have: refused (true), what it came
   * with (`other`: its socket or body) destroyed. */
  let refused = false;
  const tooMany = (rawHeaders: string[], other: { destroy(): void }): boolean => {
    pace.turns.chargeStarts(pace.namespace, headStarts(rawHeaders.length / 2, false)); // as a request's answer
    if (rawHeaders.length / 2 <= maxUpstreamHeaderFields) return false;
    refused = true;
    other.destroy();
    fail(new UpstreamProtocolError(`${call.what} answered with ${rawHeaders.length / 2} header fields (at most ${maxUpstreamHeaderFields})`), false);
    return true;
  };
  up.on('upgrade', (ures, usocket, uhead) => {
    clearTimeout(timer);
    if (socket.destroyed) {
      usocket.destroy();
      return;
    }
    if (tooMany(ures.rawHeaders, usocket)) return;
    if (ures.statusCode !== 101) {
      socket.end(rawHead(ures.statusCode ?? 502, ures.statusMessage ?? '', { ...ures.headers, connection: 'close' }));
      usocket.destroy();
      answered(ures.statusCode ?? 502);
      return;
    }
    const wrong = switchedWrong(call.headers, ures.headers);
    if (wrong) { // joined, the client's bytes would reach it unread: a protocol it answers in HTTP takes requests past the rules
      usocket.destroy();
      fail(new UpstreamProtocolError(`${call.what} ${wrong}`), false);
      return;
    }
    socket.write(rawHead(101, 'Switching Protocols', ures.headers));
    joined(usocket, uhead, ures.headers);
  });
  up.on('response', (ures) => {
    clearTimeout(timer);
    if (tooMany(ures.rawHeaders, ures)) return;
    // Not upgraded: relay the answer as it streams (never buffered), its pieces in the namespace's
    // turns as a request's answer's, then close the connection.
    answered(ures.statusCode ?? 502);
    const { connection: _c, 'transfer-encoding': _te, 'keep-alive': _ka, ...headers } = ures.headers;
    socket.write(rawHead(ures.statusCode ?? 502, ures.statusMessage ?? '', { ...headers, connection: 'close' }));
    const body = paced(ures, pace, true);
    // as an answer's: a client full past its buffer pauses the body, and is counted and cut as
    // one waiting (`ReaderWait`)
    const stalled = new ReaderWait(pace, () => socket.destroy());
    const resume = () => {
      stalled.stop();
      body.resume();
    };
    body.on('data', (piece: Buffer) => {
      if (socket.write(piece) || stalled.waiting) return;
      body.pause();
      socket.once('drain', resume);
      stalled.start();
    });
    body.on('end', () => socket.end());
    ures.on('error', () => socket.destroy());
    socket.on('close', () => { stalled.stop(); ures.destroy(); });
    // (the body ends with the connection: ending it is a clean end)
    relaying?.(() => {
      body.removeAllListeners('data');
      body.pause();
      ures.destroy();
      socket.end();
      closeSoon(socket);
    });
  });
  up.on('error', (err) => {
    clearTimeout(timer);
    if (clientGone || refused) return;
    if (err instanceof UpstreamProtocolError) return fail(err, false);
    const f = failure(call, err, timedOut);
    fail(f.err, f.connect);
  });
  socket.on('error', () => up.destroy());
  up.end();
}
