// The apiserver's service-account issuer discovery as a JWKS key source, and revocation from
// metadata-only watches of ServiceAccounts, Pods and Secrets (started on first use).
import type { Logger } from 'pino';
import type { KeySource, OidcDiscovery, RevocationCheck, BoundClaims } from '../auth/jwks.js';
import { revocationReason } from '../auth/jwks.js';
import { KubeApiError, type KubeClient } from './client.js';
import type { KubeObject } from './informer.js';
import { Watched } from './watched.js';
import type { Metrics } from '../observability/metrics.js';

export class KubeKeySource implements KeySource {
  constructor(private readonly client: KubeClient) {}

  async fetchDiscovery(): Promise<OidcDiscovery> {
    const r = await this.client.request('GET', '/.well-known/openid-configuration', undefined, { timeoutMs: 10_000 });
    if (r.status !== 200) throw new KubeApiError(r.status, r.body, 'service-account issuer discovery');
    return r.body;
  }

  /** Always the apiserver's own JWKS path: the advertised jwks_uri may name an address unreachable from here. */
  async fetchJwks(): Promise<{ keys: any[] }> {
    const r = await this.client.request('GET', '/openid/v1/jwks', undefined, { timeoutMs: 10_000, accept: 'application/jwk-set+json, application/json' });
    if (r.status !== 200) throw new KubeApiError(r.status, r.body, 'service-account JWKS');
    return r.body;
  }
}

const metadataOnly = 'application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json';

export class KubeRevocation implements RevocationCheck {
  private readonly watched: Record<'sa' | 'pod' | 'secret', Watched<KubeObject>>;
  private started = false;

  constructor(client: KubeClient, log: Logger, metrics?: Metrics) {
    const w = (name: string, plural: string) => new Watched<KubeObject>(client, {
      name: `${name}(metadata)`, namespaces: [], accept: metadataOnly, log, metrics,
      path: () => `/api/v1/${plural}`, onEvent: () => {},
    });
    this.watched = { sa: w('serviceaccounts', 'serviceaccounts'), pod: w('pods', 'pods'), secret: w('secrets', 'secrets') };
  }

  /** Starts the watches (once); until they have synced, tokens are refused (fail closed). */
  ensureStarted(): void {
    if (this.started) return;
    this.started = true;
    for (const w of Object.values(this.watched)) w.start();
  }

  check(claims: BoundClaims): string | null {
    this.ensureStarted();
    const uid = (w: Watched<KubeObject>) => (ns: string, name: string) => (!w.synced ? null : w.get(ns, name)?.metadata.uid ?? undefined);
    return revocationReason(claims, { serviceAccountUid: uid(this.watched.sa), podUid: uid(this.watched.pod), secretUid: uid(this.watched.secret) });
  }

  async stop(): Promise<void> {
    if (this.started) await Promise.all(Object.values(this.watched).map((w) => w.stop()));
  }
}
