// A client's TLS handshake, metered. On a listener that asks for client certificates, OpenSSL
// checks the chain the client sends during the handshake, on the event loop every team shares,
// and each link may cost ~4–6 ms (a binary-curve key, an RSA key with a 3,000-bit exponent): one
// handshake could hold the loop ~0.5 s. Its bytes pass through here: the client may send at most
// `maxClientChainBytes` after its hello before its handshake is done, what comes after the hello
// waits for a turn of the handshake share (a client holding back many chains cannot have them
// checked at once), and the time TLS spends on each read is reported (to be charged). The
// gateway's own handshakes with teams' HTTPS backends pass through one too (backend-handshake.ts).
import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { maxClientChainBytes } from './client-hello.js';


export interface MeterHooks {
  /** The ms TLS spent on one read of the client's bytes before the handshake was done. */
  spent(ms: number): void;
  /** `feed` gives TLS what the client sent after its hello: call it when the share allows. */
  gate(feed: () => boolean): void;
  /** The client sent more than `maxClientChainBytes` after its hello before its handshake was done (closed). */
  tooLarge(): void;
}

/**
 * The raw connection as a stream TLS reads from and writes to. Until `done()` (the handshake is
 * done), the client's bytes are counted, those after its first read wait for `hooks.gate`, and
 * the time TLS takes on them is reported to `hooks.spent`.
 */
export class HandshakeMeter extends Duplex {
  /** The meter whose bytes TLS is reading now (its handshake may be done by them). */
  static feeding: HandshakeMeter | undefined;
  private fed = 0;
  /** What the client may send before its handshake is done: its hello and `maxClientChainBytes` (or the bound given). */
  private readonly bound: number;
  private metering = true;
  /** Client bytes waiting for a turn (after the first read, before the handshake is done). */
  private pending: Buffer[] = [];
  private waiting = false;
  /** The client ended its side while some of its bytes waited. */
  private ended = false;
  private doneAt: number | undefined;

  /** `helloBytes`: the length of the client's hello, read already and put back in `raw` (its
   * handshake's start had its turn): TLS gets it at once, and all that follows waits for a turn.
   * `bound`: what may follow it before the handshake is done (a backend's whole side, from the
   * gateway as its client: backend-handshake.ts). */
  constructor(private readonly raw: Socket, private readonly hooks: MeterHooks, private helloBytes: number, bound = maxClientChainBytes) {
    super({ allowHalfOpen: true });
    this.bound = helloBytes + bound;
    raw.on('data', (chunk: Buffer) => {
      if (!this.metering) {
        if (!this.push(chunk)) raw.pause();
      } else if (this.helloBytes > 0) {
        const hello = chunk.subarray(0, this.helloBytes);
        this.helloBytes -= hello.length;
        this.pending.push(hello);
        this.feed();
        if (chunk.length > hello.length) this.wait(chunk.subarray(hello.length));
      } else {
        this.wait(chunk);
      }
    });
    raw.on('end', () => {
      if (this.waiting) this.ended = true; // after what waits
      else this.push(null);
    });
    raw.on('error', (err) => this.destroy(err));
    raw.on('close', () => this.destroy());
  }

  /** The handshake is done: what follows passes as it comes. */
  done(): void {
    if (!this.metering) return;
    this.metering = false;
    if (HandshakeMeter.feeding === this) this.doneAt = performance.now();
  }

  /** The addresses of the raw connection, on the TLS socket made from this (it has none of its own). */
  describe(tls: Socket): void {
    for (const k of ['remoteAddress', 'remotePort', 'remoteFamily', 'localAddress', 'localPort'] as const) {
      Object.defineProperty(tls, k, { value: this.raw[k], configurable: true });
    }
  }

  /** `chunk` waits for a turn (in the kernel, what follows it). */
  private wait(chunk: Buffer): void {
    this.pending.push(chunk);
    this.raw.pause();
    if (this.waiting) return;
    this.waiting = true;
    this.hooks.gate(() => {
      this.waiting = false;
      return this.feed();
    });
  }

  /** Gives TLS what waits, up to the bound while the handshake is not done; false if gone. */
  private feed(): boolean {
    if (this.destroyed || this.raw.destroyed) return false;
    const chunks = this.pending;
    this.pending = [];
    try {
      return this.give(chunks);
    } catch (err) { // a listener of what TLS emits threw: the connection cannot go on
      this.destroy(err as Error);
      return true;
    }
  }

  private give(chunks: Buffer[]): boolean {
    let more = true;
    for (const chunk of chunks) {
      if (!this.metering) {
        more = this.push(chunk);
        continue;
      }
      const room = Math.max(0, this.bound - this.fed);
      this.fed += chunk.length;
      more = this.push(chunk.length > room ? chunk.subarray(0, room) : chunk);
      if (chunk.length <= room) continue;
      if (this.metering) { // the bound is reached and the handshake is not done
        this.hooks.tooLarge();
        this.destroy();
        return true;
      }
      more = this.push(chunk.subarray(room)); // what followed its last handshake bytes
    }
    if (this.ended) this.push(null);
    else if (more && !this.destroyed) this.raw.resume();
    return true;
  }

  override emit(event: string | symbol, ...args: unknown[]): boolean {
    if (event !== 'data' || !this.metering) return super.emit(event, ...args);
    const outer = HandshakeMeter.feeding;
    HandshakeMeter.feeding = this;
    this.doneAt = undefined;
    const t = performance.now();
    try {
      return super.emit(event, ...args);
    } finally {
      HandshakeMeter.feeding = outer;
      this.hooks.spent((this.doneAt ?? performance.now()) - t); // not what ran after the handshake was done
    }
  }

  override _read(): void {
    if (!this.waiting) this.raw.resume();
  }

  // a write is done once the connection takes it: waiting for each to reach the kernel would
  // hold every answer behind the one before it
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.raw.write(chunk)) cb();
    else this.raw.once('drain', cb);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    this.raw.cork();
    let more = true;
    for (const { chunk } of chunks) more = this.raw.write(chunk);
    this.raw.uncork();
    if (more) cb();
    else this.raw.once('drain', cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.raw.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.raw.destroy();
    cb(err);
  }
}
