// A TLS client's hello, read whole before its handshake may start. Handshakes take turns by what
// they cost (`HandshakeShare`), and the costly part (the listener key's signature) happens when
// TLS reads the hello: a client that opened many connections and held back their hellos (or
// their last byte) until all had started could have every signature made in one pass of the
// event loop. Reading the hello first makes a handshake's start and its cost happen together.

import type { Socket } from 'node:net';

/** The TLS record header: type (22: handshake), version, length. */
const recordHeader = 5;
/** The handshake message header: type (1: ClientHello), length (3 bytes). */
const messageHeader = 4;

/** What a client may send before its hello is whole (hellos are 0.3–3 KiB; OpenSSL's bound is 128 KiB). */
export const maxHelloBytes = 16 * 1024;

/**
 * How many bytes of `data` (a connection's first bytes) make its whole hello: a number once the
 * hello is complete (or once the bytes are plainly not a TLS hello: TLS will refuse them), else
 * undefined (more is needed). The hello may span records, its header too.
 */
export function helloLength(data: Buffer): number | undefined {
  let at = 0;
  const head: number[] = []; // the hello's message header, over records
  let message = 0; // the hello's bytes seen, its header included
  let want = Infinity;
  while (at + recordHeader <= data.length) {
    if (data[at] !== 22) return at || data.length; // not a handshake record
    const len = data.readUInt16BE(at + 3);
    const start = at + recordHeader;
    if (start + len > data.length) return undefined; // this record is not all here
    for (let i = start; i < start + len && head.length < messageHeader; i++) head.push(data[i]!);
    if (want === Infinity && head.length === messageHeader) {
      if (head[0] !== 1) return start + len; // not a ClientHello
      want = messageHeader + ((head[1]! << 16) | (head[2]! << 8) | head[3]!);
    }
    message += len;
    at = start + len;
    if (message >= want) return at;
  }
  return undefined;
}

/**
 * Reads `raw`'s (paused) first bytes until its hello is whole, then pauses it and calls `whole`
 * with the hello and what came after it. Closes the connection when the client sends more than
 * `maxHelloBytes` first, or nothing whole within `timeoutMs`.
 */
export function readHello(raw: Socket, timeoutMs: number, whole: (hello: Buffer, rest: Buffer) => void): void {
  let got: Buffer = Buffer.alloc(0);
  const late = () => raw.destroy();
  const onData = (chunk: Buffer) => {
    got = got.length ? Buffer.concat([got, chunk]) : chunk;
    const n = helloLength(got);
    if (n === undefined) {
      if (got.length > maxHelloBytes) raw.destroy();
      return;
    }
    raw.pause();
    raw.removeListener('data', onData);
    raw.setTimeout(0);
    raw.removeListener('timeout', late);
    whole(got.subarray(0, n), got.subarray(n));
  };
  raw.on('data', onData);
  raw.setTimeout(timeoutMs, late);
  raw.resume();
}
