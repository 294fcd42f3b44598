// Raw HTTP/1.1 over a TCP socket: requests that curl and fetch would normalise or refuse to
// send (duplicate headers, odd request targets, smuggling attempts, slow clients).
import { connect } from 'node:net';

export interface RawResponse {
  /** 0 when the server closed without answering. */
  status: number;
  head: string;
  body: string;
  /** The server closed the connection (rather than the timeout firing). */
  closed: boolean;
}

/** Sends `text` (written as given) and collects everything until the server closes or `timeoutMs`. */
export function rawRequest(port: number, text: string | Buffer, timeoutMs = 10_000, host = '127.0.0.1'): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const s = connect(port, host);
    const chunks: Buffer[] = [];
    let closed = false;
    const timer = setTimeout(() => s.destroy(), timeoutMs);
    s.on('connect', () => s.write(text));
    s.on('data', (c) => chunks.push(c));
    s.on('end', () => { closed = true; });
    s.on('error', (err) => { if (!chunks.length) { clearTimeout(timer); reject(err); } });
    s.on('close', () => {
      clearTimeout(timer);
      const all = Buffer.concat(chunks).toString('latin1');
      const split = all.indexOf('\r\n\r\n');
      const head = split < 0 ? all : all.slice(0, split);
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
      resolve({ status: m ? Number(m[1]) : 0, head, body: split < 0 ? '' : all.slice(split + 4), closed });
    });
  });
}

/** A GET with `Connection: close` and the given extra header lines. */
export function rawGet(port: number, target: string, headers: string[] = [], timeoutMs?: number): Promise<RawResponse> {
  return rawRequest(port, [`GET ${target} HTTP/1.1`, 'Host: gateway', 'Connection: close', ...headers, '', ''].join('\r\n'), timeoutMs);
}
