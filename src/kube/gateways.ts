// AccessGateway access: where they live, and status writes through /status (merge-patch).
import { group, plural, version } from '../api/schema.js';
import type { AccessGateway } from '../api/types.js';
import { ApiError, type KubeClient } from './client.js';

export function gatewaysPath(namespace?: string): string {
  return namespace ? `/apis/${group}/${version}/namespaces/${namespace}/${plural}` : `/apis/${group}/${version}/${plural}`;
}

/**
 * Writes an object the gateway owns (Service, EndpointSlice), as field manager access-gateway:
 * created when it does not exist (a create never replaces anyone's object: 409 if one appeared
 * meanwhile), else server-side applied — the caller has checked that the existing one is ours.
 */
export async function applyOwned(client: KubeClient, obj: { apiVersion: string; kind: string; metadata: { name: string; namespace: string } }, exists: boolean): Promise<void> {
  const plural = obj.kind === 'Service' ? 'services' : 'endpointslices';
  const base = obj.apiVersion === 'v1' ? '/api/v1' : `/apis/${obj.apiVersion}`;
  const collection = `${base}/namespaces/${obj.metadata.namespace}/${plural}`;
  const what = `${exists ? 'apply' : 'create'} ${obj.kind} ${obj.metadata.namespace}/${obj.metadata.name}`;
  if (exists) {
    await client.request('PATCH', `${collection}/${obj.metadata.name}?fieldManager=access-gateway&force=true`, { body: obj, contentType: 'application/apply-patch+yaml', what });
  } else {
    await client.request('POST', `${collection}?fieldManager=access-gateway`, { body: obj, what });
  }
}

/** Writes `status`; a gateway deleted meanwhile is not an error (returns false). */
export async function writeStatus(client: KubeClient, gw: AccessGateway, status: AccessGateway['status']): Promise<boolean> {
  const path = `${gatewaysPath(gw.metadata.namespace)}/${gw.metadata.name}/status`;
  // merge-patch keeps keys it does not mention: remove the ones the new status drops
  const removed = Object.keys(gw.status ?? {}).filter((k) => !(k in (status ?? {})));
  const patch = { ...status, ...Object.fromEntries(removed.map((k) => [k, null])) };
  try {
    await client.request('PATCH', path, { body: { status: patch }, contentType: 'application/merge-patch+json', what: `status of ${gw.metadata.namespace}/${gw.metadata.name}` });
    return true;
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return false;
    throw err;
  }
}
