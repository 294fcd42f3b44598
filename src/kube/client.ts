// The operator's connection to the apiserver: credentials from a kubeconfig or the in-cluster
// config (kubeconfig.ts: KUBECONFIG, exec plugins, the rotating token file), JSON requests and
// line-delimited watch streams over undici; protobuf lists and watches where a caller reads it
// (protobuf.ts).
import { loadClusterAccess, type ClusterAccess } from './kubeconfig.js';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { createSecureContext } from 'node:tls';
import { Agent, Pool, type Dispatcher } from '../undici.js';
import type { Logger } from 'pino';
import { decodeStatus, decodeWatchEvent, isProtobuf, protobufType, unwrap, WireError } from './protobuf.js';
import { readCapped } from '../capped.js';

export { TooLarge } from '../capped.js';

/** A non-2xx answer of the apiserver: its status, and the reason and message of its Status body. */
export class ApiError extends Error {
  readonly reason: string;
  constructor(readonly status: number, readonly body: unknown, what: string) {
    const b = body as { reason?: unknown; message?: unknown } | undefined;
    const message = typeof b?.message === 'string' ? b.message : typeof body === 'string' ? body.slice(0, 200) : '';
    super(`${what}: HTTP ${status}${message ? `: ${message}` : ''}`);
    this.name = 'ApiError';
    this.reason = typeof b?.reason === 'string' ? b.reason : '';
  }
}

export interface RequestOptions {
  /** JSON-encoded; its content type is contentType (default application/json). */
  body?: unknown;
  contentType?: string;
  accept?: string;
  timeoutMs?: number;
  /** Names the call in errors ("create Event ns/name"); default METHOD PATH. */
  what?: string;
  /** An answer longer than this is not read on: TooLarge is thrown (its connection closed). */
  maxBytes?: number;
  /** Told how long the answer was (with maxBytes). */
  onBytes?: (n: number) => void;
  /** Asks for protobuf first (JSON second; or as `accept` says): an answer in protobuf is unwrapped
   * from its envelope and decoded by this (a Status, if not 2xx); one in JSON is parsed as JSON. */
  protobuf?: (msg: Buffer) => unknown;
  /** A 2xx answer is read and dropped, not kept or parsed (undefined is returned): a status
   * write's answer is the whole object, up to ~1.5 MB of a team's JSON. */
  discard?: boolean;
  /** Told how long decoding the answer took (a team's object: its namespace's time). */
  onDecodeMs?: (ms: number) => void;
}

/** The Accept header of a call: as given, else protobuf first for one that decodes it, else the
 * client's default (JSON). */
function acceptOf(accept: string | undefined, protobuf: unknown): { accept: string } | undefined {
  return accept ? { accept } : protobuf ? { accept: `${protobufType}, application/json` } : undefined;
}

/** The most of one protobuf watch frame (an object is at most ~1.5 MiB in etcd). */
const maxFrameBytes = 64 * 2 ** 20;



/** An answer as its Content-Type says: protobuf (decoded by `protobuf`, or a Status if not `ok`),
 * else JSON, else its text. */
function decodeBody(buf: Buffer, contentType: string | string[] | undefined, ok: boolean, protobuf?: (msg: Buffer) => unknown): unknown {
  if (protobuf && isProtobuf(contentType)) {
    if (ok) return protobuf(unwrap(buf)); // a WireError is the call's error
    try { return decodeStatus(unwrap(buf)); } catch { return buf.toString('utf8', 0, 200); }
  }
  const text = buf.toString('utf8');
  try { return text ? JSON.parse(text) : undefined; } catch { return text; /* not JSON */ }
}

/** How the data plane reaches the apiserver with the operator's own credentials (structural: the
 * data plane declares the same shape without importing this layer). */
export interface ApiserverAccess {
  url: URL;
  /** Keep-alive pools for requests: with the operator's client certificate (if any), and with no credentials (Passthrough). */
  identityPool: Dispatcher;
  anonymousPool: Dispatcher;
  /** The same for upgrades (node:http agents). */
  identityAgent: HttpAgent;
  anonymousAgent: HttpAgent;
  /** The operator's Authorization header (token credentials), kept fresh. */
  authorization(): string | undefined;
}

export function loadKubeConfig(file?: string): ClusterAccess {
  return loadClusterAccess(file);
}

interface TlsMaterial { ca?: string | Buffer; cert?: string | Buffer; key?: string | Buffer; rejectUnauthorized?: boolean; servername?: string }

export class KubeClient {
  readonly server: URL;
  private authorization: string | undefined;
  private refreshTimer?: NodeJS.Timeout;
  private readonly dispatcher: Agent;
  private readonly tls: TlsMaterial;

  private constructor(private readonly access: ClusterAccess, opts: TlsMaterial, auth: string | undefined, private readonly log: Logger) {
    this.server = access.server;
    this.tls = opts;
    this.authorization = auth;
    this.dispatcher = new Agent({ connect: { ...opts }, keepAliveTimeout: 30_000 });
  }

  static async create(access: ClusterAccess, log: Logger): Promise<KubeClient> {
    const tls: TlsMaterial = { ca: access.ca, cert: access.cert, key: access.key };
    if (access.insecureSkipTLSVerify) tls.rejectUnauthorized = false;
    if (access.tlsServerName) tls.servername = access.tlsServerName;
    const client = new KubeClient(access, tls, await access.authorization(), log);
    client.refreshTimer = setInterval(() => void client.refreshAuth(), 60_000).unref();
    return client;
  }

  /** Re-reads credentials that rotate (projected token files, exec plugins). */
  async refreshAuth(): Promise<void> {
    try {
      this.authorization = await this.access.authorization();
    } catch (err) {
      this.log.warn({ err }, 'refreshing apiserver credentials failed; keeping the previous ones');
    }
  }

  private headers(extra?: Record<string, string>): Record<string, string> {
    const h: Record<string, string> = { accept: 'application/json', ...extra };
    if (this.authorization) h.authorization = this.authorization;
    return h;
  }

  /** One call; the parsed answer on 2xx, else throws ApiError (every caller goes through here). */
  async request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const { body } = opts;
    const url = new URL(path, this.server);
    const res = await this.dispatcher.request({
      origin: url.origin, path: url.pathname + url.search,
      method: method as Dispatcher.HttpMethod,
      headers: this.headers({
        ...(body === undefined ? {} : { 'content-type': opts.contentType ?? 'application/json' }),
        ...acceptOf(opts.accept, opts.protobuf),
      }),
      body: body === undefined ? undefined : JSON.stringify(body),
      headersTimeout: opts.timeoutMs ?? 30_000,
      bodyTimeout: opts.timeoutMs ?? 30_000,
    });
    const ok = res.statusCode >= 200 && res.statusCode <= 299;
    if (ok && opts.discard) {
      for await (const _ of res.body) { /* read through, so the connection is kept */ }
      return undefined as T;
    }
    const buf = opts.maxBytes === undefined ? Buffer.from(await res.body.arrayBuffer()) : await readCapped(res.body, opts.maxBytes, opts.what ?? `${method} ${path}`, opts.onBytes);
    const decoding = performance.now();
    const parsed = decodeBody(buf, res.headers['content-type'], ok, opts.protobuf);
    opts.onDecodeMs?.(performance.now() - decoding);
    if (res.statusCode === 401) void this.refreshAuth();
    if (!ok) throw new ApiError(res.statusCode, parsed, opts.what ?? `${method} ${path}`);
    return parsed as T;
  }

  /** Streams a watch; `onEvent` gets each decoded event. Resolves when the server ends the stream.
   * With `protobuf`, protobuf is asked for first (or as `accept` says): its frames' objects are
   * decoded by it. */
  async watch(path: string, signal: AbortSignal, idleTimeoutMs: number, accept: string | undefined,
    onEvent: (ev: { type: string; object: any }, decodeMs: number) => void, protobuf?: (msg: Buffer) => unknown): Promise<void> {
    const url = new URL(path, this.server);
    const res = await this.dispatcher.request({
      origin: url.origin, path: url.pathname + url.search, method: 'GET',
      headers: this.headers(acceptOf(accept, protobuf)), signal,
      headersTimeout: 30_000, bodyTimeout: idleTimeoutMs,
    });
    if (res.statusCode !== 200) {
      const buf = Buffer.from(await res.body.arrayBuffer());
      throw new ApiError(res.statusCode, decodeBody(buf, res.headers['content-type'], false, protobuf), `watch ${path}`);
    }
    if (protobuf && isProtobuf(res.headers['content-type'])) {
      return readFrames(res.body as AsyncIterable<Buffer>, (frame) => {
        const t = performance.now();
        const ev = decodeWatchEvent(frame, protobuf);
        onEvent(ev, performance.now() - t);
      });
    }
    // a line (an event) may come in thousands of pieces: each piece is searched once, and the
    // line joined once it ends (appending each to the rest and searching it all again took
    // seconds for one 8 MiB event)
    const pieces: Buffer[] = [];
    let held = 0;
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      let from = 0;
      let nl: number;
      while ((nl = chunk.indexOf(10, from)) >= 0) {
        pieces.push(chunk.subarray(from, nl));
        const line = (pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces, held + nl - from)).toString('utf8').trim();
        pieces.length = 0;
        held = 0;
        from = nl + 1;
        if (!line) continue;
        const t = performance.now();
        const ev = JSON.parse(line);
        onEvent(ev, performance.now() - t);
      }
      if (from < chunk.length) {
        pieces.push(from === 0 ? chunk : chunk.subarray(from));
        held += chunk.length - from;
      }
    }
  }

  /** What the data plane needs to forward to the apiserver. */
  apiserverConnection(): ApiserverAccess {
    const verify = { ca: this.tls.ca, rejectUnauthorized: this.tls.rejectUnauthorized !== false, ...(this.tls.servername ? { servername: this.tls.servername } : {}) };
    // one TLS context each, for the pools and the upgrade agents: given only the options, each
    // new connection built its own (~0.4 ms of the event loop per connection)
    const identity = { ...verify, secureContext: createSecureContext({ ...verify, cert: this.tls.cert, key: this.tls.key }) };
    const anonymous = { ...verify, secureContext: createSecureContext(verify) };
    return {
      url: this.server,
      // HTTP/1.1: over HTTP/2 undici joins repeated headers into one, and Impersonate-Group
      // "a, b" would be one group named so
      identityPool: new Pool(this.server.origin, { connect: identity, keepAliveTimeout: 60_000, allowH2: false }),
      anonymousPool: new Pool(this.server.origin, { connect: anonymous, keepAliveTimeout: 60_000, allowH2: false }),
      // (an apiserver reached over plain HTTP, kubectl proxy on a desktop: a plain agent)
      identityAgent: this.server.protocol === 'https:' ? new HttpsAgent(identity) : new HttpAgent(),
      anonymousAgent: this.server.protocol === 'https:' ? new HttpsAgent(anonymous) : new HttpAgent(),
      authorization: () => this.authorization,
    };
  }

  async close(): Promise<void> {
    clearInterval(this.refreshTimer);
    await this.dispatcher.close();
  }
}

/** Length-delimited frames (a 4-byte big-endian length, then the frame), each joined once; what
 * waits for the next frame is copied out of the chunk it came in (not to hold a whole frame). */
async function readFrames(body: AsyncIterable<Buffer>, onFrame: (frame: Buffer) => void): Promise<void> {
  const pieces: Buffer[] = [];
  let held = 0;
  let want = -1; // the frame's length, once its 4 bytes are held
  for await (const chunk of body) {
    pieces.push(chunk);
    held += chunk.length;
    let cut = false; // pieces[0] is the rest of a joined chunk
    for (;;) {
      if (want < 0) {
        if (held < 4) break;
        want = lengthOf(pieces);
        if (want > maxFrameBytes) throw new WireError(`a watch frame of ${want} bytes`);
      }
      if (held < 4 + want) break;
      const all = pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces, held);
      const frame = all.subarray(4, 4 + want);
      const rest = all.subarray(4 + want);
      pieces.length = 0;
      held = rest.length;
      if (held) pieces.push(rest);
      cut = held > 0;
      want = -1;
      onFrame(frame);
    }
    if (cut && pieces.length === 1) pieces[0] = Buffer.from(pieces[0]!);
  }
  if (held) throw new WireError(`a watch stream ended inside a frame (${held} bytes)`);
}

/** The big-endian length in the first 4 bytes held (they may be in several pieces). */
function lengthOf(pieces: Buffer[]): number {
  let n = 0;
  let k = 0;
  for (const p of pieces) {
    for (let j = 0; j < p.length && k < 4; j++, k++) n = n * 256 + p[j]!;
    if (k === 4) break;
  }
  return n;
}
