// One gateway's listener: authenticate -> authorize -> route -> upstream. The route table is
// swapped on plan changes without touching open connections.
import { createServer, STATUS_CODES, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import { createServer as createTLSServer, type Server as TLSServer } from 'node:https';
import { constants, randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import { bearerToken } from '../auth/bearer.js';
import type { CallerIdentity } from '../auth/identity.js';
import { schema } from '../api/schema.js';
import type { ApiserverTarget, GatewayPlan } from '../translate/plan.js';
import { clipped, keepsLine, lineWeight } from '../observability/logger.js';
import { admit, callerRefusal, maxHeaderFields, newSeen, type Admitted, type Before, type RequestHead, type RouteAdmitted, type Seen } from './admission.js';
import { HeldAccess, type Held } from './held.js';
import { explain } from './explain.js';
import type { EndpointPool } from './endpoints.js';
import { apiserverConnectStarts, closeSoon, paced, proxyRequest, proxyUpgrade, type Pace, type RequestCall, type UpgradeCall, type UpstreamFailure } from './upstream.js';
import {
  AgwError, BadPathError, BadRequestError, MethodNotAllowedError, NoEndpointsError, RouteNotFoundError, TooManyConnectionsError, TooManySessionsError, UpstreamProtocolError, UpstreamTimeoutError, statusBody, toAgwError,
} from '../errors.js';
import { forwardRequestHeaders, forwardResponseHeaders, remoteHeaders } from './headers.js';
import { authnOf, RouteTable, type DataplaneDeps } from './route-table.js';
import { addressGroup, budgetsFor, type Budgets, type CallerBudgets, type Unadmitted } from './namespace-budget.js';
import { Session, frameProtocol, sessionTarget } from './session.js';
import { connectionMs, noCost, signCost } from './handshake-share.js';
import { HandshakeMeter } from './handshake-meter.js';
import { listenerGroups, readHello, type Hello } from './client-hello.js';

let nextId = 0;

/** Answers whose client waits for 100 Continue before it sends its body. */
const awaitingContinue = new WeakSet<ServerResponse>();

/** A slot of the namespace's apiserver requests a request holds (ApiserverSlots), and when its route's timeout ends. */
interface Slot { release: () => void; deadline: number }

const shutdown = ['shutdown', 1001, 'the gateway is shutting down', 'ServiceUnavailable'] as const;

/** plain HTTP, HTTPS, or HTTPS asking for client certificates. */
export type ListenerShape = 'http' | 'https' | 'https+client-certificates';

export function listenerShape(plan: GatewayPlan): ListenerShape {
  return !plan.tls ? 'http' : plan.tls.clientCA ? 'https+client-certificates' : 'https';
}

/** Bounds on what one client connection can hold (flags of the operator). */
export interface ListenerLimits {
  /** Open connections per listener; more are refused at accept. */
  maxConnections: number;
  /** Admitted connections per namespace, all of its listeners together (0: no limit); more are answered 503 and closed. */
  maxConnectionsPerNamespace: number;
  /** Connections not admitted yet, all namespaces together (0: no limit); past it the oldest of the address holding the most, else the oldest, is closed. */
  maxUnadmittedConnections?: number;
  /** Request bodies buffered for retries per namespace, in bytes; past it, bodies are streamed (and not retried). */
  bufferedBodyBytesPerNamespace: number;
  /** Callers cached per namespace, all of its gateways' token caches together (0: no limit). */
  cachedCallersPerNamespace: number;
  /** Requests a namespace starts forwarding per turn of the event loop (0: no limit); more wait for the next turns. */
  requestsPerTurnPerNamespace: number;
  /** Requests per namespace waiting for the apiserver's answer at once (0 or absent: no limit); more wait in order. */
  apiserverRequestsPerNamespace?: number;
  /** Answers of a namespace that may wait for clients that do not read (PausedAnswers); 0: no limit. */
  pausedAnswersPerNamespace?: number;
  /** Percent of the event loop's time TLS handshakes may take (100: no bound); more wait, namespaces in turn. */
  tlsHandshakePercent: number;
  /** Time to receive a request's headers (slow clients are cut). */
  headersTimeoutMs: number;
  /** How long an idle keep-alive connection stays open, and an answer the client reads none of. */
  idleTimeoutMs: number;
}

export const defaultLimits: ListenerLimits = { maxConnections: 4096, maxConnectionsPerNamespace: 1024, maxUnadmittedConnections: 2048, bufferedBodyBytesPerNamespace: 16 << 20, cachedCallersPerNamespace: 10_000, requestsPerTurnPerNamespace: 4, pausedAnswersPerNamespace: 32, tlsHandshakePercent: 50, headersTimeoutMs: 10_000, idleTimeoutMs: 65_000 };

function errorHeaders(err: AgwError, body: string): OutgoingHttpHeaders {
  const h: OutgoingHttpHeaders = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' };
  if (err.status === 401) h['www-authenticate'] = 'Bearer realm="access-gateway"';
  if (err.status === 405) h.allow = routeMethods;
  if (err.retryAfterSeconds !== undefined) h['retry-after'] = String(err.retryAfterSeconds);
  return h;
}

/**
 * What a listener's TLS context is made with, at start and on certificate reloads: TLS 1.2 suites
 * with ECDHE only (forward secrecy, as Mozilla's intermediate profile) and no renegotiation (a
 * client could make the key sign again and again on a connection already open).
 */
const listenerTLS = {
  minVersion: 'TLSv1.2',
  ciphers: ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256',
    'ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384',
    'ECDHE-RSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-CHACHA20-POLY1305', 'ECDHE-RSA-CHACHA20-POLY1305'].join(':'),
  secureOptions: constants.SSL_OP_NO_RENEGOTIATION,
  // (a client's share for one of them is taken as it is: see `directHello`)
  ecdhCurve: listenerGroups,
} as const;

export class Listener {
  private table: RouteTable;
  private readonly server: Server | TLSServer;
  /** Open interactive sessions (upgraded connections), and upgrades admitted but not yet answered. */
  private readonly sessions = new Set<Session>();
  private opening = 0;
  /** The drain's grace has passed: a session still opening is ended as soon as it starts. */
  private drained = false;
  /** Responses still streaming (watches): ended cleanly when the listener drains. */
  private readonly streams = new Set<() => void>();
  /** Sessions and streams, ended when the spec or a rule's window no longer admits them. */
  private readonly held = new HeldAccess(() => this.table);
  /** The listener that took this one's place (`handOver`), whose rules decide from then on. */
  private successor: Listener | undefined;
  /** The namespace's bounds on cached callers and rate-limit buckets, for this listener's tables. */
  private readonly callers: CallerBudgets;
  private closing: Promise<void> | undefined;
  /** Connections not admitted yet, by their two ends (`peerKey`): a TLS socket has the same as
   * the TCP socket under it, which is the one 'connection' gives. With TLS, what the handshake
   * was charged for its signature once it started (the key may change before it is done), and
   * `secured`, which stops its deadline from accept. */
  private readonly unadmitted = new Map<string, Unadmitted & { signMs?: number; secured?: () => void }>();
  /** A TLS listener's: starts the handshake on a new connection. */
  private readonly handshake: ((raw: Socket | HandshakeMeter) => void) | undefined;
  /** What a signature with the listener's key costs the event loop, in ms. */
  private signMs = 0;
  /** What a full handshake with the listener's key is charged, in ms. */
  private readonly handshakeMs = () => this.signMs + connectionMs;
  /** Connections whose client's hello is being read. */
  private readonly hellos = new Set<Socket>();
  /** A listener that asks for client certificates: its handshakes are metered (`HandshakeMeter`). */
  private readonly metered: boolean = false;

  /** `made`: the plan's route table, made already (`tableSteps`); else made here. */
  constructor(plan: GatewayPlan, private readonly deps: DataplaneDeps, private readonly limits: ListenerLimits = defaultLimits,
    private readonly budgets: Budgets = budgetsFor(limits, deps.log), made?: RouteTable) {
    this.callers = budgets.callers(plan.namespace);
    this.table = made ?? RouteTable.build(plan, deps, undefined, this.callers);
    const opts = {
      noDelay: true, requestTimeout: 0, headersTimeout: limits.headersTimeoutMs, keepAliveTimeout: limits.idleTimeoutMs,
      connectionsCheckingInterval: Math.min(1000, limits.headersTimeoutMs), maxHeaderSize: 16 * 1024,
    };
    try {
      if (plan.tls) {
        // client certificates are asked for, and a refused one is a 401 that says why (not a failed handshake)
        const clientCerts = plan.tls.clientCA ? { requestCert: true, rejectUnauthorized: false, ca: plan.tls.clientCA.pem } : {};
        // half-open as over plain HTTP: a session's client may end its side and still read the reply;
        // a handshake gets the header timeout too (Node's default is 120 s)
        // paused: nothing is read until `readHello` reads the client's hello
        const server = createTLSServer({ ...opts, pauseOnConnect: true, allowHalfOpen: true, handshakeTimeout: limits.headersTimeoutMs, cert: plan.tls.cert, key: plan.tls.key, ...listenerTLS, ...clientCerts });
        // the TLS server's own 'connection' handler (it wraps the socket and starts the handshake)
        const [handshake, ...more] = server.listeners('connection') as Array<(raw: Socket | HandshakeMeter) => void>;
        if (!handshake || more.length > 0) throw new Error('this Node.js TLS server does not start handshakes from one connection handler');
        server.removeListener('connection', handshake);
        this.handshake = (raw) => handshake.call(server, raw);
        this.signMs = signCost(plan.tls.key);
        this.metered = !!plan.tls.clientCA;
        // a handshake is done (first, before anything reads the TLS socket's addresses)
        server.prependListener('secureConnection', (tls: TLSSocket) => {
          const m = HandshakeMeter.feeding;
          if (m) { // metered: its TLS socket gets the raw connection's addresses; what follows is not metered
            m.describe(tls);
            m.done();
          }
          const key = peerKey(tls);
          if (key === undefined) { // metered but done outside its bytes, or gone
            tls.destroy();
            return;
          }
          budgets.turns.arrived(this.table.plan.namespace); // a handshake that waited its turns for over a second
          // a resumed session signs nothing: what it was charged for the signature is given back
          const c = this.unadmitted.get(key);
          c?.secured?.();
          if (c?.signMs !== undefined && tls.isSessionReused()) budgets.handshakes.refund(c.signMs);
        });
        this.server = server;
      } else {
        this.server = createServer(opts);
      }
    } catch (err) {
      this.table.dispose(); // e.g. a key OpenSSL refuses: give back the table's pools and cache budget
      throw err;
    }
    this.server.maxConnections = limits.maxConnections;
    // header lines: Node answers 431 past this many (HPE_HEADER_OVERFLOW), and admission refuses
    // exactly as many: 256 at most; 16 KiB of them at most (maxHeaderSize). Unbounded, a client with no token pipelining 16 heads of ~3,900 empty
    // lines each cost ~8 ms of the loop every team shares, charged to no one
    this.server.maxHeadersCount = maxHeaderFields;
    this.server.on('drop', () => this.table.m.connectionRefused('listener'));
    this.server.on('connection', (raw: Socket) => this.onConnection(raw));
    // an Expect other than 100-continue: Node's own 417 would keep the connection, unadmitted, open
    this.server.on('checkExpectation', (_req, res: ServerResponse) => {
      res.writeHead(417, { connection: 'close', 'content-length': 0 }).end();
    });
    this.server.on('request', (req, res) => void this.onRequest(req, res));
    // Expect: 100-continue: the client is told to send its body once the request is admitted and
    // forwarded, not before (Node's own 100 went out before the token was checked)
    this.server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
      awaitingContinue.add(res);
      void this.onRequest(req, res);
    });
    // (after the answers of the requests pipelined before it: its 101 or refusal is written raw)
    this.server.on('upgrade', (req, socket, head) => afterAnswers(socket, () => void this.onUpgrade(req, socket, head)));
    // a tunnel is never proxied: answered (without a listener Node drops the connection unanswered)
    this.server.on('connect', (req: IncomingMessage, socket: Duplex) => this.onConnect(req, socket));
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
      // malformed or smuggling-shaped requests (the parser is strict), oversized headers, slow
      // clients get an answer; anything else (a TLS handshake that failed or timed out, a socket
      // error) is closed: a socket still in its handshake cannot carry one, and ending it kept it open
      const http = err.code?.startsWith('HPE_') || err.code === 'ERR_HTTP_REQUEST_TIMEOUT';
      if (!http || !socket.writable) {
        socket.destroy();
        return;
      }
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large'
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
      afterAnswers(socket, () => socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`));
    });
  }

  get plan(): GatewayPlan {
    return this.table.plan;
  }

  /** What the server was made for: an update cannot switch between these. */
  get shape(): ListenerShape {
    return listenerShape(this.table.plan);
  }

  /** Swaps the route table (`made`: made already from `tableSteps`); a renewed certificate or
   * client CA is used for new connections, and said (for an Event; the same words each time, so
   * repeats bump one Event's count). */
  update(plan: GatewayPlan, made?: RouteTable): string | null {
    const previous = this.table;
    // first: a table that cannot be built changes nothing
    const next = made ?? RouteTable.build(plan, this.deps, previous, this.callers);
    const old = previous.plan.tls;
    let reloaded: string | null = null;
    if (plan.tls && old && (plan.tls.cert !== old.cert || plan.tls.key !== old.key || plan.tls.clientCA?.pem !== old.clientCA?.pem)) {
      const ca = plan.tls.clientCA ? { ca: plan.tls.clientCA.pem } : {};
      try {
        (this.server as TLSServer).setSecureContext({ cert: plan.tls.cert, key: plan.tls.key, ...listenerTLS, ...ca });
        this.signMs = signCost(plan.tls.key);
      } catch (err) {
        next.dispose(previous); // what the new table took, unless the current one shares it
        throw err;
      }
      next.log.info({ secret: plan.tls.secretName, clientCA: plan.tls.clientCA?.ref }, 'listener certificate reloaded');
      const said: string[] = [];
      if (plan.tls.cert !== old.cert || plan.tls.key !== old.key) said.push(`listener certificate of Secret ${plan.namespace}/${plan.tls.secretName} reloaded`);
      if (plan.tls.clientCA && plan.tls.clientCA.pem !== old.clientCA?.pem) said.push(`client CA ${plan.tls.clientCA.ref} reloaded`);
      reloaded = `${said.join('; ')}; used for new connections`;
    }
    this.table = next;
    previous.dispose(next);
    // what is open is asked again, and the timer set for the new rules' windows (an endpoint change alone admits the same)
    const same = next.epoch === previous.epoch;
    if (!this.held.size || !same) this.held.recheck(); // (ends what too many tables hold, after)
    else this.held.swapped();
    return reloaded;
  }

  /** The steps of making `plan`'s route table for `update` (from the current one). */
  tableSteps(plan: GatewayPlan): Generator<void, RouteTable, void> {
    return RouteTable.steps(plan, this.deps, this.table, this.callers);
  }

  listen(port: number, host: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.server.once('error', onError);
      this.server.listen({ port, host, exclusive: true }, () => {
        this.server.off('error', onError);
        this.server.on('error', (err) => this.table.log.error({ err }, 'listener error'));
        resolve();
      });
    });
  }

  /** Stops accepting at once; open requests get `graceMs`, then every connection is closed. Once:
   * a second call gets the first one's promise (the table's pools are released once). */
  close(graceMs: number): Promise<void> {
    return (this.closing ??= this.shut(graceMs));
  }

  /** The listener that took this one's place (a new port or TLS shape) watches what is still open
   * here against its rules from now on, as its own. */
  handOver(successor: Listener): void {
    this.successor = successor;
    successor.held.adopt(this.held);
  }

  /** The table that decides now: this listener's own, or once it was replaced, its successor's
   * (a request still waiting here is admitted again by it). */
  private get rules(): RouteTable {
    return this.successor ? this.successor.rules : this.table;
  }

  private shut(graceMs: number): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const raw of this.hellos) raw.destroy(); // not the HTTP server's yet
    this.server.closeIdleConnections();
    const timer = setTimeout(() => {
      this.held.stop();
      // end open streams (watches) with a proper last chunk, then drop what is left
      for (const end of this.streams) end();
      // sessions get a last frame that says so (kubectl prints it), then are closed
      this.drained = true;
      for (const s of this.sessions) s.end(...shutdown);
      setTimeout(() => this.server.closeAllConnections(), 100).unref();
    }, graceMs);
    timer.unref();
    return closed.finally(() => {
      clearTimeout(timer);
      this.held.stop();
      this.table.dispose();
    });
  }

  /** A new TCP connection counts as not admitted yet until its first admitted request. */
  private onConnection(raw: Socket): void {
    const key = peerKey(raw);
    if (key === undefined) { // already gone (reset before it was accepted)
      raw.destroy(); // paused: nothing else would notice
      return;
    }
    const ns = this.table.plan.namespace;
    this.budgets.turns.arrived(ns); // another team's flood is held from now on
    const c: Unadmitted & { signMs?: number; secured?: () => void } = {
      source: addressGroup(raw.remoteAddress!),
      evict: () => {
        this.table.m.connectionRefused('unadmitted');
        raw.destroy();
      },
    };
    this.budgets.unadmitted.add(ns, c);
    this.unadmitted.set(key, c);
    raw.once('close', () => {
      this.budgets.unadmitted.remove(ns, c);
      if (this.unadmitted.get(key) === c) this.unadmitted.delete(key);
    });
    // a TLS handshake takes its turn once its hello is whole: its cost is spent when TLS reads it
    if (this.handshake) {
      // one deadline from accept for the hello, its wait for a turn and the handshake (TLS's own
      // timer would start again at the turn, and counts only silence)
      const deadline = setTimeout(() => raw.destroy(), this.limits.headersTimeoutMs);
      c.secured = () => clearTimeout(deadline);
      raw.once('close', c.secured);
      raw.on('error', () => raw.destroy()); // read before TLS has it: a reset is not the process's
      readHello(raw, this.hellos, (hello) => {
        if (!this.budgets.handshakes.start(ns, c.source, this.handshakeMs, this.handshakeFor(raw, c, hello))) {
          this.table.m.handshakeDeferred();
        }
      });
    }
  }

  /** Starts the TLS handshake of `raw` when its turn comes: not for a client gone (or past its
   * deadline from accept), or a listener closing (they are not the HTTP server's to close yet,
   * and they cost no turn, so all go at the next one). */
  private handshakeFor(raw: Socket, c: { signMs?: number; source: string }, hello: Hello): () => boolean {
    return () => {
      if (raw.destroyed) return false;
      if (this.closing) {
        raw.destroy();
        return false;
      }
      try {
        c.signMs = this.signMs;
        raw.unshift(hello.take()); // read first, by TLS or its meter
        // metered: on a listener that checks client chains, and for hellos whose costly part may
        // come with later bytes (TLS 1.2, a key share the listener asks again for)
        const metered = this.metered || !hello.direct;
        this.handshake!(metered ? this.meter(raw, c.source, this.handshakeMs(), hello.length) : raw);
        return true;
      } catch (err) {
        raw.destroy(); // paused: nothing else would close it
        throw err;
      }
    };
  }

  /** `raw` as a metered handshake (`HandshakeMeter`) whose start was charged `charged` ms: past
   * that, what TLS spends on the client's bytes is charged to the namespace as it is spent, and
   * what the client sends after its hello waits for the namespace's turn. */
  private meter(raw: Socket, source: string, charged: number, helloBytes: number): HandshakeMeter {
    const ns = this.table.plan.namespace;
    const share = this.budgets.handshakes;
    let paid = charged;
    return new HandshakeMeter(raw, {
      spent: (ms) => {
        share.charge(ns, source, ms - paid);
        paid = Math.max(0, paid - ms);
      },
      gate: (feed) => void share.start(ns, source, noCost, feed), // (not counted: its handshake was, if it waited)
      tooLarge: () => this.table.m.connectionRefused('handshake'),
    }, helloBytes);
  }

  /**
   * Counts a connection against its namespace's budget from its first admitted request, so that
   * only the namespace's own callers can spend it (a refused request closes its connection).
   * False, and nothing counted, when the budget is spent.
   */
  private admitConnection(t: RouteTable, conn: Conn, sock: Socket): boolean {
    const ns = t.plan.namespace;
    if (!this.budgets.connections.take(ns)) {
      t.m.connectionRefused('namespace');
      return false;
    }
    conn.admitted = true;
    const key = peerKey(sock);
    const c = key === undefined ? undefined : this.unadmitted.get(key);
    if (c) {
      this.unadmitted.delete(key!);
      this.budgets.unadmitted.remove(ns, c);
    }
    const open = t.m.connections;
    open.inc();
    sock.once('close', () => {
      this.budgets.connections.give(ns);
      open.dec();
    });
    return true;
  }

  /** A response about to write its head: a closing listener's answers close their connection
   * (what it would serve next on it is the old plan's). */
  private head(res: ServerResponse): ServerResponse {
    if (this.closing) res.shouldKeepAlive = false;
    return res;
  }

  private tooManyConnections(t: RouteTable): AgwError {
    return new TooManyConnectionsError(`namespace ${t.plan.namespace} has ${this.budgets.connections.limit} connections open through its gateways, the operator's limit (--max-connections-per-namespace)`);
  }

  /** A response that streams (a watch, logs -f; `res`, or the socket of an upgrade answered
   * without 101): ended cleanly on a drain, or when its access ends. */
  private track(t: RouteTable, a: RouteAdmitted, req: IncomingMessage, res: { once(event: 'close', f: () => void): unknown }, end: () => void): void {
    if (this.drained) {
      end(); // began after the drain's grace
      return;
    }
    this.streams.add(end);
    const release = this.held.hold(heldOf(a, req), end, t);
    res.once('close', () => {
      this.streams.delete(end);
      release();
    });
  }

  /** The upstream call for an apiserver route. */
  private apiserverCall(t: RouteTable, a: RouteAdmitted, req: IncomingMessage): RequestCall & UpgradeCall {
    const target = a.route.plan.target as ApiserverTarget;
    const conn = this.deps.apiserver;
    const headers = forwardRequestHeaders(req.headers, false);
    if (target.identity === 'Passthrough') {
      // the token the gateway authenticated, written as the apiserver reads it (`Bearer  x`, two
      // spaces, is token x here and no token there: the apiserver would act as someone else)
      headers.authorization = `Bearer ${bearerToken(req.headers.authorization, req.socket)}`;
    } else {
      // the operator's credentials go out only with an impersonation of the caller, or of a
      // service account of this gateway's namespace (a plain name: its header builder refuses any other)
      if (a.as) Object.assign(headers, t.impersonationAs(a.id, a.as, a.route));
      else t.impersonate(headers, a.id, a.route);
      const auth = conn.authorization();
      if (auth) headers.authorization = auth;
    }
    forwardedFor(headers, req);
    // the apiserver's audit event's ID, chosen here: the access line names it also when the
    // apiserver did not answer (a timeout), and for an upgrade, whose answer is the kubelet's
    headers['audit-id'] = randomUUID();
    return {
      url: conn.url, what: 'the apiserver', connectStarts: conn.url.protocol === 'https:' ? apiserverConnectStarts : 0,
      method: req.method ?? 'GET', path: a.path, headers,
      pool: target.identity === 'Passthrough' ? conn.anonymousPool : conn.identityPool,
      agent: target.identity === 'Passthrough' ? conn.anonymousAgent : conn.identityAgent,
      timeoutMs: a.route.plan.timeoutSeconds * 1000,
    };
  }

  /** Forwards a request to the apiserver (in `slot`, if it holds one: sent only within its deadline). */
  private toApiserver(t: RouteTable, a: RouteAdmitted, req: IncomingMessage, res: ServerResponse, seen: Seen, fail: (err: AgwError) => void,
    respond: (status: number, headers: IncomingMessage['headers']) => void, streaming: (end: () => void) => void, slot?: Slot): void {
    let left = 0;
    if (slot) {
      // (its admission again, after the wait, may have taken a token or impersonation check)
      left = Math.round(slot.deadline - performance.now());
      if (left <= 0) {
        fail(this.waitedTooLong(a.route.plan.timeoutSeconds * 1000));
        slot.release();
        return;
      }
    }
    seen.upstream = 'apiserver';
    const call = this.apiserverCall(t, a, req);
    if (slot) call.timeoutMs = left;
    // (a client gone already: nothing is sent, so no audit event is named)
    if (!res.destroyed) seen.auditId = call.headers['audit-id'] as string;
    const sent = performance.now();
    const rm = a.route.m;
    proxyRequest(call, req, res, {
      body: 'stream', streaming, pace: this.pace(t),
      respond: (status, headers) => { rm.upstream.observe((performance.now() - sent) / 1000); respond(status, headers); slot?.release(); },
      onError: (f) => { rm.errors[errorKind(f)].inc(); fail(f.err); slot?.release(); },
    });
  }

  private waitedTooLong(timeoutMs: number): AgwError {
    return new UpstreamTimeoutError(`the apiserver did not answer within ${timeoutMs / 1000} s (waited for one of the namespace's ${this.budgets.apiserver.limit} requests to it to be answered)`);
  }

  /** Takes a slot of the namespace's apiserver requests (--max-apiserver-requests-per-namespace)
   * for this request: now, it is sent at once; later, in order, it is admitted again (the rules
   * may have changed meanwhile, or a window closed) and forwarded in the slot. The wait counts
   * toward its route's timeout (504), and a client that leaves meanwhile takes it out of the line.
   * The slot is given back at the answer's headers, a failure, or the client leaving. */
  private inApiserverSlot(t: RouteTable, a: RouteAdmitted, req: IncomingMessage, res: ServerResponse, seen: Seen, fail: (err: AgwError) => void,
    timeoutMs: number, send: (slot: Slot) => void): void {
    const deadline = performance.now() + timeoutMs;
    let waited = false;
    let timer: NodeJS.Timeout | undefined;
    let leave: (() => void) | undefined;
    const out = this.budgets.apiserver.take(t.plan.namespace, (release) => {
      const slot = { release, deadline };
      if (waited) {
        clearTimeout(timer);
        res.off('close', leave!);
        if (res.destroyed) return release();
      }
      res.once('close', release); // (a client that leaves mid-request: proxyRequest says nothing)
      if (!waited) return send(slot);
      const lost = (err: unknown) => {
        release();
        fail(toAgwError(err));
      };
      const go = (x: Readmitted) => {
        if (x.a.kind === 'route') this.forward(x.t, x.a, req, res, seen, fail, slot);
        else lost(new RouteNotFoundError(`${x.a.kind} is not a route`, { step: 'route', field: 'spec.routes' }));
      };
      try {
        const again = this.readmit({ method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers, rawHeaders: req.rawHeaders }, seen, req.socket, { t, a });
        if (again instanceof Promise) again.then(go, lost).catch(lost);
        else go(again);
      } catch (err) {
        lost(err);
      }
    });
    if (!out) return;
    waited = true;
    t.m.apiserverWaited();
    leave = () => {
      out();
      clearTimeout(timer);
    };
    res.once('close', leave);
    timer = setTimeout(() => {
      res.off('close', leave!);
      out();
      fail(this.waitedTooLong(timeoutMs));
    }, timeoutMs);
  }

  /** The upstream call for a service route, to one endpoint (its pool or agent: the one it
   * uses, each made at the endpoint's first use). */
  private serviceCall(a: RouteAdmitted, req: IncomingMessage, ep: EndpointPool, via: 'pool'): RequestCall;
  private serviceCall(a: RouteAdmitted, req: IncomingMessage, ep: EndpointPool, via: 'agent'): UpgradeCall;
  private serviceCall(a: RouteAdmitted, req: IncomingMessage, ep: EndpointPool, via: 'pool' | 'agent'): RequestCall | UpgradeCall {
    const headers = forwardRequestHeaders(req.headers, false);
    forwardedFor(headers, req);
    Object.assign(headers, remoteHeaders(a.id));
    const { url, what } = ep, method = req.method ?? 'GET', path = a.path, timeoutMs = a.route.plan.timeoutSeconds * 1000;
    return via === 'pool' ? { url, what, method, path, headers, timeoutMs, pool: ep.pool } : { url, what, method, path, headers, timeoutMs, agent: ep.agent };
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const t = this.table;
    const started = performance.now();
    this.budgets.turns.arrived(t.plan.namespace);
    const id = ++nextId;
    const seen = newSeen();
    const sock = req.socket;
    const conn = connOf(sock);
    // Node reads pipelined requests whether or not the earlier ones are answered: a client could
    // hold any number open on one connection
    if (conn.pending >= maxPipelined) {
      if (sock.destroyed) return; // the rest of what it sent at once
      t.m.connectionRefused('pipelined');
      sock.destroy();
      return;
    }
    conn.pending++;
    conn.last = req;
    t.m.inFlight.inc();
    res.on('close', () => {
      conn.pending--;
      if (conn.last === req) conn.last = undefined;
      conn.next.shift()?.(); // the request pipelined after this one, if any, starts now
      // a closing listener serves what it has, never another request on a kept connection
      if (this.closing) setImmediate(() => this.server.closeIdleConnections());
      const seconds = (performance.now() - started) / 1000;
      t.m.inFlight.dec();
      // bytes since the last request on this connection (headers are read before 'request')
      const read = sock.bytesRead, written = sock.bytesWritten;
      t.m.bytesIn.inc(read - conn.read);
      t.m.bytesOut.inc(written - conn.written);
      conn.read = read;
      conn.written = written;
      // a client that left before any answer: 499 (nginx's "client closed request"), not the 200
      // the response object starts with
      const status = res.headersSent ? res.statusCode : clientClosed;
      (seen.route?.m ?? t.noRoute).done(req.method, status, seconds);
      const log = t.logged;
      if (status >= 400 ? log.errors : log.sample >= 1 || (log.sample > 0 && Math.random() < log.sample)) {
        accessLine(t, id, seen, req.method, status, seconds);
      }
    });
    const fail = (err: AgwError) => this.fail(t, req, res, conn, seen, id, err);
    // a request pipelined behind one still open starts when that one closes: its answer could
    // not be sent before anyway (HTTP/1.1 answers in order), and forwarded at once each would
    // hold an upstream request of its own (16 watches on one connection, 16 upstream connections)
    if (conn.pending > 1) conn.next.push(() => this.begin(req, res, conn, seen, fail));
    else this.begin(req, res, conn, seen, fail);
  }

  /**
   * Admits a request and serves it: at once, or when the one pipelined before it has closed. On a
   * connection admitted before, the request takes its place in its namespace's turn first
   * (`turns.tryStart`), whatever its answer: a refusal (a token the gateway does not accept, a
   * path it may not open) costs the event loop too, so a team's refused requests wait their turn
   * as its forwarded ones do. On a connection not admitted yet, the place is taken once the
   * request is admitted (`serve`): a client with no token the gateway accepts cannot fill a
   * team's turns, and its refusal closes the connection.
   */
  private begin(req: IncomingMessage, res: ServerResponse, conn: Conn, seen: Seen, fail: (err: AgwError) => void): void {
    if (req.socket.destroyed) return; // the client left while it waited behind the one before (499)
    if (!conn.admitted) {
      this.admitAndServe(req, res, conn, seen, fail, false);
      return;
    }
    const turns = this.budgets.turns, t = this.rules;
    if (turns.tryStart(t.plan.namespace)) this.admitAndServe(req, res, conn, seen, fail, true);
    else this.later(t, req.socket, () => this.admitAndServe(req, res, conn, seen, fail, true), fail);
  }

  /** `begin`'s admission; `started`: the request has its place in the turn already. */
  private admitAndServe(req: IncomingMessage, res: ServerResponse, conn: Conn, seen: Seen, fail: (err: AgwError) => void, started: boolean): void {
    // a request that waited (behind another, or for its turn) is admitted by the rules of now
    // (the same table unless the spec changed meanwhile)
    const t = this.rules;
    let a: Admitted | Promise<Admitted>;
    try {
      a = admit(t, { method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers, rawHeaders: req.rawHeaders }, seen, req.socket);
    } catch (err) {
      fail(toAgwError(err));
      return;
    }
    // a cached caller is served at once; a first request waits for its token check
    if (a instanceof Promise) a.then((x) => this.serveOrFail(t, x, req, res, conn, seen, fail, started), (err) => fail(toAgwError(err)));
    else this.serveOrFail(t, a, req, res, conn, seen, fail, started);
  }

  /** `serve`, whose throw is a 500 for this request, never a crash of every gateway. */
  private serveOrFail(t: RouteTable, a: Admitted, req: IncomingMessage, res: ServerResponse, conn: Conn, seen: Seen, fail: (err: AgwError) => void, started: boolean): void {
    try {
      this.serve(t, a, req, res, conn, seen, fail, started);
    } catch (err) {
      fail(toAgwError(err));
    }
  }

  /** Answers a refusal or an upstream failure (a Status body), once. */
  private fail(t: RouteTable, req: IncomingMessage, res: ServerResponse, conn: Conn, seen: Seen, id: number, err: AgwError): void {
    seen.error = err.code; // in the access line; a line of its own only for what an operator must look at
    if (err.status === 500) t.log.error({ reqId: id.toString(36), err: err.cause ?? err }, err.message);
    else if ((err.status === 502 || err.status === 504) && t.log.isLevelEnabled('warn')) {
      const line = failureLine(err);
      if (keepsLine(t.plan.namespace, false, line.weight)) t.log.warn({ reqId: id.toString(36), cause: line.cause }, line.msg);
    }
    if (res.headersSent) { res.destroy(); return; }
    const body = statusBody(err);
    const h = errorHeaders(err, body);
    // a body not read yet is not drained (a refused client could send for ever): close instead
    if (unreadBody(req)) {
      h.connection = 'close';
      lingeringClose(req.socket);
    } else if (!conn.admitted) {
      h.connection = 'close'; // a connection none of whose requests was admitted is not kept
    }
    this.head(res).writeHead(err.status, h).end(body);
  }

  /** An admitted request: discovery, or forwarding to the apiserver or a Service endpoint. */
  private serve(t: RouteTable, a: Admitted, req: IncomingMessage, res: ServerResponse, conn: Conn, seen: Seen, fail: (err: AgwError) => void, started: boolean): void {
    // the client left while it was being admitted (its 499 is logged): nothing to serve, nothing
    // to count (a closed socket emits no 'close' again to give the budget back)
    if (req.socket.destroyed) return;
    if (a.kind !== 'can-i' && !conn.admitted && !this.admitConnection(t, conn, req.socket)) {
      fail(this.tooManyConnections(t));
      return;
    }
    if (a.kind === 'discovery') {
      const body = JSON.stringify(discovery(t, a.id));
      this.head(res).writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
      return;
    }
    if (a.kind === 'can-i') {
      // answered to callers spec.access may not admit: it does not admit the connection
      const close = conn.admitted ? {} : { connection: 'close' };
      explain(t, a.id, a.method, a.url, this.deps.accessReviewer, { client: req.socket }).then((e) => {
        // a caller no rule names is not told whose gateway it is (as its 403 does not); one a rule
        // names outside its window is (as its 403 is)
        const body = JSON.stringify(t.policy.knows(a.id) ? e : { ...e, gateway: undefined });
        this.head(res).writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', ...close }).end(body);
      }, (err) => fail(toAgwError(err)));
      return;
    }
    // the usual case starts at once, without a closure for later
    if (started || this.budgets.turns.tryStart(t.plan.namespace)) this.forward(t, a, req, res, seen, fail);
    else this.later(t, req.socket, () => this.forward(t, a, req, res, seen, fail), fail);
  }

  /**
   * Runs `go` in a later turn of the event loop, counted as deferred: the gateway's namespace has
   * started its share of requests (and upgrades) in this one (`turns.tryStart` said no); a team
   * whose requests fill the loop waits its turn, and others are not held behind it. Not run for a
   * client that left meanwhile (its 499 is logged); what `go` throws is `fail`'s (outside the
   * caller's catch).
   */
  private later(t: RouteTable, socket: Duplex, go: () => void, fail: (err: AgwError) => void): void {
    const turns = this.budgets.turns, ns = t.plan.namespace;
    t.m.requestDeferred();
    turns.wait(ns, () => {
      if (socket.destroyed) return false; // takes no place in the turn
      turns.start(ns);
      try {
        go();
      } catch (err) {
        fail(toAgwError(err));
      }
      return true;
    });
  }
  /** `t`'s namespace's turns, for the pieces of a body, an answer or a session: made once a table,
   * not on each request. */
  private pace(t: RouteTable): Pace {
    let p = this.paces.get(t);
    if (!p) this.paces.set(t, (p = { turns: this.budgets.turns, namespace: t.plan.namespace, m: t.m, paused: this.budgets.paused, stalledMs: this.limits.idleTimeoutMs }));
    return p;
  }
  private readonly paces = new WeakMap<RouteTable, Pace>();

  /** The request body, buffered when it is small, of known length and fits the namespace's budget
   * (given back when the response closes); else 'stream'. Read in the namespace's turns, as a
   * streamed body is (`paced`): one team's uploads must not fill every team's turns. */
  private requestBody(t: RouteTable, req: IncomingMessage, res: ServerResponse): Buffer | null | 'stream' | Promise<Buffer> {
    if (req.headers['transfer-encoding'] !== undefined) return 'stream';
    const len = Number(req.headers['content-length'] ?? 0);
    if (!len) return null;
    const ns = t.plan.namespace, bodies = this.budgets.bodies;
    if (!(len <= maxBufferedBody) || !bodies.take(ns, len)) return 'stream';
    res.once('close', () => bodies.give(ns, len));
    const pace = this.pace(t);
    return (async () => {
      const chunks: Buffer[] = [];
      for await (const c of paced(req, pace)) chunks.push(c as Buffer);
      return Buffer.concat(chunks);
    })();
  }


  /**
   * Admits a request again by the rules that decide now, until they stop changing under it (a
   * swap during an asynchronous token check). Counted once: no second rate-limit token and no
   * second authentication count; the access rules and the route are asked again. `before`: its
   * admission by the table of then, kept when nothing it depends on has changed (`admit`).
   */
  private readmit(h: RequestHead, seen: Seen, socket: Socket, before?: Before): Readmitted | Promise<Readmitted> {
    const t = this.rules;
    const settle = (a: Admitted): Readmitted | Promise<Readmitted> => t === this.rules ? { t, a } : this.readmit(h, seen, socket);
    const a = admit(t, h, seen, socket, true, before);
    return a instanceof Promise ? a.then(settle) : settle(a);
  }

  /** A request admitted to a route, to its upstream. */
  private forward(t: RouteTable, a: RouteAdmitted, req: IncomingMessage, res: ServerResponse, seen: Seen, fail: (err: AgwError) => void, slot?: Slot): void {
    if (t !== this.rules) {
      // the table was swapped while the request waited (its turn, its token check), or the
      // listener was replaced: the old one's endpoint pools may be closed, and its access rules
      // are no longer the gateway's, so the request is admitted again by the current table (its
      // caller is cached: at once)
      const lost = (err: unknown) => {
        slot?.release();
        fail(toAgwError(err));
      };
      const go = (x: Readmitted) => {
        if (x.a.kind === 'route') this.forward(x.t, x.a, req, res, seen, fail, slot);
        else lost(new RouteNotFoundError(`${x.a.kind} is not a route`, { step: 'route', field: 'spec.routes' }));
      };
      const again = this.readmit({ method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers, rawHeaders: req.rawHeaders }, seen, req.socket);
      if (again instanceof Promise) again.then(go, lost).catch(lost);
      else go(again);
      return;
    }
    const rm = a.route.m;
    const backend = a.route.backend;
    // (a Service without endpoints answers 503: its client is not asked for its body)
    if (awaitingContinue.delete(res) && (!backend || backend.pools.length > 0)) res.writeContinue();
    const respond = (status: number, headers: IncomingMessage['headers']) => this.head(res).writeHead(status, forwardResponseHeaders(headers));
    const streaming = (end: () => void) => this.track(t, a, req, res, end);
    if (!backend) {
      if (slot || this.budgets.apiserver.limit === 0) this.toApiserver(t, a, req, res, seen, fail, respond, streaming, slot);
      else this.inApiserverSlot(t, a, req, res, seen, fail, a.route.plan.timeoutSeconds * 1000, (s) => this.toApiserver(t, a, req, res, seen, fail, respond, streaming, s));
      return;
    }
    slot?.release(); // (admitted again after its wait, to a Service route)
    // Service route. A small body is buffered so the request can be retried: on another
    // endpoint when the connection fails (nothing was sent), and for idempotent methods also
    // when it is reset before any answer; never after a timeout.
    const retryable = idempotent.has(req.method ?? 'GET');
    let tried: Set<EndpointPool> | undefined;
    const attempt = (body: Buffer | null | 'stream', n: number, last?: AgwError) => {
      const ep = backend.pick(tried);
      if (!ep) {
        fail(last ?? new NoEndpointsError(`Service ${backend.target.namespace}/${backend.target.name} has no ready endpoints`));
        return;
      }
      ep.outstanding++;
      ep.served++;
      seen.upstream = ep.host;
      const sent = performance.now();
      proxyRequest(this.serviceCall(a, req, ep, 'pool'), req, res, {
        body, streaming, pace: this.pace(t),
        respond: (status, headers) => { rm.upstream.observe((performance.now() - sent) / 1000); ep.succeeded(); respond(status, headers); },
        onEnd: () => ep.release(),
        onError: (f) => {
          rm.errors[errorKind(f)].inc();
          if (f.connect) {
            ep.eject();
            rm.ejections.inc();
          }
          // (an answer refused for its form would be refused again)
          const again = body !== 'stream' && (f.connect || retryable) && !(f.err instanceof UpstreamTimeoutError) && !(f.err instanceof UpstreamProtocolError);
          if (again && n < a.route.plan.retries && !res.destroyed) {
            (tried ??= new Set()).add(ep);
            attempt(body, n + 1, f.err);
          } else {
            fail(f.err);
          }
        },
      });
    };
    const body = this.requestBody(t, req, res);
    if (body instanceof Promise) body.then((b) => attempt(b, 0), (err) => fail(toAgwError(err)));
    else attempt(body, 0);
  }

  /** CONNECT: a tunnel is never proxied; 405, and the connection closed. */
  private onConnect(req: IncomingMessage, socket: Duplex): void {
    socket.on('error', () => socket.destroy());
    const err = new MethodNotAllowedError('the gateway does not proxy CONNECT (tunnels)', { step: 'request' });
    afterAnswers(socket, () => endRaw(socket, err));
    const t = this.rules;
    t.noRoute.done(req.method, err.status, 0);
    if (t.logged.errors) accessLine(t, ++nextId, Object.assign(newSeen(), { error: err.code }), req.method, err.status, 0);
  }

  private async onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    let t = this.rules;
    const started = performance.now();
    this.budgets.turns.arrived(t.plan.namespace);
    const seen = newSeen();
    socket.on('error', () => socket.destroy());
    const fail = (err: AgwError) => {
      endRaw(socket, err);
      seen.error = err.code;
      refused(err.status);
    };
    // an upgrade refused by the gateway or answered without 101 by the upstream (a refused exec is
    // worth an audit line) is an access line like any refusal
    const refused = (status: number) => {
      if (t.logged.errors) accessLine(t, ++nextId, seen, req.method, status, (performance.now() - started) / 1000);
    };
    try {
      // only what Kubernetes clients upgrade to: after a 101 the gateway reads nothing the client
      // sends, so a protocol a backend answers in HTTP (h2c, its own) would carry requests past the rules
      const upgrade = req.headers.upgrade?.trim().toLowerCase();
      if (upgrade !== 'websocket' && upgrade !== 'spdy/3.1') {
        throw new BadRequestError(`Upgrade ${JSON.stringify(req.headers.upgrade ?? '')} is not relayed: only websocket and SPDY/3.1`, { step: 'request' });
      }
      const h = { method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers, rawHeaders: req.rawHeaders };
      let a = await admit(t, h, seen, req.socket);
      // an upgrade opens an upstream connection: it takes its namespace's turn as a request does
      // (one whose client leaves meanwhile is not resumed: nothing was opened for it)
      if (!this.budgets.turns.tryStart(t.plan.namespace)) await new Promise<void>((go) => this.later(t, socket, go, fail));
      // the table was swapped (or the listener replaced) during the token check or the wait (as in forward)
      while (t !== this.rules) ({ t, a } = await this.readmit(h, seen, req.socket));
      if (a.kind !== 'route') throw new BadPathError(`${a.kind} does not upgrade`);
      if (socket.destroyed) return; // the client left while it was being admitted: nothing to open
      const conn = connOf(req.socket);
      if (!conn.admitted && !this.admitConnection(t, conn, req.socket)) throw this.tooManyConnections(t);
      const limits = t.plan.sessions;
      if (this.sessions.size + this.opening >= limits.maxConcurrent) {
        t.m.sessionRefused();
        throw new TooManySessionsError(`gateway ${t.key} has ${this.sessions.size + this.opening} interactive sessions open, its limit (spec.sessions.maxConcurrent ${limits.maxConcurrent})`, 10);
      }
      let call: UpgradeCall;
      let ep: EndpointPool | undefined;
      if (a.route.backend) {
        ep = a.route.backend.pick(new Set());
        if (!ep) throw new NoEndpointsError(`Service ${a.route.backend.target.namespace}/${a.route.backend.target.name} has no ready endpoints`);
        ep.outstanding++;
        ep.served++;
        call = this.serviceCall(a, req, ep, 'agent');
      } else {
        call = this.apiserverCall(t, a, req);
        // (a refusal's access line and the session's lines name its audit event)
        seen.auditId = call.headers['audit-id'] as string;
      }
      seen.upstream = ep ? ep.host : 'apiserver';
      call.headers.connection = 'Upgrade';
      call.headers.upgrade = req.headers.upgrade;
      socket.once('close', () => ep?.release());
      // an endpoint (shared by the namespace's gateways routing to it) is ejected only when it could not be
      // reached, as for requests: a reset a caller's own upgrade provoked does not eject it
      this.openSession(t, a, req, call, socket, head, (err, connect) => { if (ep && connect) ep.eject(); fail(err); },
        refused);
    } catch (err) {
      fail(toAgwError(err));
    }
  }

  /** Relays an admitted upgrade (within the gateway's session limit) as a session, logged at start and end. */
  private openSession(t: RouteTable, a: RouteAdmitted, req: IncomingMessage, call: UpgradeCall, socket: Duplex, head: Buffer,
    fail: (err: AgwError, connect: boolean) => void, answered: (status: number) => void): void {
    const limits = t.plan.sessions;
    this.opening++;
    let opened = false;
    const settle = () => { if (!opened) { opened = true; this.opening--; } };
    socket.once('close', settle);
    // what the apiserver is asked (the canonical path, as routed), not what the client wrote
    const target = a.route.backend ? { kind: 'upgrade' as const } : sessionTarget(a.path);
    const who = { caller: clipped(a.id.username), ...(a.as ? { as: clipped(a.as.user) } : {}), route: a.route.plan.name,
      ...(call.headers['audit-id'] ? { auditId: call.headers['audit-id'] as string } : {}) };
    const weight = lineWeight(who.caller, who.as);
    // a pod's exec, attach, port-forward: its lines are the audit, never shed (but counted); a
    // WebSocket to a Service may be opened and closed without end: shed as access lines are
    const audit = target.kind !== 'upgrade';
    const relaying = (end: () => void) => this.track(t, a, req, socket, end);
    proxyUpgrade(call, socket, (err, connect) => { settle(); fail(err, connect); }, (status) => { settle(); answered(status); }, (usocket, uhead, headers) => {
      settle();
      const negotiated = headers['sec-websocket-protocol'] ?? headers['x-stream-protocol-version'];
      // SPDY inside WebSocket is read (its frame headers unmasked) for the apiserver's port-forward only,
      // never because a team's own backend chose that subprotocol
      const protocol = frameProtocol(req.headers.upgrade, a.route.backend ? undefined : headers['sec-websocket-protocol']);
      const rm = a.route.m;
      let release = () => {};
      const session = new Session(socket, usocket, protocol, target.kind === 'exec' || target.kind === 'attach', limits.idleTimeoutSeconds * 1000, (s, reason) => {
        this.sessions.delete(s);
        release();
        rm.upgraded.dec();
        const seconds = (performance.now() - s.started) / 1000;
        rm.sessionEnded(reason, seconds);
        t.m.bytesIn.inc(s.bytesFromClient);
        t.m.bytesOut.inc(s.bytesToClient);
        if (keepsLine(t.plan.namespace, audit, weight)) t.log.info({ ...who, ...target, reason, bytesFromClient: s.bytesFromClient, bytesToClient: s.bytesToClient, durationMs: Math.round(seconds * 1000) }, 'session ended');
      }, this.pace(t));
      this.sessions.add(session);
      rm.upgraded.inc();
      // the protocol the client asked and the upstream chose: up to 16 KiB of a team's text
      const shown = clipped(String(negotiated ?? req.headers.upgrade ?? ''));
      if (keepsLine(t.plan.namespace, audit, lineWeight(who.caller, who.as, shown))) t.log.info({ ...who, ...target, protocol: shown }, 'session started');
      session.start(head, uhead);
      if (this.drained) session.end(...shutdown);
      // ended when spec.access or the route no longer admits it (asked at once if the spec changed meanwhile)
      if (!session.finished) {
        release = this.held.hold(heldOf(a, req), (why) => session.end('revoked', 1008, `access ended: ${why}`, 'Forbidden'), t);
      }
    }, relaying, this.pace(t));
  }
}

/** An upstream failure's warn line: its message and cause clipped (Node's message for a team
 * backend's certificate quotes all its names: 30 KB), weighed by what they hold. */
export function failureLine(err: AgwError): { msg: string; cause: string; weight: number } {
  const msg = clipped(err.message);
  const cause = clipped(String(err.cause ?? ''));
  return { msg, cause, weight: lineWeight(msg, cause) };
}

function heldOf(a: RouteAdmitted, req: IncomingMessage): Held {
  return { id: a.id, method: req.method ?? 'GET', url: req.url ?? '/', route: a.route.plan.name, filtered: a.route.filtered, acts: a.route.acts, authn: authnOf(a.id, a.route) };
}

/** The access line of a request or a refused upgrade: who asked, by which route, what came of it. */
function accessLine(t: RouteTable, id: number, seen: Seen, method: string | undefined, status: number, seconds: number): void {
  // (no spreads: one object of one shape per line)
  t.accessLog.write({ reqId: id.toString(36), caller: seen.caller, as: seen.as || undefined, route: seen.route?.plan.name ?? '-', method, status,
    durationMs: Math.round(seconds * 1e6) / 1000, upstream: seen.upstream ?? '-', error: seen.error || undefined, auditId: seen.auditId });
}

/** The status logged and counted for a request whose client left before any answer. */
const clientClosed = 499;

/** Requests one connection may have open at once (HTTP/1.1 pipelining; clients rarely send two). */
const maxPipelined = 16;

/** What is kept per client connection: the bytes counted so far (updated in place), whether a
 * request on it was admitted (from then on it counts against its namespace's budget), and how many
 * of its requests are open. */
/** `next`: requests pipelined behind the open one, started in order as each closes. */
interface Conn { read: number; written: number; admitted: boolean; pending: number; next: (() => void)[]; last?: IncomingMessage }
const conns = new WeakMap<object, Conn>();

/** The connection's two ends: the same for a TLS socket and the TCP socket under it. (The
 * local address too: a listener on 0.0.0.0 may have two from one client address and port.) */

function peerKey(sock: Socket): string | undefined {
  const { remoteAddress: a, remotePort: p, localAddress: la, localPort: lp } = sock;
  return a === undefined || p === undefined ? undefined : `${a} ${p} ${la} ${lp}`;
}

function connOf(sock: object): Conn {
  let c = conns.get(sock);
  if (!c) conns.set(sock, (c = { read: 0, written: 0, admitted: false, pending: 0, next: [] }));
  return c;
}

/** Runs `write` (what is written raw on the connection: a refusal, an upgrade) once the answers of
 * the requests before it on that connection are sent: pipelined behind them, it would be read as
 * the first's. */
function afterAnswers(socket: Duplex, write: () => void): void {
  const c = conns.get(socket as Socket);
  // (the last request's body not whole: the error is its own, a cut body, answered now)
  if (!c || c.pending === 0 || !c.last?.complete) write();
  else c.next.push(() => (socket.writable ? write() : socket.destroy())); // (an answer before it closed the connection)
}

/** Answers a refusal on a raw socket (an upgrade, a CONNECT) with its Status body, and closes it. */
function endRaw(socket: Duplex, err: AgwError): void {
  const body = statusBody(err);
  let head = `HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? err.reason}\r\nconnection: close\r\n`;
  for (const [k, v] of Object.entries(errorHeaders(err, body))) head += `${k}: ${String(v)}\r\n`;
  socket.end(head + '\r\n' + body);
  closeSoon(socket);
}

/** The methods a route may name (the CRD's enum): what a 405 says is proxied. */
const routeMethods = (schema as { properties: { spec: { properties: { routes: { items: { properties: { methods: { items: { enum: string[] } } } } } } } } })
  .properties.spec.properties.routes.items.properties.methods.items.enum.join(', ');

/**
 * Closes a connection after the answer the way Go's net/http does (closeWriteAndWait): send FIN,
 * stop reading, and close 500 ms later. Closing at once with unread data makes the kernel send a
 * reset, and the client could lose the answer before reading it; reading on would let it send
 * for ever. Node calls destroySoon() once a `Connection: close` answer is sent.
 */
function lingeringClose(socket: Socket, ms = 500): void {
  socket.destroySoon = () => {
    socket.end();
    socket.pause();
    const timer = setTimeout(() => socket.destroy(), ms);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  };
}

function errorKind(f: UpstreamFailure): 'connect' | 'timeout' | 'reset' {
  return f.connect ? 'connect' : f.err instanceof UpstreamTimeoutError ? 'timeout' : 'reset';
}

const idempotent = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);
const maxBufferedBody = 1 << 20;

/** Whether the request has a body that has not been read to its end (a request without one is
 * complete only once the parser is past it, which may be after a synchronous refusal). */
function unreadBody(req: IncomingMessage): boolean {
  if (req.complete) return false;
  const len = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (len !== undefined && len !== '0');
}

function forwardedFor(headers: OutgoingHttpHeaders, req: IncomingMessage): void {
  const addr = req.socket.remoteAddress;
  if (addr) headers['x-forwarded-for'] = addr;
  headers['x-forwarded-proto'] = (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http';
  if (req.headers.host) headers['x-forwarded-host'] = req.headers.host;
}

/** What `/.well-known/access-gateway` answers a caller: the routes it may use. */
export function discovery(t: RouteTable, id: CallerIdentity) {
  return {
    kind: 'AccessGatewayDiscovery',
    apiVersion: 'access-gateway.io/v1alpha1',
    gateway: { namespace: t.plan.namespace, name: t.plan.name },
    caller: { username: id.username, groups: id.groups },
    routes: t.routes.filter((r) => t.policy.mayUse(id, r.plan.name) && !callerRefusal(t, id, r)).map((r) => ({
      name: r.plan.name,
      pathPrefix: r.plan.pathPrefix,
      methods: r.plan.methods,
      upstream: r.plan.target.kind === 'apiserver'
        ? { apiserver: { identity: r.plan.target.identity } }
        : { service: { namespace: r.plan.target.namespace, name: r.plan.target.name, port: r.plan.target.port } },
    })),
  };
}

/** A request admitted again, with the table that admitted it. */
type Readmitted = { t: RouteTable; a: Admitted };
