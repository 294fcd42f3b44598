// A real TLS ClientHello, as a Node.js client sends it first (to a stream that answers nothing).
import { Duplex } from 'node:stream';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';

export function captureHello(opts: ConnectionOptions = {}): Promise<Buffer> {
  return new Promise((resolve) => {
    let c: TLSSocket | undefined;
    const pipe = new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        resolve(Buffer.from(chunk));
        cb();
        setImmediate(() => c?.destroy());
      },
    });
    c = tlsConnect({ socket: pipe, rejectUnauthorized: false, servername: 'gw', ...opts });
    c.on('error', () => {});
  });
}
