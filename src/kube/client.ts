// The operator's connection to the apiserver: credentials from a kubeconfig or the in-cluster
// config (via client-node, honouring KUBECONFIG, exec plugins and the rotating token file),
// JSON requests and line-delimited watch streams over undici.
import { KubeConfig } from '@kubernetes/client-node';
import { Agent as HttpsAgent } from 'node:https';
import { Agent, request } from 'undici';
import type { Logger } from 'pino';
import type { ApiserverConnection } from '../dataplane/upstream.js';

export class KubeApiError extends Error {
  constructor(readonly status: number, readonly body: any, what: string) {
    super(`${what}: HTTP ${status}${body?.message ? `: ${body.message}` : ''}`);
    this.name = 'KubeApiError';
  }
}

export function loadKubeConfig(file?: string): KubeConfig {
  const kc = new KubeConfig();
  if (file) kc.loadFromFile(file);
  else kc.loadFromDefault();
  if (!kc.getCurrentCluster()) throw new Error('no current cluster in the Kubernetes configuration');
  return kc;
}

interface TlsMaterial { ca?: string | Buffer; cert?: string | Buffer; key?: string | Buffer; rejectUnauthorized?: boolean }

export class KubeClient {
  readonly server: URL;
  private authorization: string | undefined;
  private refreshTimer?: NodeJS.Timeout;
  private readonly dispatcher: Agent;
  private readonly tls: TlsMaterial;

  private constructor(private readonly kc: KubeConfig, opts: TlsMaterial, auth: string | undefined, private readonly log: Logger) {
    this.server = new URL(kc.getCurrentCluster()!.server);
    this.tls = opts;
    this.authorization = auth;
    this.dispatcher = new Agent({ connect: { ...opts }, keepAliveTimeout: 30_000 });
  }

  static async create(kc: KubeConfig, log: Logger): Promise<KubeClient> {
    const opts: Record<string, any> = {};
    await kc.applyToHTTPSOptions(opts);
    const tls: TlsMaterial = { ca: opts.ca, cert: opts.cert, key: opts.key };
    if (opts.rejectUnauthorized === false) tls.rejectUnauthorized = false;
    const client = new KubeClient(kc, tls, opts.headers?.Authorization ?? opts.headers?.authorization, log);
    client.refreshTimer = setInterval(() => void client.refreshAuth(), 60_000).unref();
    return client;
  }

  /** Re-reads credentials that rotate (projected token files, exec plugins). */
  async refreshAuth(): Promise<void> {
    try {
      const opts: Record<string, any> = {};
      await this.kc.applyToHTTPSOptions(opts);
      this.authorization = opts.headers?.Authorization ?? opts.headers?.authorization;
    } catch (err) {
      this.log.warn({ err }, 'refreshing apiserver credentials failed; keeping the previous ones');
    }
  }

  private headers(extra?: Record<string, string>): Record<string, string> {
    const h: Record<string, string> = { accept: 'application/json', ...extra };
    if (this.authorization) h.authorization = this.authorization;
    return h;
  }

  async request<T = any>(method: string, path: string, body?: unknown,
    opts: { contentType?: string; timeoutMs?: number; accept?: string } = {}): Promise<{ status: number; body: T }> {
    const res = await request(new URL(path, this.server), {
      dispatcher: this.dispatcher,
      method: method as any,
      headers: this.headers({
        ...(body === undefined ? {} : { 'content-type': opts.contentType ?? 'application/json' }),
        ...(opts.accept ? { accept: opts.accept } : {}),
      }),
      body: body === undefined ? undefined : JSON.stringify(body),
      headersTimeout: opts.timeoutMs ?? 30_000,
      bodyTimeout: opts.timeoutMs ?? 30_000,
    });
    const text = await res.body.text();
    let parsed: any = text;
    try { parsed = text ? JSON.parse(text) : undefined; } catch { /* not JSON */ }
    if (res.statusCode === 401) void this.refreshAuth();
    return { status: res.statusCode, body: parsed };
  }

  /** Streams a watch; `onEvent` gets each decoded event. Resolves when the server ends the stream. */
  async watch(path: string, signal: AbortSignal, idleTimeoutMs: number, accept: string | undefined,
    onEvent: (ev: { type: string; object: any }) => void): Promise<void> {
    const res = await request(new URL(path, this.server), {
      dispatcher: this.dispatcher, method: 'GET', headers: this.headers(accept ? { accept } : undefined), signal,
      headersTimeout: 30_000, bodyTimeout: idleTimeoutMs,
    });
    if (res.statusCode !== 200) {
      const text = await res.body.text();
      let body: any;
      try { body = JSON.parse(text); } catch { body = { message: text }; }
      throw new KubeApiError(res.statusCode, body, `watch ${path}`);
    }
    let buf = '';
    res.body.setEncoding('utf8');
    for await (const chunk of res.body) {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line) onEvent(JSON.parse(line));
      }
    }
  }

  /** What the data plane needs to forward to the apiserver (no client-node types cross over). */
  apiserverConnection(): ApiserverConnection {
    const common = { keepAlive: true, maxFreeSockets: 64, ca: this.tls.ca, rejectUnauthorized: this.tls.rejectUnauthorized !== false };
    return {
      url: this.server,
      identityAgent: new HttpsAgent({ ...common, cert: this.tls.cert, key: this.tls.key }),
      anonymousAgent: new HttpsAgent(common),
      authorization: () => this.authorization,
    };
  }

  async close(): Promise<void> {
    clearInterval(this.refreshTimer);
    await this.dispatcher.close();
  }
}
