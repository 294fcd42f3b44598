// What undici's parser reads from a team's backend without calling the answer's handler: chunk
// extensions, leading zeros of chunk sizes and blank lines before a head (it bounds none: 1 MiB of
// extension an answer took another team's p50 to 32 ms), chunk framing, and a head's bytes.
// A connection's parser reads with its socket's `read()` and parses each read at once, calling the
// handler only from within (undici asserts one parse at a time); so the connection read last is
// the one whose answer the handler is told of. The handler (proxyRequest) charges what was read
// and was not body, a start per 16 KiB as a body's pieces cost; what a connection owes when it
// closes is charged then. More than 64 KiB read without a head or a body piece fails the
// connection (no answer needs it: undici refuses heads past 16 KiB).
import type { Duplex } from 'node:stream';
import { UpstreamProtocolError } from '../errors.js';

/** What a start buys of bytes that were not body (as of a body's pieces). */
export const wireBytesPerStart = 16 * 1024;
/** Bytes a connection may read without its parser handing on a head or a body piece. */
export const maxSilentBytes = 64 * 1024;

class WireMeter {
  /** Bytes the parser took (read, less what it gave back); body handed on; charged as neither. */
  took = 0;
  body = 0;
  charged = 0;
  /** `took` when a head or body piece was last handed on. */
  mark = 0;
  constructor(readonly owner: object) {}

  /** Bytes taken that were not body and are not charged yet (at most one read early). */
  get due(): number {
    return this.took - this.body - this.charged;
  }
}

/** The meter of the connection read last (see above). */
let parsing: WireMeter | undefined;

/** Counts what undici's parser reads from `socket`, a connection of `owner` (its pool). Reads
 * stop at the bound, not a read past it; what a connection still owes when it closes (cut, failed,
 * or idle) goes to `closed`, in whole starts (its answers' handlers may never be called again). */
export function meterReads(socket: Duplex, owner: object, what: string, closed: (starts: number) => void): void {
  const m = new WireMeter(owner);
  const read = socket.read, unshift = socket.unshift;
  socket.read = function (this: Duplex, size?: number) {
    if (size !== undefined) return read.call(this, size); // the stream's own read(0)
    parsing = m;
    const room = maxSilentBytes - (m.took - m.mark);
    if (room <= 0) {
      this.destroy(new UpstreamProtocolError(`${what} sent more than ${maxSilentBytes / 1024} KiB without a head or a body piece (chunk extensions, padded chunk sizes, blank lines)`));
      return null;
    }
    const chunk = (this.readableLength > room ? read.call(this, room) : read.call(this)) as Buffer | null;
    if (chunk) m.took += chunk.length;
    return chunk;
  };
  socket.unshift = function (this: Duplex, chunk: Buffer, encoding?: BufferEncoding) {
    if (chunk) {
      m.took -= chunk.length; // paused: read again later
      m.mark = Math.min(m.mark, m.took); // (the bound counts from what was parsed)
    }
    return unshift.call(this, chunk, encoding);
  };
  socket.once('close', () => {
    // (less than 16 KiB left is not charged: a head each on Connection: close would double a request's cost)
    const n = Math.floor(m.due / wireBytesPerStart);
    if (n > 0) closed(n);
    if (parsing === m) parsing = undefined;
  });
}

/**
 * What the handler of an answer on `owner`'s connections calls: at its head (`body` null: marked,
 * nothing charged, as the read may hold the body too), each body piece, and its end (`end`:
 * charged, not a sign of progress, as undici may end an answer without a read). The starts owed
 * for what its connection read that was not body.
 */
export function wireOwed(owner: object, body: number | null, end = false): number {
  const m = parsing;
  if (m?.owner !== owner) return 0; // an apiserver answer, or a test's own pool
  if (!end) m.mark = m.took;
  if (body === null) return 0;
  m.body += body;
  const n = Math.floor(m.due / wireBytesPerStart);
  if (n <= 0) return 0;
  m.charged += n * wireBytesPerStart;
  return n;
}
