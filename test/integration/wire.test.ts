// The protobuf wire against a real apiserver: what the caches keep of each Pod, Service and
// EndpointSlice read in protobuf (wire-objects.ts) equals what they keep of the same object read
// as JSON, listed and watched, for objects with every field the operator reads set, unset and odd.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startControlPlane, type ControlPlane } from '../support/control-plane.js';
import { applyYaml } from '../support/cluster.js';
import { ApiError, KubeClient, loadKubeConfig } from '../../src/kube/client.js';
import { decodeList, protobufType } from '../../src/kube/protobuf.js';
import { decodeData, decodeEndpointSlice, decodeMetadata, decodePod, decodeService } from '../../src/kube/wire-objects.js';
import { KubeRevocation } from '../../src/kube/jwks-source.js';
import { stripForCache } from '../../src/kube/informer.js';
import { ClusterState } from '../../src/controller/cluster-state.js';
import { LabelledData } from '../../src/controller/labelled-data.js';
import { serviceNameLabel } from '../../src/api/labels.js';
import { silentLogger } from '../../src/observability/logger.js';

let cp: ControlPlane;
let client: KubeClient;

const kinds: Record<string, { path: string; decode: (m: Buffer) => unknown; trim: (o: any) => any }> = {
  pods: { path: '/api/v1/namespaces/w/pods', decode: decodePod, trim: ClusterState.trimPod },
  services: { path: '/api/v1/namespaces/w/services', decode: decodeService, trim: ClusterState.trimService },
  endpointslices: { path: '/apis/discovery.k8s.io/v1/namespaces/w/endpointslices', decode: (m: Buffer) => decodeEndpointSlice(m, Buffer.from(serviceNameLabel)), trim: ClusterState.trimSlice },
  // labelled-data.ts keeps a CA bundle's data, a listener Secret's type, tls.crt and tls.key
  secrets: { path: '/api/v1/namespaces/w/secrets', decode: decodeData('Secret'), trim: dataKept },
  configmaps: { path: '/api/v1/namespaces/w/configmaps', decode: decodeData('ConfigMap'), trim: dataKept },
};

function dataKept(o: any): any {
  return { asData: LabelledData.trimData(o), asTLS: LabelledData.trimTLSSecret(o) };
}

before(async () => {
  cp = await startControlPlane();
  client = await KubeClient.create(loadKubeConfig(cp.kubeconfig), silentLogger);
  await applyYaml(cp, `apiVersion: v1\nkind: Namespace\nmetadata: {name: w}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: default, namespace: w}\n`);
  const owner = (await cp.api('GET', '/api/v1/namespaces/w/serviceaccounts/default')).body.metadata.uid;
  const own = `ownerReferences: [{apiVersion: v1, kind: ServiceAccount, name: default, uid: ${owner}, controller: true}, {apiVersion: v1, kind: ConfigMap, name: other, uid: "0000"}]`;
  await applyYaml(cp, [
    `apiVersion: v1\nkind: Pod\nmetadata: {name: p-run, namespace: w, labels: {a: b}, annotations: {pad: "${'<'.repeat(5000)}"}, ${own}}\nspec: {nodeName: n1, automountServiceAccountToken: false, containers: [{name: c, image: i, env: [{name: PAD, value: "${'<'.repeat(20000)}"}]}]}`,
    `apiVersion: v1\nkind: Pod\nmetadata: {name: p-host, namespace: w}\nspec: {nodeName: n1, hostNetwork: true, automountServiceAccountToken: false, containers: [{name: c, image: i}]}`,
    `apiVersion: v1\nkind: Pod\nmetadata: {name: p-pending, namespace: w, finalizers: [test.io/hold]}\nspec: {automountServiceAccountToken: false, containers: [{name: c, image: i}]}`,
    `apiVersion: v1\nkind: Service\nmetadata: {name: s-sel, namespace: w, annotations: {pad: "${'<'.repeat(5000)}"}, ${own}}\nspec: {selector: {app: x, tier: "y"}, ports: [{name: http, port: 80, targetPort: web}, {name: dns, port: 53, protocol: UDP, targetPort: 5353}]}`,
    `apiVersion: v1\nkind: Secret\nmetadata: {name: tls, namespace: w, labels: {access-gateway.io/listener-tls: "true"}, annotations: {pad: "${'<'.repeat(5000)}"}}\ntype: kubernetes.io/tls\ndata: {tls.crt: ${Buffer.from('crt<é').toString('base64')}, tls.key: ${Buffer.from('key').toString('base64')}, extra: ${Buffer.from([0, 255, 128, 10]).toString('base64')}}`,
    `apiVersion: v1\nkind: Secret\nmetadata: {name: ca, namespace: w}\ndata: {ca.crt: ${Buffer.from([1, 2, 250, 251]).toString('base64')}, empty: ""}`,
    `apiVersion: v1\nkind: Secret\nmetadata: {name: none, namespace: w}\ntype: Opaque`,
    `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ca, namespace: w, labels: {access-gateway.io/ca-bundle: "true"}}\ndata: {ca.crt: "<é\\u2028x", empty: ""}\nbinaryData: {bin: ${Buffer.from([0, 1, 2]).toString('base64')}}`,
    `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bin-only, namespace: w}\nbinaryData: {bin: ${Buffer.from([3]).toString('base64')}}`,
    `apiVersion: v1\nkind: Node\nmetadata: {name: n1, annotations: {pad: "${'<'.repeat(5000)}"}}`,
    `apiVersion: v1\nkind: Service\nmetadata: {name: s-plain, namespace: w}\nspec: {ports: [{port: 8080}]}`,
    `apiVersion: v1\nkind: Service\nmetadata: {name: s-lb, namespace: w}\nspec: {type: LoadBalancer, allocateLoadBalancerNodePorts: false, ports: [{name: https, port: 443}]}`,
    `apiVersion: v1\nkind: Service\nmetadata: {name: s-headless, namespace: w}\nspec: {clusterIP: None}`,
    `apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e-4, namespace: w, labels: {${serviceNameLabel}: s-sel, other: x}, ${own}}\naddressType: IPv4\nports: [{name: http, port: 8080, protocol: TCP, appProtocol: kubernetes.io/h2c}, {name: "", port: 53, protocol: UDP}, {name: dns}]\nendpoints: [{addresses: [198.18.0.1, 198.18.0.2], conditions: {ready: true, serving: true, terminating: false}, targetRef: {kind: Pod, name: p-run, namespace: w, uid: u-1}, nodeName: n1, zone: z}, {addresses: [198.18.0.3], conditions: {ready: false}}, {addresses: [198.18.0.4], conditions: {}, targetRef: {kind: Node, name: n1}}]`,
    `apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e-6, namespace: w}\naddressType: IPv6\nports: []\nendpoints: [{addresses: ["fd00::1"]}]`,
    `apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e-none, namespace: w, labels: {${serviceNameLabel}: s-plain}}\naddressType: FQDN\nendpoints: []`,
  ].join('\n---\n') + '\n');
  const status = async (path: string, body: unknown) => {
    const r = await cp.api('PATCH', path, body, 'application/merge-patch+json');
    assert.equal(r.status, 200, JSON.stringify(r.body));
  };
  await status('/api/v1/namespaces/w/pods/p-run/status', { status: { phase: 'Running', podIP: '198.18.0.1', podIPs: [{ ip: '198.18.0.1' }, { ip: 'fd00::1' }] } });
  await status('/api/v1/namespaces/w/pods/p-host/status', { status: { phase: 'Running', podIP: '10.0.0.1', podIPs: [{ ip: '10.0.0.1' }], hostIP: '10.0.0.1' } });
  await status('/api/v1/namespaces/w/services/s-lb/status', { status: { loadBalancer: { ingress: [{ ip: '198.18.9.9', ipMode: 'Proxy', ports: [{ port: 443, protocol: 'TCP' }] }, { hostname: 'lb.example' }] } } });
  assert.equal((await cp.api('DELETE', '/api/v1/namespaces/w/pods/p-pending')).status, 200); // held by its finalizer: deletionTimestamp set
});

after(async () => {
  await client?.close();
  await cp?.api('PATCH', '/api/v1/namespaces/w/pods/p-pending', { metadata: { finalizers: null } }, 'application/merge-patch+json').catch(() => {});
  await cp?.stop();
});

for (const [name, k] of Object.entries(kinds)) {
  test(`${name}: listed in protobuf, the cache keeps what it keeps of the JSON`, async () => {
    const json = await client.request<{ items: any[] }>('GET', k.path);
    let decoded = 0; // read in protobuf, not answered in JSON (which the client reads too)
    const pb = await client.request<{ items: any[] }>('GET', k.path, { protobuf: (m) => decodeList(m, (o) => (decoded++, k.decode(o))) });
    assert.equal(decoded, pb.items.length);
    const keep = (o: any) => (k.trim as (o: any) => any)(stripForCache(o));
    assert.ok(json.items.length >= 2, `${json.items.length} ${name}`);
    assert.deepEqual(pb.items.map(keep), json.items.map(keep));
  });
}

test('metadata only (the JWKS revocation watches), listed and watched: in protobuf as in JSON', async () => {
  const partial = (list: string) => `as=${list};g=meta.k8s.io;v=v1`;
  for (const plural of ['pods', 'serviceaccounts', 'nodes']) {
    const path = `/api/v1/${plural}`;
    const json = await client.request<{ items: any[] }>('GET', path, { accept: `application/json;${partial('PartialObjectMetadataList')}` });
    let decoded = 0;
    const pb = await client.request<{ items: any[] }>('GET', path, { accept: `${protobufType};${partial('PartialObjectMetadataList')}`, protobuf: (m) => decodeList(m, (o) => (decoded++, decodeMetadata(o))) });
    assert.equal(decoded, pb.items.length, plural);
    assert.ok(json.items.length >= 1, plural);
    assert.deepEqual(pb.items.map(KubeRevocation.trim), json.items.map(KubeRevocation.trim), plural);
  }
  const rv = (await client.request<{ metadata: { resourceVersion: string } }>('GET', '/api/v1/nodes')).metadata.resourceVersion;
  const events = { json: [] as any[], pb: [] as any[] };
  const path = `/api/v1/nodes?watch=1&resourceVersion=${rv}&timeoutSeconds=2`;
  const watching = Promise.all([
    client.watch(path, new AbortController().signal, 30_000, `application/json;${partial('PartialObjectMetadata')}`, (ev) => events.json.push(ev)),
    client.watch(path, new AbortController().signal, 30_000, `${protobufType};${partial('PartialObjectMetadata')}`, (ev) => events.pb.push(ev), decodeMetadata),
  ]);
  await cp.kubectl(['delete', 'node', 'n1']);
  await watching;
  assert.deepEqual(events.pb.map((e) => e.type), ['DELETED']);
  assert.deepEqual(events.pb.map((e) => KubeRevocation.trim(e.object)), events.json.map((e) => KubeRevocation.trim(e.object)));
});

test('a watch in protobuf: the same events, and objects, as in JSON', async () => {
  const rv = (await client.request<{ metadata: { resourceVersion: string } }>("GET", kinds.pods!.path)).metadata.resourceVersion;
  const events = { json: [] as any[], pb: [] as any[] };
  let decoded = 0;
  const path = `${kinds.pods!.path}?watch=1&resourceVersion=${rv}&timeoutSeconds=3`;
  const watching = Promise.all([
    client.watch(path, new AbortController().signal, 30_000, undefined, (ev) => events.json.push(ev)),
    client.watch(path, new AbortController().signal, 30_000, undefined, (ev) => events.pb.push(ev), (m) => (decoded++, decodePod(m))),
  ]);
  await cp.kubectl(['label', 'pod', 'p-run', '-n', 'w', 'b=c']);
  await cp.kubectl(['delete', 'pod', 'p-host', '-n', 'w', '--grace-period=0', '--force']);
  await watching;
  const keep = (ev: any) => ({ type: ev.type, object: ClusterState.trimPod(stripForCache(ev.object)) });
  // the label, then the forced deletion (a MODIFIED with its deletionTimestamp may come first)
  const types = events.pb.map((e) => e.type).join();
  assert.ok(types === 'MODIFIED,DELETED' || types === 'MODIFIED,MODIFIED,DELETED', types);
  assert.deepEqual(events.pb.map(keep), events.json.map(keep));
  assert.equal(decoded, events.pb.length, 'the events came in protobuf');
});

test('a refusal is the apiserver\'s Status, in protobuf as in JSON: a watch with a field it cannot select by, a list with a continuation it did not give', async () => {
  const errors: string[] = [];
  for (const pb of [undefined, decodePod]) {
    await client.watch(`${kinds.pods!.path}?watch=1&fieldSelector=spec.nope%3Dx`, new AbortController().signal, 30_000, undefined, () => {}, pb)
      .then(() => errors.push('no error'), (err: Error) => errors.push(`${err.name} ${(err as ApiError).status} ${(err as ApiError).reason} ${err.message}`));
    await client.request('GET', `${kinds.pods!.path}?limit=1&continue=nope`, { protobuf: pb && ((m) => decodeList(m, pb)) })
      .then(() => errors.push('no error'), (err: Error) => errors.push(`${err.name} ${(err as ApiError).status} ${(err as ApiError).reason} ${err.message}`));
  }
  assert.match(errors[0]!, /^ApiError 400 BadRequest watch .*: HTTP 400: .*spec\.nope/);
  assert.match(errors[1]!, /^ApiError 400 BadRequest GET .*: HTTP 400: .*continue/);
  assert.deepEqual(errors.slice(2), errors.slice(0, 2));
});
