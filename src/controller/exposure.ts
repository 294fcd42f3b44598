// Exposure: the selector-less Service agw-NAME (80, or 443 with TLS) and its EndpointSlice listing
// the gateway replicas at the listener port, owned by the AccessGateway (deleting the gateway
// garbage-collects both). The Service's type and annotations come from spec.listener.expose, as
// far as the platform's policy allows: the operator creates the Service with its own rights, so a
// team may not get through it a NodePort or load balancer the platform does not let teams have.
// Pure: the objects to apply.
import { isIP } from 'node:net';
import type { AccessGateway } from '../api/types.js';
import {
  endpointSliceManagedByLabel, endpointSliceManagedByValue, gatewayLabel, managedByLabel, managedByValue, serviceNameLabel,
} from '../api/labels.js';

export const exposedPrefix = 'agw-';

export function exposedName(gw: AccessGateway): string {
  return `${exposedPrefix}${gw.metadata.name}`;
}

export type ServiceType = 'ClusterIP' | 'NodePort' | 'LoadBalancer';

/** What teams may ask of spec.listener.expose (operator flags). */
export interface ExposurePolicy {
  types: readonly ServiceType[];
  defaultType: ServiceType;
  /** Annotation keys teams may set: exact keys, or prefixes written as `prefix*`. */
  annotations: readonly string[];
}

export const clusterIPOnly: ExposurePolicy = { types: ['ClusterIP'], defaultType: 'ClusterIP', annotations: [] };

/** The Service type and annotations a gateway gets, and why it gets less than it asked for. */
export function exposureFor(gw: AccessGateway, policy: ExposurePolicy): { type: ServiceType; annotations: Record<string, string>; refused: string | null } {
  const want = gw.spec.listener?.expose;
  const type = want?.type ?? policy.defaultType;
  const annotations = want?.annotations ?? {};
  const problems: string[] = [];
  if (!policy.types.includes(type)) problems.push(`type ${type} (allowed: ${policy.types.join(', ')}; --expose-types)`);
  const allowed = (k: string) => policy.annotations.some((a) => (a.endsWith('*') ? k.startsWith(a.slice(0, -1)) : k === a));
  const refusedKeys = Object.keys(annotations).filter((k) => !allowed(k)).sort();
  if (refusedKeys.length) problems.push(`annotation${refusedKeys.length > 1 ? 's' : ''} ${refusedKeys.join(', ')} (allowed: ${policy.annotations.join(', ') || 'none'}; --expose-annotations)`);
  if (problems.length) {
    return { type: 'ClusterIP', annotations: {}, refused: `spec.listener.expose asks for what this platform does not let gateways have: ${problems.join('; ')}; exposed as a plain ClusterIP Service instead` };
  }
  return { type, annotations: { ...annotations }, refused: null };
}

/** The URL a load balancer's first ingress address gives, if it has one. */
export function loadBalancerURL(tls: boolean, ingress: { ip?: string; hostname?: string } | undefined): string | undefined {
  const host = ingress?.hostname || ingress?.ip;
  if (!host) return undefined;
  return `${tls ? 'https' : 'http'}://${isIP(host) === 6 ? `[${host}]` : host}`;
}

export function exposure(gw: AccessGateway, port: number, tls: boolean, addresses: string[],
  as: { type: ServiceType; annotations: Record<string, string> } = { type: 'ClusterIP', annotations: {} }) {
  const name = exposedName(gw);
  const ns = gw.metadata.namespace;
  const owner = [{
    apiVersion: gw.apiVersion ?? 'access-gateway.io/v1alpha1', kind: 'AccessGateway', name: gw.metadata.name,
    uid: gw.metadata.uid!, controller: true, blockOwnerDeletion: true,
  }];
  const labels = { [managedByLabel]: managedByValue, [gatewayLabel]: gw.metadata.name };
  const portName = tls ? 'https' : 'http';
  const v6 = addresses.some((a) => isIP(a) === 6);
  const service = {
    apiVersion: 'v1', kind: 'Service',
    metadata: { name, namespace: ns, labels, ownerReferences: owner, ...(Object.keys(as.annotations).length ? { annotations: as.annotations } : {}) },
    spec: { type: as.type, ports: [{ name: portName, port: tls ? 443 : 80, targetPort: port, protocol: 'TCP' }] },
  };
  const slice = {
    apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
    metadata: {
      name, namespace: ns, ownerReferences: owner,
      labels: { ...labels, [serviceNameLabel]: name, [endpointSliceManagedByLabel]: endpointSliceManagedByValue },
    },
    addressType: v6 ? 'IPv6' : 'IPv4',
    ports: [{ name: portName, port, protocol: 'TCP' }],
    endpoints: addresses.filter((a) => (isIP(a) === 6) === v6).sort().map((a) => ({ addresses: [a], conditions: { ready: true } })),
  };
  return { service, slice, url: `${tls ? 'https' : 'http'}://${name}.${ns}.svc` };
}
