// Service endpoints: one keep-alive pool per endpoint and namespace (shared by the namespace's
// gateways that route to it, never with another namespace's, and kept across plan changes),
// passive ejection of endpoints that refuse connections, and power-of-two-choices balancing on
// outstanding requests. Handshakes with a team's HTTPS backend are metered (backend-handshake.ts).
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createSecureContext, DEFAULT_CIPHERS, getCACertificates, type ConnectionOptions, type SecureContext } from 'node:tls';
import { constants } from 'node:crypto';
import { Pool, buildConnector } from '../undici.js';
import { NamespacedRecent } from '../recent.js';
import { meterReads } from './wire.js';
import type { Endpoint, ServiceTarget } from '../translate/plan.js';
import { textKey } from '../api/pem.js';
import { HandshakeShare } from './handshake-share.js';
import { backendSource, meteredConnection, meteredTLS, type HandshakeTurns } from './backend-handshake.js';

/** One pool of an endpoint's connections: `live` while it takes requests; then its last ones close. */
interface Generation { live: boolean; sockets: number }

/** Told of each connection an endpoint's pools open and close (`PoolRegistry`). */
interface SocketCount {
  opened(p: EndpointPool, g: Generation): void;
  closed(p: EndpointPool, g: Generation): void;
  /** What a closed connection's reads still owed, in starts (wire.ts). */
  owed(p: EndpointPool, starts: number): void;
  /** The handshakes' share its backend's TLS handshakes wait for and are charged to. */
  handshakes(): HandshakeTurns;
}

/** The order requests took endpoints in (`usedAt`). */
let ticks = 0;

export class EndpointPool {
  readonly url: URL;
  /** host:port, as the access log names it. */
  readonly host: string;
  /** The endpoint, as error messages name it. */
  readonly what: string;
  outstanding = 0;
  served = 0;
  ejectedUntil = 0;
  private ejections = 0;
  refs = 0;
  retired = false;
  /** When a request last took it (a count, not a time). */
  usedAt = 0;
  private current?: { pool: Pool; gen: Generation };
  private upgrades?: HttpAgent | HttpsAgent;

  constructor(readonly key: string, private readonly scheme: 'http' | 'https', ep: Endpoint,
    private readonly ca: string | null, private readonly serverName: string, service: string,
    /** The namespace of the gateways using it, whose connections its count as. */
    readonly namespace: string, private readonly count: SocketCount) {
    const host = ep.ip.includes(':') ? `[${ep.ip}]` : ep.ip;
    this.url = new URL(`${scheme}://${host}:${ep.port}`);
    this.host = this.url.host;
    this.what = `Service ${service} endpoint ${this.host}`;
  }

  /** Keep-alive connections for requests, made at the first request (a Service of 5,000
   * endpoints took 30 ms a thousand to make them all, and ~18 KiB each, most never used) and
   * again after `recycle`. */
  get pool(): Pool {
    this.usedAt = ++ticks;
    return (this.current ??= this.makePool()).pool;
  }

  /** For upgrades (WebSocket, SPDY), which leave the pool. */
  get agent(): HttpAgent | HttpsAgent {
    return (this.upgrades ??= this.scheme === 'https' ? new MeteredAgent(this.count.handshakes(), this, { keepAlive: false, ...this.tls() }) : new HttpAgent({ keepAlive: false }));
  }

  /** Whether its pool is made (at its first request). */
  get pooled(): boolean {
    return this.current !== undefined;
  }

  /** Connections its current pool holds. */
  get sockets(): number {
    return this.current?.gen.sockets ?? 0;
  }

  /** Closes its pool's idle connections (one carrying a request closes when the request ends);
   * the next request makes a new pool. What the closed pool held, no longer counted as live. */
  recycle(): number {
    const c = this.current;
    if (!c) return 0;
    this.current = undefined;
    c.gen.live = false;
    void c.pool.close().catch(() => {});
    return c.gen.sockets;
  }

  private tls(): object {
    if (this.scheme !== 'https') return {};
    // a context made here (the plan's was pushed out) is charged as the handshake it is made for
    const built = (ms: number) => this.count.handshakes().charge(this.namespace, backendSource(this.host), ms);
    return { servername: this.serverName, secureContext: this.ca ? secureContextFor(this.ca, this.namespace, built) : systemContext(), rejectUnauthorized: true };
  }

  /** (One retired and closed before a request it was picked for: that request's end closes it again.) */
  private makePool(): { pool: Pool; gen: Generation } {
    const gen: Generation = { live: true, sockets: 0 };
    // HTTP/1.1 (undici would join repeated headers such as X-Remote-Group over HTTP/2)
    const connector = buildConnector({ ...this.tls(), allowH2: false });
    const count = this.count;
    const connect: typeof connector = (opts, done) => {
      // https: over a metered connection (undici makes the TLS socket on it, with its session cache)
      const meter = this.scheme === 'https' ? meteredConnection(opts.hostname, Number(opts.port), count.handshakes(), this) : undefined;
      connector(meter ? { ...opts, httpSocket: meter as Duplex as Socket } : opts, (...r) => {
        meter?.done(); // (undici calls back within TLS's 'secureConnect': the handshake's last bytes)
        const socket = r[1];
        if (socket) {
          meterReads(socket, pool, this.what, (n) => count.owed(this, n));
          count.opened(this, gen);
          socket.once('close', () => count.closed(this, gen));
        }
        done(...r);
      });
    };
    // a backend's Keep-Alive hint may shorten how long an idle connection is kept, not lengthen it
    const pool: Pool = new Pool(this.url.origin, { connect, keepAliveTimeout: 60_000, keepAliveMaxTimeout: 60_000, allowH2: false });
    return { pool, gen };
  }

  /** Takes the endpoint out of rotation, longer each time in a row (1 s .. 30 s). */
  eject(now = Date.now()): void {
    this.ejectedUntil = now + Math.min(30_000, 1_000 * 2 ** this.ejections++);
  }

  succeeded(): void {
    this.ejections = 0;
  }

  close(): void {
    void this.current?.pool.close().catch(() => {});
    this.upgrades?.destroy();
  }

  /** One request finished. */
  release(): void {
    this.outstanding--;
    if (this.retired && this.outstanding === 0) this.close();
  }
}

/** An agent for upgrades to a team's HTTPS backend: its handshakes metered as the pools' are. */
class MeteredAgent extends HttpsAgent {
  constructor(private readonly turns: HandshakeTurns, private readonly backend: EndpointPool, opts: ConstructorParameters<typeof HttpsAgent>[0]) {
    super(opts);
  }

  override createConnection(options: ConnectionOptions & { host: string; port: number }): Duplex {
    return meteredTLS(options, this.turns, this.backend);
  }
}

/**
 * One TLS context per CA bundle and namespace, made once: given `ca`, every new upstream
 * connection built its own (a 256-certificate bundle cost ~12.5 ms of the shared event loop per
 * connection). The last 64 used are kept, at most 16 of one namespace: whitespace variants of a
 * bundle are bundles of their own, and one team's pushed every other's out (each made again on a
 * request's path, ~13–20 ms). `built`: told the ms a context took to make (to be charged).
 */
export function secureContextFor(ca: string, namespace: string, built?: (ms: number) => void): SecureContext {
  return contexts.get(namespace, textKey(ca), () => {
    const t = performance.now();
    const context = createSecureContext({ ca, ...upstreamTLS });
    built?.(performance.now() - t);
    return context;
  });
}

/**
 * The context of backends without a CA bundle (the default roots), made once: given the options,
 * every new connection built its own (~0.3 ms of the shared event loop each). Made again when
 * the default roots are replaced (`tls.setDefaultCACertificates`).
 */
export function systemContext(): SecureContext {
  const roots = getCACertificates('default'); // (the same array until they are replaced)
  if (system?.roots !== roots) system = { roots, context: createSecureContext({ ...upstreamTLS }) };
  return system.context;
}
let system: { roots: readonly string[]; context: SecureContext } | undefined;

/**
 * What a connection to a team's backend is made with. A team's backend chooses the handshake:
 * with finite-field Diffie-Hellman it could send a made-up 8,192-bit modulus (checked only
 * cheaply, never for primality), ~100 ms of the shared event loop a connection (10,000 bits:
 * ~200 ms), and with renegotiation it could make the gateway handshake again and again on one
 * connection. So no DHE suites in TLS 1.2, only elliptic-curve groups (and the hybrid
 * post-quantum one) in TLS 1.3, and no renegotiation.
 */
export const upstreamTLS = {
  ciphers: `${DEFAULT_CIPHERS}:!kDHE`,
  ecdhCurve: ellipticGroups(),
  secureOptions: constants.SSL_OP_NO_RENEGOTIATION,
} as const;

/** The elliptic-curve groups OpenSSL offers by default (the hybrid post-quantum X25519MLKEM768
 * first where this OpenSSL has it: 3.5, Node 24), without the finite-field ones. */
function ellipticGroups(): string {
  const groups = 'X25519:P-256:P-384:P-521:X448';
  try {
    createSecureContext({ ecdhCurve: `X25519MLKEM768:${groups}` });
    return `X25519MLKEM768:${groups}`;
  } catch {
    return groups;
  }
}
const contexts = new NamespacedRecent<string, SecureContext>(64, 16);

/**
 * Pools by endpoint and by the namespace of the gateways using them, reference-counted by the route
 * tables that use them. A namespace's pools hold at most `maxSocketsPerNamespace` connections (0:
 * no bound): its requests in flight are bounded by its admitted connections, but its idle
 * connections were not (each of 64 routes naming its own Service of the same pods kept a round of
 * 1,024 requests' connections, ~31 KiB each, for a minute). Past it, its pools that took a request
 * longest ago are recycled, to 7/8 of the bound (`EndpointPool.recycle`).
 */
export class PoolRegistry {
  private readonly pools = new Map<string, EndpointPool>();
  /** By namespace: the connections of its live pools, and the pools that hold them. */
  private readonly held = new Map<string, { sockets: number; pools: Set<EndpointPool> }>();
  private readonly count: SocketCount = {
    opened: (p, g) => this.opened(p, g),
    closed: (p, g) => this.closed(p, g),
    owed: (p, n) => this.charge(p.namespace, n),
    handshakes: () => this.handshakes,
  };
  /** Charges a namespace starts of its turns (the listeners' TurnShare, set by ListenerManager):
   * what its endpoints' closed connections read and no answer was charged for. */
  charge: (namespace: string, starts: number) => void = () => {};
  /** The share of the event loop TLS handshakes take (the listeners', set by ListenerManager): a
   * handshake with a team's backend waits for its namespace's turn there, and is charged what TLS
   * spent on the backend's bytes. Unbounded until set. */
  handshakes: HandshakeTurns = new HandshakeShare(1, () => {});

  constructor(readonly maxSocketsPerNamespace = 0, private readonly onRecycled: (namespace: string, pools: number) => void = () => {}) {}

  get size(): number {
    return this.pools.size;
  }

  /** The connections a namespace's live pools hold. */
  socketsOf(namespace: string): number {
    return this.held.get(namespace)?.sockets ?? 0;
  }

  /** `owner`: the namespace of the gateway whose table takes it (pools are not shared between namespaces). */
  acquire(t: ServiceTarget, ep: Endpoint, owner: string): EndpointPool {
    // a long CA by its digest: a key is never a copy of a bundle (up to 512 KiB, in each of 64 routes)
    const key = `${owner} ${t.scheme}://${ep.ip}:${ep.port}/${t.serverName}/${t.ca === null ? '-' : textKey(t.ca)}`;
    let p = this.pools.get(key);
    if (!p) {
      p = new EndpointPool(key, t.scheme, ep, t.ca, t.serverName, `${t.namespace}/${t.name}`, owner, this.count);
      this.pools.set(key, p);
    }
    p.refs++;
    return p;
  }

  /** One more reference to a pool acquired (and not released) already. */
  hold(p: EndpointPool): void {
    p.refs++;
  }

  /** Drops a reference; an unused pool is closed once its in-flight requests finish. */
  release(p: EndpointPool): void {
    if (--p.refs > 0) return;
    this.pools.delete(p.key);
    p.retired = true;
    if (p.outstanding === 0) p.close();
  }

  private opened(p: EndpointPool, g: Generation): void {
    g.sockets++;
    if (!g.live) return;
    let h = this.held.get(p.namespace);
    if (!h) this.held.set(p.namespace, (h = { sockets: 0, pools: new Set() }));
    h.sockets++;
    h.pools.add(p);
    const max = this.maxSocketsPerNamespace;
    if (max > 0 && h.sockets > max) this.trim(p.namespace, h, p, max - (max >> 3));
  }

  private closed(p: EndpointPool, g: Generation): void {
    g.sockets--;
    if (!g.live) return;
    const h = this.held.get(p.namespace);
    if (!h) return;
    h.sockets--;
    if (g.sockets === 0) h.pools.delete(p);
    if (h.sockets <= 0) this.held.delete(p.namespace);
  }

  /** Recycles the namespace's pools that took a request longest ago (not `p`, which is connecting
   * for a request) until its live pools hold `to` connections. */
  private trim(ns: string, h: { sockets: number; pools: Set<EndpointPool> }, p: EndpointPool, to: number): void {
    const oldest = [...h.pools].filter((q) => q !== p).sort((a, b) => a.usedAt - b.usedAt);
    let recycled = 0;
    for (const q of oldest) {
      if (h.sockets <= to) break;
      h.sockets -= q.recycle();
      h.pools.delete(q);
      recycled++;
    }
    if (recycled) this.onRecycled(ns, recycled);
  }
}

/** One service route's endpoints and its balancer. */
export class ServiceBackend {
  constructor(readonly target: ServiceTarget, readonly pools: EndpointPool[]) {}

  /** Power of two choices on outstanding requests (ties: fewer served); ejected endpoints are
   * skipped unless every candidate is ejected. `exclude`: endpoints already tried. */
  pick(exclude?: ReadonlySet<EndpointPool>, now = Date.now()): EndpointPool | undefined {
    // the usual case (nothing tried, nothing ejected) takes the list as it is, without a copy
    let cands: readonly EndpointPool[] = this.pools;
    if (exclude || cands.some((p) => p.ejectedUntil > now)) {
      const ex = exclude ?? new Set<EndpointPool>();
      cands = this.pools.filter((p) => !ex.has(p) && p.ejectedUntil <= now);
      if (!cands.length) cands = this.pools.filter((p) => !ex.has(p));
    }
    if (cands.length <= 1) return cands[0];
    const i = Math.floor(Math.random() * cands.length);
    const j = Math.floor(Math.random() * (cands.length - 1));
    const a = cands[i]!;
    const b = cands[j >= i ? j + 1 : j]!;
    if (a.outstanding !== b.outstanding) return a.outstanding < b.outstanding ? a : b;
    return a.served <= b.served ? a : b;
  }
}
