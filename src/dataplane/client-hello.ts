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

/** How long a client's hello may be (0.3–3 KiB; OpenSSL's bound is 128 KiB). */
export const maxClientHandshakeBytes = 16 * 1024;

/** What a client may send after its hello before its handshake is done: on a listener with
 * `clientCA`, its certificate chain (a leaf, intermediates, maybe the root: RSA-4096 certificates
 * with the usual extensions are 1.5–1.9 KiB each), its signature and Finished; a second hello if
 * the listener asked for another key share (HelloRetryRequest). OpenSSL checks every link's
 * signature on the event loop, with the keys the client chose: the costliest found, binary-curve
 * (sect571r1) links, cost ~4 ms each in ~370 bytes, so this bound is what one handshake may hold
 * the loop (100–150 ms measured; a 16 KiB bound let it hold 175–300 ms). */
export const maxClientChainBytes = 10 * 1024;

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

/** A hello sent in more reads than this is refused (a client dripping it byte by byte would
 * make each read parse it all again). Hellos come in one read, or a few. */
const maxHelloReads = 32;

/** A hello read whole: `take()` stops reading and gives it with all the client sent since. */
export interface Hello {
  /** How many of the bytes are the hello. */
  length: number;
  /** It is a TLS 1.3 hello with a key share the listener takes as it is (no second hello). */
  direct: boolean;
  take(): Buffer;
}

/** What a TLS listener answers a request sent in clear (as Go's servers, the apiserver's too, do). */
const plainHTTPAnswer = 'HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n'
  + 'Client sent an HTTP request to an HTTPS server.\n';

/**
 * Reads `raw`'s (paused) first bytes until its hello is whole, then calls `whole`. Until `take()`
 * it keeps reading, to at most `maxClientHandshakeBytes` in all (a client sends nothing more until the
 * server answers). Closes the connection past that, or past `maxHelloReads` reads before the hello
 * is whole (how long it may take is the caller's deadline). `reading` holds the connection until
 * then (a closing listener closes what it holds).
 */
export function readHello(raw: Socket, reading: Set<Socket>, whole: (hello: Hello) => void): void {
  let got: Buffer = Buffer.alloc(0);
  const later: Buffer[] = []; // what came once the hello was whole
  let size = 0;
  let reads = 0;
  let length: number | undefined;
  const stop = () => {
    reading.delete(raw);
  };
  const onData = (chunk: Buffer) => {
    if ((size += chunk.length) > maxClientHandshakeBytes) {
      raw.destroy();
      return;
    }
    if (length !== undefined) { // it waits for its turn
      later.push(chunk);
      return;
    }
    if (!got.length && chunk[0]! >= 0x41 && chunk[0]! <= 0x5a) { // 'A'-'Z': a method, in clear
      stop();
      raw.removeListener('data', onData);
      raw.end(plainHTTPAnswer, () => raw.destroy());
      return;
    }
    got = got.length ? Buffer.concat([got, chunk]) : chunk;
    length = helloLength(got);
    if (length === undefined) {
      if (++reads >= maxHelloReads) raw.destroy();
      return;
    }
    stop();
    const n = length;
    let direct: boolean | undefined;
    whole({
      length: n,
      get direct() { return (direct ??= directHello(got.subarray(0, n))); }, // asked only where the listener meters by it
      take: () => {
        raw.removeListener('data', onData);
        raw.pause();
        return later.length > 0 ? Buffer.concat([got, ...later]) : got;
      },
    });
  };
  reading.add(raw);
  raw.once('close', stop);
  raw.on('data', onData);
  raw.resume();
}

/**
 * The key exchange groups a listener offers (`ecdhCurve`) with the OpenSSL `version`, in one tuple:
 * a client's share for any of them is taken as it is (OpenSSL takes the first of the client's
 * shares it offers), and their TLS code points. X25519MLKEM768 from OpenSSL 3.5 (Node.js 24);
 * 3.0 (Node.js 22) refuses the name.
 */
export function groupsFor(version: string): { curves: string; codes: Set<number> } {
  const [major = 0, minor = 0] = version.split('.').map(Number);
  return major > 3 || (major === 3 && minor >= 5)
    ? { curves: 'X25519MLKEM768:X25519:P-256', codes: new Set([0x11ec, 0x001d, 0x0017]) }
    : { curves: 'X25519:P-256', codes: new Set([0x001d, 0x0017]) };
}

const groups = groupsFor(process.versions.openssl);
export const listenerGroups = groups.curves;

/**
 * Whether `hello` (whole, in its records) is a TLS 1.3 ClientHello with a key share for one of
 * `listenerGroups`: the listener answers it at once, and the client's next bytes are cheap (its
 * Finished). Any other (TLS 1.2, a share the listener asks again for, bytes it cannot read) may
 * make the listener's costly work wait on later bytes.
 */
export function directHello(hello: Buffer): boolean {
  // the hello's message, without its records' headers
  const parts: Buffer[] = [];
  for (let at = 0; at + recordHeader <= hello.length;) {
    const len = hello.readUInt16BE(at + 3);
    parts.push(hello.subarray(at + recordHeader, at + recordHeader + len));
    at += recordHeader + len;
  }
  const m = Buffer.concat(parts);
  if (hello[0] !== 22 || m[0] !== 1) return false; // not a ClientHello in handshake records
  try {
    let at = messageHeader + 2 + 32; // version, random
    at += 1 + m.readUInt8(at); // session id
    at += 2 + m.readUInt16BE(at); // cipher suites
    at += 1 + m.readUInt8(at); // compression methods
    const end = at + 2 + m.readUInt16BE(at);
    at += 2;
    let v13 = false;
    let share = false;
    while (at + 4 <= end) {
      const type = m.readUInt16BE(at);
      const len = m.readUInt16BE(at + 2);
      const data = m.subarray(at + 4, at + 4 + len);
      if (type === 0x002b) { // supported_versions
        const n = data.readUInt8(0);
        for (let i = 1; i + 2 <= 1 + n; i += 2) if (data.readUInt16BE(i) === 0x0304) v13 = true;
      } else if (type === 0x0033) { // key_share
        for (let i = 2; i + 4 <= data.length; i += 4 + data.readUInt16BE(i + 2)) if (groups.codes.has(data.readUInt16BE(i))) share = true;
      }
      at += 4 + len;
    }
    return v13 && share;
  } catch {
    return false; // out of bounds: not a hello it can read
  }
}
