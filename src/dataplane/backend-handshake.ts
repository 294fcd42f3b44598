// The gateway's TLS handshake with a team's own HTTPS backend, metered as a client's is
// (handshake-meter.ts). OpenSSL checks the chain the backend sends on the event loop every team
// shares, and the team chooses both that chain and the CA bundle it is checked against: ~70
// intermediates with RSA-3072 keys and 3,000-bit exponents held the loop ~0.5 s a handshake, and a
// backend answering `Connection: close` made one per request, charged as one start. So the
// backend's bytes wait for its gateway's namespace's turn of the handshakes' share before TLS
// reads them, the time TLS spends on them is charged there, and the backend may send at most
// `maxBackendHandshakeBytes` before the handshake is done.
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { HandshakeMeter } from './handshake-meter.js';
import { noCost, type HandshakeShare } from './handshake-share.js';
import { UpstreamProtocolError } from '../errors.js';

/** What a backend may send before the gateway's handshake with it is done: its hello, key exchange
 * and chain (public CAs' chains are 3–7 KiB; a costly link ~1.4 KiB). */
export const maxBackendHandshakeBytes = 16 * 1024;

/** The handshakes' share, as a backend's handshake uses it. */
export type HandshakeTurns = Pick<HandshakeShare, 'start' | 'charge'>;

/** Whose handshake it is: the namespace charged, the endpoint (its "address" within the
 * namespace's turns), and how error messages name it. */
export interface BackendOf {
  namespace: string;
  host: string;
  what: string;
}

/** The source a backend's handshakes are charged under in its namespace's turns. */
export function backendSource(host: string): string {
  return `backend ${host}`;
}

/** A raw connection to `host`:`port`, metered for `b`'s handshake: give it to TLS as its `socket`,
 * and call `done()` when the handshake is done (within TLS's 'secureConnect'). */
export function meteredConnection(host: string, port: number, turns: HandshakeTurns, b: BackendOf): HandshakeMeter {
  const raw = netConnect({ host, port });
  raw.setNoDelay(true);
  raw.setKeepAlive(true, 60_000);
  const source = backendSource(b.host);
  const meter: HandshakeMeter = new HandshakeMeter(raw, {
    spent: (ms) => turns.charge(b.namespace, source, ms),
    gate: (feed) => void turns.start(b.namespace, source, noCost, feed),
    tooLarge: () => meter.destroy(new UpstreamProtocolError(`${b.what} sent more than ${maxBackendHandshakeBytes / 1024} KiB before its TLS handshake was done`)),
  }, 0, maxBackendHandshakeBytes);
  return meter;
}

/** A TLS connection to a backend over a metered one (for an upgrade's agent: undici's pools use
 * `meteredConnection` with their own connector). */
export function meteredTLS(options: ConnectionOptions & { host: string; port: number }, turns: HandshakeTurns, b: BackendOf): TLSSocket {
  const meter = meteredConnection(options.host, options.port, turns, b);
  const tls = tlsConnect({ ...options, socket: meter });
  tls.prependOnceListener('secureConnect', () => meter.done());
  return tls;
}
