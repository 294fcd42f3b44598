// AccessGateway access: where they live, and status writes through /status (merge-patch).
import { group, plural, version } from '../api/schema.js';
import type { AccessGateway } from '../api/types.js';
import { KubeApiError, type KubeClient } from './client.js';

export function gatewaysPath(namespace?: string): string {
  return namespace ? `/apis/${group}/${version}/namespaces/${namespace}/${plural}` : `/apis/${group}/${version}/${plural}`;
}

/** Writes `status`; a gateway deleted meanwhile is not an error (returns false). */
export async function writeStatus(client: KubeClient, gw: AccessGateway, status: AccessGateway['status']): Promise<boolean> {
  const path = `${gatewaysPath(gw.metadata.namespace)}/${gw.metadata.name}/status`;
  const res = await client.request('PATCH', path, { status }, { contentType: 'application/merge-patch+json' });
  if (res.status === 404) return false;
  if (res.status !== 200) throw new KubeApiError(res.status, res.body, `status of ${gw.metadata.namespace}/${gw.metadata.name}`);
  return true;
}
