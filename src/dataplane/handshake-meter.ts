// A client's TLS handshake, metered. On a listener that asks for client certificates, OpenSSL
// checks the chain the client sends during the handshake, on the event loop every team shares,
// and each link may cost ~6 ms (an RSA key with a 3,000-bit exponent): one handshake could hold
// the loop ~400 ms. Its bytes pass through here, so the client may send at most
// `maxClientHandshakeBytes` before its handshake is done, and what OpenSSL spends on them is measured
// (and charged to the namespace's handshake share).
import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';

/** What a client may send before its TLS handshake is done: its hello, a chain of a few
 * certificates (RSA-4096: ~1.5 KiB each) and its signature fit. */
export const maxClientHandshakeBytes = 16 * 1024;

/**
 * The raw connection as a stream TLS reads from and writes to. Until `done()`, it counts what the
 * client sends (over `maxClientHandshakeBytes`: the connection is closed before TLS reads it, and
 * `onTooLarge` told) and the time TLS takes on it.
 */
export class HandshakeMeter extends Duplex {
  /** The meter whose bytes TLS is reading now (its handshake may be done by them). */
  static feeding: HandshakeMeter | undefined;
  private bytes = 0;
  private spent = 0;
  private metering = true;
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  readonly remoteFamily: string | undefined;
  readonly localAddress: string | undefined;
  readonly localPort: number | undefined;

  /** `onDone`: once, what TLS spent on the client's bytes until the handshake was done or the connection closed, in ms. */
  constructor(private readonly raw: Socket, private readonly onDone: (ms: number) => void, private readonly onTooLarge: () => void) {
    super({ allowHalfOpen: true });
    ({ remoteAddress: this.remoteAddress, remotePort: this.remotePort, remoteFamily: this.remoteFamily,
      localAddress: this.localAddress, localPort: this.localPort } = raw);
    raw.on('data', (chunk: Buffer) => {
      if (this.metering && (this.bytes += chunk.length) > maxClientHandshakeBytes) {
        this.onTooLarge();
        raw.destroy();
        return;
      }
      if (!this.push(chunk)) raw.pause();
    });
    raw.on('end', () => this.push(null));
    raw.on('error', (err) => this.destroy(err));
    raw.on('close', () => this.destroy());
  }

  /** The handshake is done: stops counting, and reports what it cost. */
  done(): void {
    if (!this.metering) return;
    this.metering = false;
    if (HandshakeMeter.feeding !== this) this.onDone(this.spent); // else once TLS is through with these bytes
  }

  /** The addresses of the raw connection, on the TLS socket made from this (it has none of its own). */
  describe(tls: Socket): void {
    for (const k of ['remoteAddress', 'remotePort', 'remoteFamily', 'localAddress', 'localPort'] as const) {
      Object.defineProperty(tls, k, { value: this[k], configurable: true });
    }
  }

  override emit(event: string | symbol, ...args: unknown[]): boolean {
    if (event !== 'data' || !this.metering) return super.emit(event, ...args);
    const t = performance.now();
    HandshakeMeter.feeding = this;
    try {
      return super.emit(event, ...args);
    } finally {
      HandshakeMeter.feeding = undefined;
      this.spent += performance.now() - t;
      if (!this.metering) this.onDone(this.spent);
    }
  }

  override _read(): void {
    this.raw.resume();
  }

  // a write is done once the connection takes it: waiting for each to reach the kernel would
  // hold every answer behind the one before it
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.raw.write(chunk)) cb();
    else this.raw.once('drain', cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.raw.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.done();
    this.raw.destroy();
    cb(err);
  }
}
