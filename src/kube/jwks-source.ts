// The apiserver's service-account issuer discovery as a JWKS key source, and revocation from
// metadata-only watches of ServiceAccounts, Pods, Secrets and Nodes (started on first use).
import type { Logger } from 'pino';
import type {
  BoundClaims, KeySource, LiveObject, ObjectLookup, OidcDiscovery, Revocation, RevocationLookups, RevocationSource,
} from '../auth/jwks.js';
import { revocationReason, watchLagMs } from '../auth/jwks.js';
import type { KubeClient } from './client.js';
import type { InformerEvent, KubeObject } from './informer.js';
import { Watched } from './watched.js';
import { protobufType } from './protobuf.js';
import { decodeMetadata } from './wire-objects.js';
import type { Metrics } from '../observability/metrics.js';

export class KubeKeySource implements KeySource {
  constructor(private readonly client: KubeClient) {}

  async fetchDiscovery(): Promise<OidcDiscovery> {
    return this.client.request<OidcDiscovery>('GET', '/.well-known/openid-configuration', { timeoutMs: 10_000, what: 'service-account issuer discovery' });
  }

  /** Always the apiserver's own JWKS path: the advertised jwks_uri may name an address unreachable from here. */
  async fetchJwks(): Promise<{ keys: any[] }> {
    return this.client.request<{ keys: any[] }>('GET', '/openid/v1/jwks', { timeoutMs: 10_000, accept: 'application/jwk-set+json, application/json', what: 'service-account JWKS' });
  }
}

// in protobuf (JSON where not served so): a team's 256 KiB of annotations is not read, where JSON may
// write it as 1.5 MB for JSON.parse on the shared event loop
const partial = 'as=PartialObjectMetadataList;g=meta.k8s.io;v=v1';
const metadataOnly = `${protobufType};${partial}, application/json;${partial}, application/json`;

type Kind = 'serviceAccount' | 'pod' | 'secret' | 'node';
const resources: Record<Kind, string> = { serviceAccount: 'serviceaccounts', pod: 'pods', secret: 'secrets', node: 'nodes' };

/** Revocation from metadata-only watches of ServiceAccounts, Pods, Secrets and Nodes, cluster-wide
 * (needs list/watch on each). Started by the first JWKS gateway; until all have synced, tokens are
 * answered 503 (never 401) and JWKS gateways are not Ready. */
export class KubeRevocation implements RevocationSource {
  /** What a revocation check reads: any team's labels and annotations (256 KiB each) are not kept. */
  static trim(o: KubeObject): KubeObject {
    const { name, namespace, uid, resourceVersion, deletionTimestamp } = o.metadata;
    return { metadata: { name, namespace, uid, resourceVersion, ...(deletionTimestamp ? { deletionTimestamp } : {}) } } as KubeObject;
  }

  private readonly watched: Record<Kind, Watched<KubeObject>>;
  private readonly lookups: RevocationLookups;
  private started = false;
  /** uids whose deletion (or replacement) the watches delivered in the last watchLagMs, oldest first. */
  private readonly gone = new Map<string, number>();
  /** Synced once stays synced (a failed watch keeps its last cache): checked until true, then not again. */
  private allSynced = false;
  private readonly synced$: Promise<void>;

  constructor(client: KubeClient, log: Logger, metrics?: Metrics, private readonly now: () => number = Date.now) {
    const w = (plural: string) => new Watched<KubeObject>(client, {
      name: `${plural}(metadata)`, namespaces: [], accept: metadataOnly, protobuf: decodeMetadata, log, metrics,
      path: () => `/api/v1/${plural}`, onEvent: (type, o, old) => this.noteGone(type, o, old), trim: KubeRevocation.trim,
    });
    this.watched = {
      serviceAccount: w(resources.serviceAccount), pod: w(resources.pod), secret: w(resources.secret), node: w(resources.node),
    };
    const lookup = (x: Watched<KubeObject>): ObjectLookup => (ns, name) => {
      if (!x.synced) return null;
      const m = x.get(ns, name)?.metadata;
      if (!m) return undefined;
      const live: LiveObject = { uid: m.uid ?? '' };
      if (typeof m.deletionTimestamp === 'string') live.deletionTimestamp = m.deletionTimestamp;
      return live;
    };
    const x = this.watched;
    this.lookups = {
      serviceAccount: lookup(x.serviceAccount), pod: lookup(x.pod), secret: lookup(x.secret), node: lookup(x.node),
      gone: (uid) => this.gone.has(uid),
    };
    this.synced$ = Promise.all(Object.values(this.watched).map((v) => v.firstSync())).then(() => undefined);
  }

  private noteGone(type: InformerEvent, o: KubeObject, old: KubeObject | undefined): void {
    const uid = type === 'delete' ? o.metadata.uid : old && old.metadata.uid !== o.metadata.uid ? old.metadata.uid : undefined;
    if (!uid) return;
    const now = this.now();
    this.gone.delete(uid);
    this.gone.set(uid, now);
    for (const [u, at] of this.gone) {
      if (at > now - watchLagMs) break;
      this.gone.delete(u);
    }
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    for (const w of Object.values(this.watched)) w.start();
  }

  get synced(): boolean {
    this.allSynced ||= Object.values(this.watched).every((w) => w.synced);
    return this.allSynced;
  }

  whenSynced(): Promise<void> {
    return this.synced$;
  }

  check(claims: BoundClaims): Revocation {
    if (!this.synced) {
      // every request waits for every cache, whatever its token is bound to: Ready means "can verify"
      this.start();
      const pending = (Object.keys(this.watched) as Kind[]).filter((k) => !this.watched[k].synced).map((k) => resources[k]);
      return { unknown: `revocation caches not synced yet (${pending.join(', ')})` };
    }
    return revocationReason(claims, this.lookups, this.now());
  }

  async stop(): Promise<void> {
    if (this.started) await Promise.all(Object.values(this.watched).map((w) => w.stop()));
  }
}
