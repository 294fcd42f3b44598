// Forwarding to the Kubernetes apiserver: plain requests, streamed watches, and upgrades
// (closed unless the apiserver answers 101).
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { request as httpsRequest, type Agent } from 'node:https';
import { request as httpRequest } from 'node:http';
import type { Duplex } from 'node:stream';
import { UpstreamTimeoutError, UpstreamUnreachableError, type AgwError } from './errors.js';

/** How the data plane reaches the apiserver; provided by the kube layer. */
export interface ApiserverConnection {
  url: URL;
  /** Presents the gateway's own credentials (client certificate, if any). */
  identityAgent: Agent;
  /** Verifies the apiserver but presents no credentials (Passthrough). */
  anonymousAgent: Agent;
  /** The gateway's own Authorization header (token credentials), kept fresh by the kube layer. */
  authorization(): string | undefined;
}

export interface UpstreamCall {
  method: string;
  path: string;
  headers: OutgoingHttpHeaders;
  agent: Agent;
  /** Time allowed until the response headers arrive (watches stream on after that). */
  timeoutMs: number;
}

function start(conn: ApiserverConnection, call: UpstreamCall) {
  const req = conn.url.protocol === 'https:' ? httpsRequest : httpRequest;
  return req({
    protocol: conn.url.protocol,
    hostname: conn.url.hostname,
    port: conn.url.port,
    method: call.method,
    path: call.path,
    headers: { ...call.headers, host: conn.url.host },
    agent: call.agent as any,
  });
}

function upstreamError(err: unknown, timedOut: boolean): AgwError {
  if (timedOut) return new UpstreamTimeoutError('the apiserver did not answer in time');
  return new UpstreamUnreachableError(`the apiserver is unreachable: ${(err as Error).message}`, { cause: err });
}

/** Proxies one request; `fail` answers errors that happen before the response starts. */
export function proxyRequest(conn: ApiserverConnection, call: UpstreamCall, req: IncomingMessage, res: ServerResponse,
  respond: (status: number, headers: OutgoingHttpHeaders) => void, fail: (err: AgwError) => void): void {
  const up = start(conn, call);
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; up.destroy(); }, call.timeoutMs);
  up.on('response', (ur) => {
    clearTimeout(timer);
    respond(ur.statusCode ?? 502, ur.headers as OutgoingHttpHeaders);
    res.flushHeaders();
    ur.pipe(res);
    ur.on('error', () => res.destroy());
    ur.on('aborted', () => res.destroy());
  });
  up.on('error', (err) => {
    clearTimeout(timer);
    if (res.headersSent) res.destroy();
    else fail(upstreamError(err, timedOut));
  });
  res.on('close', () => {
    if (!res.writableFinished) up.destroy();
  });
  req.pipe(up);
}

function rawHead(status: number, message: string, headers: Record<string, string | string[] | number | undefined>): string {
  let head = `HTTP/1.1 ${status} ${message}\r\n`;
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) head += `${k}: ${one}\r\n`;
  }
  return head + '\r\n';
}

/**
 * Proxies an upgrade (WebSocket, SPDY). The client socket is joined to the upstream only on 101;
 * any other answer is relayed and the connection closed (CVE-2018-1002105).
 */
export function proxyUpgrade(conn: ApiserverConnection, call: UpstreamCall, socket: Duplex, head: Buffer,
  fail: (err: AgwError) => void, track: (s: Duplex) => void): void {
  const up = start(conn, call);
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; up.destroy(); }, call.timeoutMs);
  up.on('upgrade', (ures, usocket, uhead) => {
    clearTimeout(timer);
    if (ures.statusCode !== 101) {
      socket.end(rawHead(ures.statusCode ?? 502, ures.statusMessage ?? '', { ...ures.headers, connection: 'close' }));
      usocket.destroy();
      return;
    }
    socket.write(rawHead(101, 'Switching Protocols', ures.headers));
    track(socket);
    track(usocket);
    if (uhead.length) socket.write(uhead);
    if (head.length) usocket.write(head);
    usocket.pipe(socket).pipe(usocket);
    const close = () => { socket.destroy(); usocket.destroy(); };
    socket.on('error', close); usocket.on('error', close);
    socket.on('close', close); usocket.on('close', close);
  });
  up.on('response', (ures) => {
    clearTimeout(timer);
    // Not upgraded: relay the answer, then close (never keep the connection open).
    const { connection: _c, 'transfer-encoding': _te, ...headers } = ures.headers;
    const chunks: Buffer[] = [];
    ures.on('data', (c: Buffer) => chunks.push(c));
    ures.on('end', () => {
      const body = Buffer.concat(chunks);
      socket.end(Buffer.concat([Buffer.from(rawHead(ures.statusCode ?? 502, ures.statusMessage ?? '',
        { ...headers, 'content-length': body.length, connection: 'close' })), body]));
    });
    ures.on('error', () => socket.destroy());
  });
  up.on('error', (err) => {
    clearTimeout(timer);
    fail(upstreamError(err, timedOut));
  });
  socket.on('error', () => up.destroy());
  up.end();
}
