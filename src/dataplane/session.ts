// Interactive sessions: the upgraded connections a gateway relays (exec, attach, port-forward,
// WebSockets). The relay reads frame headers as they pass (WebSocket, SPDY/3.1), so pings do not
// count as activity for the idle timeout, and a session it ends gets a last frame that says why
// (a WebSocket close frame; for SPDY exec and attach a Status on the error stream) at a frame
// boundary, not a cut in the middle of a frame.
import type { Duplex } from 'node:stream';
import { ReaderWait, type Pace } from './upstream.js';

/** `websocket-spdy`: SPDY tunnelled in WebSocket binary messages (kubectl port-forward's WebSocket protocol). */
export type FrameProtocol = 'websocket' | 'websocket-spdy' | 'spdy' | 'opaque';

/** From the request's Upgrade header and the subprotocol the upstream chose. */
export function frameProtocol(upgrade: string | undefined, subprotocol?: string): FrameProtocol {
  const u = (upgrade ?? '').toLowerCase();
  if (u === 'websocket') return subprotocol?.toLowerCase().startsWith('spdy/3') ? 'websocket-spdy' : 'websocket';
  return u.startsWith('spdy/3') ? 'spdy' : 'opaque';
}

/** What a pod subresource session is about (for the session's log lines). */
export interface SessionTarget {
  kind: 'exec' | 'attach' | 'portforward' | 'upgrade';
  pod?: string;
  container?: string;
  command?: string[];
  ports?: string[];
}

const podSession = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/(exec|attach|portforward)$/;

export function sessionTarget(url: string): SessionTarget {
  const q = url.indexOf('?');
  const m = podSession.exec(q < 0 ? url : url.slice(0, q));
  if (!m) return { kind: 'upgrade' };
  const params = new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
  const t: SessionTarget = { kind: m[3] as SessionTarget['kind'], pod: `${decodeURIComponent(m[1]!)}/${decodeURIComponent(m[2]!)}` };
  const container = params.get('container');
  if (container) t.container = container;
  // the command is logged (as in the apiserver's audit log), bounded: 32 arguments of 256 characters
  if (t.kind === 'exec') t.command = params.getAll('command').slice(0, 32).map((c) => (c.length > 256 ? `${c.slice(0, 256)}…` : c));
  // kubectl names ports in its streams' headers; a WebSocket client may name them here
  if (t.kind === 'portforward' && params.has('ports')) t.ports = params.getAll('ports');
  return t;
}

/** Header bytes a frame watch reads one by one per start of its namespace's turns (each frame
 * counts `frameBytes` more for its own work): a start's worth of relayed body costs the event loop
 * about as much (docs/performance.md). */
const headerBytesPerStart = 4096;
const frameBytes = 4;

/** The key of bytes that are not masked. */
const unmasked = new Uint8Array(4);

/**
 * Follows frame boundaries in one direction of a relayed connection. `feed` reports whether a
 * chunk carried application data, and can stop at the first boundary it reaches. Payload is
 * skipped in bulk; header bytes are read one by one, and counted (`owed`).
 */
export class FrameWatch {
  /** Header bytes read so far (a header can span chunks), and how many this header needs. */
  private readonly head = Buffer.alloc(14);
  private headLen = 0;
  private headNeed: number;
  private remaining = 0;
  private data = false;
  /** The frame being read is application data (its payload counts, in whatever chunk it comes). */
  private dataFrame = false;
  /** SPDY: bytes of the first SYN_STREAM's payload still to capture, and what was captured. */
  private capture = -1;
  private captured: number[] = [];
  /** SPDY: the stream the peer opened first (client-go opens its error stream first). */
  firstStream: number | undefined;
  /** websocket-spdy: the tunnelled SPDY, fed the payload of data frames (unmasked as it reads). */
  private readonly inner: FrameWatch | undefined;
  private tunnelled = false;
  /** The mask of the message being read (`unmasked`, or `key`), and where in it its payload is. */
  private mask = unmasked;
  private readonly key = new Uint8Array(4);
  private maskAt = 0;
  /** Header bytes of whole frames read (and `frameBytes` a frame), and of those what `owed` counted. */
  private walked = 0;
  private charged = 0;

  constructor(private readonly protocol: FrameProtocol) {
    if (protocol === 'websocket-spdy') this.inner = new FrameWatch('spdy');
    this.headNeed = this.firstNeed();
  }

  get atBoundary(): boolean {
    return this.protocol === 'opaque' || (this.remaining === 0 && this.headLen === 0);
  }

  /** SPDY headers are 8 bytes; a WebSocket header's length is known from its second byte. */
  private firstNeed(): number {
    return this.protocol === 'spdy' ? 8 : 2;
  }

  /** Bytes of `chunk` read (all, or up to the first boundary), and whether any were application data. */
  feed(chunk: Buffer, untilBoundary = false): { used: number; data: boolean } {
    if (this.protocol === 'opaque') return { used: chunk.length, data: chunk.length > 0 };
    this.data = false;
    const used = this.walk(chunk, 0, chunk.length, untilBoundary, unmasked, 0);
    return { used, data: this.data };
  }

  /** Starts owed for the header bytes read since last asked (tunnelled ones too): one per
   * `headerBytesPerStart`, the rest kept for later. */
  owed(): number {
    const due = this.walked + (this.inner?.walked ?? 0) - this.charged;
    if (due < headerBytesPerStart) return 0;
    const n = Math.floor(due / headerBytesPerStart);
    this.charged += n * headerBytesPerStart;
    return n;
  }

  /** Reads `chunk` from `i` to `end`, each byte xor `key[(at + k) & 3]` (k: its place from `i`);
   * the index it stopped at. */
  private walk(chunk: Buffer, i: number, end: number, untilBoundary: boolean, key: Uint8Array, at: number): number {
    const shift = at - i;
    while (i < end) {
      if (this.remaining > 0 && this.capture > 0) {
        this.captured.push(chunk[i]! ^ key[(i + shift) & 3]!);
        i++;
        this.remaining--;
        if (--this.capture === 0) this.firstStream = ((this.captured[0]! & 0x7f) << 24 | this.captured[1]! << 16 | this.captured[2]! << 8 | this.captured[3]!) >>> 0;
      } else if (this.remaining > 0) {
        const n = Math.min(this.remaining, end - i);
        if (this.tunnelled) this.feedInner(chunk, i, i + n);
        else if (this.dataFrame) this.data = true;
        this.remaining -= n;
        i += n;
      } else {
        const h = this.head, need = this.headNeed;
        let n = this.headLen;
        if (key === unmasked) for (; n < need && i < end; i++) h[n++] = chunk[i]!;
        else for (; n < need && i < end; i++) h[n++] = chunk[i]! ^ key[(i + shift) & 3]!;
        this.headLen = n;
        if (n === need) this.parseHead();
      }
      if (untilBoundary && this.atBoundary) break;
    }
    return i;
  }

  private parseHead(): void {
    const h = this.head;
    if (this.protocol === 'spdy') {
      const control = (h[0]! & 0x80) !== 0;
      const type = (h[2]! << 8) | h[3]!;
      this.dataFrame = !control || type !== 6; // 6: PING
      if (this.dataFrame) this.data = true;
      this.remaining = (h[5]! << 16) | (h[6]! << 8) | h[7]!;
      if (control && type === 1 && this.capture < 0 && this.remaining >= 4) this.capture = 4; // SYN_STREAM
    } else {
      const len7 = h[1]! & 0x7f;
      const need = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + ((h[1]! & 0x80) ? 4 : 0);
      if (this.headLen < need) {
        this.headNeed = need;
        return;
      }
      let len = len7;
      if (len7 === 126) len = (h[2]! << 8) | h[3]!;
      else if (len7 === 127) { len = 0; for (let k = 2; k < 10; k++) len = len * 256 + h[k]!; }
      const opcode = h[0]! & 0x0f;
      // a tunnelled message is data only if the SPDY frames in it are (SPDY PINGs are not)
      this.tunnelled = this.inner !== undefined && opcode <= 0x2;
      this.dataFrame = !this.tunnelled && opcode !== 0x9 && opcode !== 0xa; // ping, pong
      if (this.dataFrame) this.data = true;
      if (this.tunnelled && (h[1]! & 0x80)) {
        const k = this.key;
        k[0] = h[need - 4]!; k[1] = h[need - 3]!; k[2] = h[need - 2]!; k[3] = h[need - 1]!;
        this.mask = k;
      } else {
        this.mask = unmasked;
      }
      this.maskAt = 0;
      this.remaining = len;
    }
    this.walked += this.headLen + frameBytes;
    this.headLen = 0;
    this.headNeed = this.firstNeed();
  }

  /** The tunnelled SPDY reads a data message's payload, unmasking only the bytes it reads. */
  private feedInner(chunk: Buffer, from: number, to: number): void {
    const inner = this.inner!;
    inner.data = false;
    inner.walk(chunk, from, to, false, this.mask, this.maskAt);
    inner.walked += frameBytes; // (each call's own work: 1-byte messages cost it per byte)
    this.maskAt = (this.maskAt + to - from) & 3;
    if (inner.data) this.data = true;
  }
}

/** The last frame a closing session sends its client. */
export function closingFrame(protocol: FrameProtocol, code: number, reason: string): Buffer | undefined {
  if (protocol === 'websocket' || protocol === 'websocket-spdy') {
    const text = Buffer.from(reason).subarray(0, 123); // a control frame's payload is at most 125 bytes
    const f = Buffer.alloc(4 + text.length);
    f[0] = 0x88; // FIN, close
    f[1] = 2 + text.length;
    f.writeUInt16BE(code, 2);
    text.copy(f, 4);
    return f;
  }
  return undefined;
}

/**
 * SPDY remote command sessions (exec, attach) say why on the client's error stream: a Status that
 * kubectl prints ("error: MESSAGE"), as the last data of that stream.
 */
export function spdyErrorFrame(stream: number, message: string, reason: string): Buffer {
  const status = Buffer.from(JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason }));
  const f = Buffer.alloc(8 + status.length);
  f.writeUInt32BE(stream & 0x7fffffff, 0);
  f.writeUInt32BE(status.length, 4);
  f[4] = 0x01; // FIN
  status.copy(f, 8);
  return f;
}

/**
 * One direction of a relay: each piece takes a turn of its namespace (as a long body's do), and
 * past its share of a turn it is held, its source paused, and sent in a later one; the source is
 * paused too while its sink is full, and resumed when neither holds.
 */
class Valve {
  private full = false;
  private held: Buffer[] | undefined;
  /** What waits for the held pieces to be sent (the source ended or closed meanwhile). */
  private then: Array<() => void> | undefined;
  /** While the sink is full: counted, and cut when it stays full (`ReaderWait`). */
  readonly stalled: ReaderWait | undefined;

  /** `send`: writes a piece to the sink (false: it is full); `over`: the relay has ended; `cut`:
   * ends it (its sink full too long, or past its namespace's bound of those waiting). */
  constructor(private readonly source: Duplex, private readonly pace: Pace | undefined,
    private readonly send: (piece: Buffer) => boolean, private readonly over: () => boolean, cut: () => void) {
    this.stalled = pace && new ReaderWait(pace, cut);
  }

  /** A piece read from the source. */
  pass(piece: Buffer): void {
    if (this.over()) return; // (the client may send for a while once the upstream is gone)
    if (this.held) { // (a paused socket may still hand over what it had read: it goes behind)
      this.held.push(piece);
      return;
    }
    const p = this.pace;
    if (p && !p.turns.tryStart(p.namespace, piece.length)) {
      this.held = [piece];
      p.m.pieceDeferred();
      this.source.pause();
      p.turns.wait(p.namespace, this.turn);
      return;
    }
    this.sent(this.send(piece));
  }

  /** Runs `f` once what is held has been sent: at once when nothing is. */
  after(f: () => void): void {
    if (this.held) (this.then ??= []).push(f);
    else f();
  }

  /** The sink took what it had. */
  drained(): void {
    this.full = false;
    this.stalled?.stop();
    if (!this.held) this.source.resume();
  }

  private sent(ok: boolean): void {
    if (ok || this.full) return;
    this.full = true;
    this.source.pause();
    this.stalled?.start();
  }

  private readonly turn = (): boolean => {
    const pieces = this.held!;
    this.held = undefined;
    if (this.over()) return false;
    let ok = true, bytes = 0;
    for (const piece of pieces) {
      ok = this.send(piece);
      bytes += piece.length;
    }
    this.pace!.turns.start(this.pace!.namespace, bytes);
    this.sent(ok);
    if (!this.full) this.source.resume();
    const then = this.then;
    this.then = undefined;
    for (const f of then ?? []) f();
    return true;
  };
}

/** `revoked`: spec.access or the route no longer admits it (a rule's notAfter passed, the spec changed). */
export type SessionEnd = 'closed' | 'idle' | 'shutdown' | 'revoked';

/**
 * Relays an upgraded connection between client and upstream, counting bytes each way, ending it
 * after `idleMs` without application data, or on `end()`.
 */
export class Session {
  bytesFromClient = 0;
  bytesToClient = 0;
  readonly started = performance.now();
  private last = performance.now();
  private timer: NodeJS.Timeout | undefined;
  private ending: { reason: SessionEnd; code: number; text: string; statusReason: string } | undefined;
  private done = false;
  private readonly down: FrameWatch;
  private readonly up: FrameWatch;
  /** Client to upstream, and back. */
  private readonly toUpstream: Valve;
  private readonly fromUpstream: Valve;

  /** `remoteCommand`: exec or attach (their SPDY error stream can carry the reason for an end);
   * `pace`: the namespace's turns, which each piece relayed takes (and the frame headers read). */
  constructor(private readonly client: Duplex, private readonly upstream: Duplex, private readonly protocol: FrameProtocol,
    private readonly remoteCommand: boolean, private readonly idleMs: number, private readonly onEnd: (s: Session, reason: SessionEnd) => void,
    private readonly pace?: Pace) {
    this.down = new FrameWatch(protocol);
    this.up = new FrameWatch(protocol);
    // a side that reads nothing for the idle time, or past the namespace's bound of streams waiting
    // for their readers, ends the session
    const stalled = pace && { ...pace, stalledMs: idleMs };
    const cut = () => this.finish('idle', 'destroy');
    this.toUpstream = new Valve(client, stalled, (piece) => this.upstream.write(piece), () => this.done, cut);
    this.fromUpstream = new Valve(upstream, stalled, (piece) => this.toClient(piece), () => this.done, cut);
  }

  /** The relay has ended (both sides closed or closing). */
  get finished(): boolean {
    return this.done;
  }

  /** Starts relaying; `clientHead`/`upstreamHead` are bytes already read past the upgrade. */
  start(clientHead: Buffer, upstreamHead: Buffer): void {
    this.client.on('data', (chunk: Buffer) => {
      this.bytesFromClient += chunk.length;
      if (this.up.feed(chunk).data) this.last = performance.now();
      this.charge(this.up);
      this.toUpstream.pass(chunk);
    });
    this.upstream.on('drain', () => this.toUpstream.drained());
    this.upstream.on('data', (chunk: Buffer) => this.fromUpstream.pass(chunk));
    this.client.on('drain', () => this.fromUpstream.drained());
    // the client went (or broke): nothing more can reach it
    const clientGone = () => this.finish(this.ending?.reason ?? 'closed', 'destroy');
    this.client.on('close', clientGone); this.client.on('error', clientGone);
    // the upstream went: what it sent still reaches the client (the pieces held for their turn
    // too), then the client's side is closed
    const upstreamGone = () => this.fromUpstream.after(() => this.finish(this.ending?.reason ?? 'closed', 'end'));
    this.upstream.on('close', upstreamGone); this.upstream.on('error', upstreamGone);
    // a side that ends its sending: the other side's sending is ended after what it sent
    this.client.on('end', () => this.toUpstream.after(() => this.upstream.end()));
    this.upstream.on('end', () => this.fromUpstream.after(() => this.client.end()));
    if (upstreamHead.length) this.fromUpstream.pass(upstreamHead);
    if (clientHead.length) this.client.emit('data', clientHead);
    this.armIdle(this.idleMs);
  }

  /** Ends the session: at the next frame boundary toward the client, with a frame that says why. */
  end(reason: SessionEnd, code: number, text: string, statusReason: string): void {
    if (this.ending || this.done) return;
    this.ending = { reason, code, text, statusReason };
    if (this.down.atBoundary) this.close();
    else setTimeout(() => this.finish(reason, 'destroy'), 1000).unref(); // a frame that does not end soon is cut
  }

  /** Writes what the upstream sent (up to the frame that ends a session that is ending): false
   * when the client's buffer is full. */
  private toClient(chunk: Buffer): boolean {
    if (this.done) return true;
    let part = chunk;
    if (this.ending) {
      const { used } = this.down.feed(chunk, true);
      part = chunk.subarray(0, used);
    } else if (this.down.feed(chunk).data) {
      this.last = performance.now();
    }
    this.charge(this.down);
    this.bytesToClient += part.length;
    const ok = this.client.write(part);
    if (this.ending && this.down.atBoundary) this.close();
    return ok;
  }

  /** Charges the namespace for the frame headers `w` read, past what the pieces' bytes cost. */
  private charge(w: FrameWatch): void {
    const n = w.owed();
    if (n > 0 && this.pace) this.pace.turns.chargeStarts(this.pace.namespace, n);
  }

  private close(): void {
    const e = this.ending!;
    const stream = this.up.firstStream;
    const frame = closingFrame(this.protocol, e.code, e.text)
      ?? (this.remoteCommand && stream !== undefined ? spdyErrorFrame(stream, e.text, e.statusReason) : undefined);
    // no frame to say it with (SPDY port-forward, other upgrades): the connection is closed
    this.finish(e.reason, frame ? 'end' : 'destroy', frame);
  }

  private armIdle(ms: number): void {
    this.timer = setTimeout(() => {
      const left = this.idleMs - (performance.now() - this.last);
      if (left > 0) this.armIdle(left);
      else this.end('idle', 1008, `the session was idle for ${Math.round(this.idleMs / 1000)} s`, 'Timeout');
    }, ms);
    this.timer.unref();
  }

  /** Ends the relay once: the upstream is closed; the client at once, or after what is queued for it (and `last`). */
  private finish(reason: SessionEnd, client: 'destroy' | 'end', last?: Buffer): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    this.toUpstream.stalled?.stop();
    this.fromUpstream.stalled?.stop();
    this.upstream.destroy();
    if (client === 'destroy') {
      this.client.destroy();
    } else {
      if (!this.client.writableEnded) this.client.end(last); // (the upstream's end may have ended it)
      setTimeout(() => this.client.destroy(), 2000).unref(); // a client that does not close its side
    }
    this.onEnd(this, reason);
  }
}
