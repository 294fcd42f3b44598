// Service endpoints: one keep-alive pool per endpoint (shared by every gateway that routes to it
// and kept across plan changes), passive ejection of endpoints that refuse connections, and
// power-of-two-choices balancing on outstanding requests.
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { createSecureContext, type SecureContext } from 'node:tls';
import { Pool } from '../undici.js';
import { Recent } from '../recent.js';
import type { Endpoint, ServiceTarget } from '../translate/plan.js';
import { textKey } from '../api/pem.js';

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
  private made?: { pool: Pool; agent: HttpAgent | HttpsAgent };

  constructor(readonly key: string, private readonly scheme: 'http' | 'https', ep: Endpoint,
    private readonly ca: string | null, private readonly serverName: string, service: string) {
    const host = ep.ip.includes(':') ? `[${ep.ip}]` : ep.ip;
    this.url = new URL(`${scheme}://${host}:${ep.port}`);
    this.host = this.url.host;
    this.what = `Service ${service} endpoint ${this.host}`;
  }

  /** Keep-alive connections for requests (made at the first request: a Service of 5,000
   * endpoints took 30 ms a thousand to make them all, and ~18 KiB each, most never used). */
  get pool(): Pool {
    return this.connections().pool;
  }

  /** For upgrades (WebSocket, SPDY), which leave the pool. */
  get agent(): HttpAgent | HttpsAgent {
    return this.connections().agent;
  }

  /** (One retired and closed before a request it was picked for: that request's end closes it again.) */
  private connections(): { pool: Pool; agent: HttpAgent | HttpsAgent } {
    if (this.made) return this.made;
    const tls = this.scheme === 'https'
      ? { servername: this.serverName, ...(this.ca ? { secureContext: secureContextFor(this.ca) } : {}), rejectUnauthorized: true } : {};
    // HTTP/1.1 (undici would join repeated headers such as X-Remote-Group over HTTP/2)
    const pool = new Pool(this.url.origin, { connect: tls, keepAliveTimeout: 60_000, allowH2: false });
    const common = { keepAlive: false };
    const agent = this.scheme === 'https' ? new HttpsAgent({ ...common, ...tls }) : new HttpAgent(common);
    return (this.made = { pool, agent });
  }

  /** Takes the endpoint out of rotation, longer each time in a row (1 s .. 30 s). */
  eject(now = Date.now()): void {
    this.ejectedUntil = now + Math.min(30_000, 1_000 * 2 ** this.ejections++);
  }

  succeeded(): void {
    this.ejections = 0;
  }

  close(): void {
    if (!this.made) return;
    void this.made.pool.close().catch(() => {});
    this.made.agent.destroy();
  }

  /** One request finished. */
  release(): void {
    this.outstanding--;
    if (this.retired && this.outstanding === 0) this.close();
  }
}

/**
 * One TLS context per CA bundle, made once: given `ca`, every new upstream connection built its
 * own (a 256-certificate bundle cost ~12.5 ms of the shared event loop per connection). The last
 * 64 bundles used are kept.
 */
export function secureContextFor(ca: string): SecureContext {
  return contexts.get(textKey(ca), () => createSecureContext({ ca }));
}
const contexts = new Recent<string, SecureContext>(64);

/** Pools by endpoint, reference-counted by the route tables that use them. */
export class PoolRegistry {
  private readonly pools = new Map<string, EndpointPool>();

  get size(): number {
    return this.pools.size;
  }

  acquire(t: ServiceTarget, ep: Endpoint): EndpointPool {
    // a long CA by its digest: a key is never a copy of a bundle (up to 512 KiB, in each of 64 routes)
    const key = `${t.scheme}://${ep.ip}:${ep.port}/${t.serverName}/${t.ca === null ? '-' : textKey(t.ca)}`;
    let p = this.pools.get(key);
    if (!p) {
      p = new EndpointPool(key, t.scheme, ep, t.ca, t.serverName, `${t.namespace}/${t.name}`);
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
