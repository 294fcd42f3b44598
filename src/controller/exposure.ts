// In-cluster exposure: the selector-less Service agw-NAME (80, or 443 with TLS) and its
// EndpointSlice listing the gateway replicas at the listener port, owned by the AccessGateway
// (deleting the gateway garbage-collects both). Pure: the objects to apply.
import { isIP } from 'node:net';
import type { AccessGateway } from '../api/types.js';
import {
  endpointSliceManagedByLabel, endpointSliceManagedByValue, gatewayLabel, managedByLabel, managedByValue, serviceNameLabel,
} from '../api/labels.js';

export function exposedName(gw: AccessGateway): string {
  return `agw-${gw.metadata.name}`;
}

export function exposure(gw: AccessGateway, port: number, tls: boolean, addresses: string[]) {
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
    metadata: { name, namespace: ns, labels, ownerReferences: owner },
    spec: { type: 'ClusterIP', ports: [{ name: portName, port: tls ? 443 : 80, targetPort: port, protocol: 'TCP' }] },
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
