// Which gateways refer to which objects (Services, Secrets, ConfigMaps, a namespace's
// ReferenceGrants), kept as gateways come and go: an object's change reconciles the gateways that
// refer to it, found in O(1), not by asking every gateway in the cluster.
import type { AccessGateway } from '../api/types.js';

export interface Ref {
  kind: 'Service' | 'Secret' | 'ConfigMap' | 'ReferenceGrant';
  namespace: string;
  name: string;
}

/** KIND/NS/NAME; any ReferenceGrant of a namespace counts, so those are KIND/NS. */
function refKey(kind: Ref['kind'], namespace: string, name: string): string {
  return kind === 'ReferenceGrant' ? `${kind}/${namespace}` : `${kind}/${namespace}/${name}`;
}

/** The objects a gateway refers to (its own agw-NAME Service: a load balancer's address goes
 * into status.listener.url). */
export function refsOf(gw: AccessGateway): string[] {
  const ns = gw.metadata.namespace;
  const refs = new Set([refKey('Service', ns, `agw-${gw.metadata.name}`)]);
  const tls = gw.spec?.listener?.tls;
  if (tls?.secretName) refs.add(refKey('Secret', ns, tls.secretName));
  if (tls?.clientCA) refs.add(refKey(tls.clientCA.kind, ns, tls.clientCA.name));
  for (const r of gw.spec?.routes ?? []) {
    const s = r.service;
    if (!s) continue;
    const sns = s.namespace ?? ns;
    refs.add(refKey('Service', sns, s.name));
    if (sns !== ns) refs.add(refKey('ReferenceGrant', sns, ''));
    if (s.caRef) refs.add(refKey(s.caRef.kind, ns, s.caRef.name));
  }
  return [...refs];
}

export class RefIndex {
  private readonly byRef = new Map<string, Set<string>>();
  private readonly byGateway = new Map<string, string[]>();

  /** A gateway was added or updated. */
  set(key: string, gw: AccessGateway): void {
    this.delete(key);
    const refs = refsOf(gw);
    this.byGateway.set(key, refs);
    for (const r of refs) {
      let keys = this.byRef.get(r);
      if (!keys) this.byRef.set(r, (keys = new Set()));
      keys.add(key);
    }
  }

  delete(key: string): void {
    for (const r of this.byGateway.get(key) ?? []) {
      const keys = this.byRef.get(r);
      keys?.delete(key);
      if (keys?.size === 0) this.byRef.delete(r);
    }
    this.byGateway.delete(key);
  }

  /** The gateways that refer to the object. */
  referring(ref: Ref): Iterable<string> {
    return this.byRef.get(refKey(ref.kind, ref.namespace, ref.name)) ?? [];
  }
}
