// One spelling of an object's key: "namespace/name", or "name" for a cluster-scoped object.

export interface Named {
  metadata: { name: string; namespace?: string };
}

export function objectKey(namespace: string | undefined, name: string): string {
  return namespace ? `${namespace}/${name}` : name;
}

export function keyOf(o: Named): string {
  return objectKey(o.metadata.namespace, o.metadata.name);
}

export function splitKey(key: string): { namespace: string; name: string } {
  const i = key.indexOf('/');
  return i < 0 ? { namespace: '', name: key } : { namespace: key.slice(0, i), name: key.slice(i + 1) };
}
