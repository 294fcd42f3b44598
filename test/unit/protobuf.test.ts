// The apiserver's protobuf wire as the operator reads it: a pod's read fields and nothing else, a
// list and its continuation, watch events, Status, refusals of what is not the wire, and which
// watches ask for it. The messages come from test/support/protobuf-writer.ts; the client's framing
// is in kube-client.test.ts, and the real apiserver's messages in integration/wire.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { KubeClient } from '../../src/kube/client.js';
import { decodeList, decodeStatus, decodeWatchEvent, eachField, unwrap, WireError } from '../../src/kube/protobuf.js';
import { decodeData, decodeEndpointSlice, decodePod, decodeService, maxPortsRead } from '../../src/kube/wire-objects.js';
import { silentLogger } from '../../src/observability/logger.js';
import { ClusterState } from '../../src/controller/cluster-state.js';
import { KubeRevocation } from '../../src/kube/jwks-source.js';
import { bytes, envelope, event, int32, msg, num, pod, podList, status } from '../support/protobuf-writer.js';

test('a pod: its name, namespace, uid, resourceVersion, deletion, host network, phase and IPs; nothing else', () => {
  const p = decodePod(pod({ name: 'web-0', ns: 'team-a', uid: 'u-1', rv: '42', phase: 'Pending', ips: ['198.18.0.5', 'fd00::5'], pad: 100_000 }));
  assert.deepEqual(p, { metadata: { name: 'web-0', namespace: 'team-a', uid: 'u-1', resourceVersion: '42' }, spec: { hostNetwork: false }, status: { phase: 'Pending', podIPs: [{ ip: '198.18.0.5' }, { ip: 'fd00::5' }] } });
  const d = decodePod(pod({ name: 'h', ns: 'b', hostNetwork: true, deleted: 1_800_000_000 }));
  assert.equal(d.metadata.deletionTimestamp, '2027-01-15T08:00:00Z');
  assert.equal(d.spec.hostNetwork, true);
  assert.deepEqual(d.status.podIPs, []);
  assert.equal('namespace' in decodePod(pod({ name: 'n' })).metadata, false);
  assert.equal('namespace' in decodePod(pod({ name: 'n', ns: '' })).metadata, false, 'the apiserver writes "" for a cluster-scoped name');
});

test('a list: its items, resourceVersion and continuation; an envelope is required', () => {
  const list = envelope('PodList', podList([pod({ name: 'a', ns: 'x', rv: '5' }), pod({ name: 'b', ns: 'x', rv: '6' })], '7', 'next-page'));
  const got = decodeList(unwrap(list), decodePod);
  assert.deepEqual(got.items.map((p) => p.metadata.name), ['a', 'b']);
  assert.deepEqual(got.metadata, { resourceVersion: '7', continue: 'next-page' });
  assert.throws(() => unwrap(Buffer.from('{"kind":"PodList"}')), WireError);
  assert.throws(() => unwrap(Buffer.from('k8s\0', 'latin1')), /an envelope without an object/);
});

test('what is not the wire is refused, not misread: a field past its message, a group, a varint past its end', () => {
  const p = pod({ name: 'a' });
  assert.throws(() => decodePod(p.subarray(0, p.length - 3)), /runs past its message/);
  assert.throws(() => eachField(Buffer.from([0x0b]), 0, 1, () => {}), /wire type 3/);
  assert.throws(() => eachField(Buffer.from([0x08, 0x80]), 0, 2, () => {}), /varint runs past/);
  assert.throws(() => eachField(Buffer.from([0x08, ...Array(10).fill(0x80), 1]), 0, 12, () => {}), /longer than 10 bytes/);
  let seen = 0;
  eachField(msg(num(1, 2 ** 40 + 3)), 0, 7, (_f, v) => { seen = v; });
  assert.equal(seen, 2 ** 40 + 3);
});

test('an int32 is read as JSON has it, a negative one too (10 bytes on the wire): ports, Status codes', () => {
  const slicePorts = (...ports: number[]) => decodeEndpointSlice(msg(bytes(1, bytes(1, 's')), ...ports.map((p) => bytes(3, int32(3, p)))), Buffer.from('kubernetes.io/service-name')).ports.map((p) => p.port);
  assert.deepEqual(slicePorts(-1, -2147483648, 2147483647, 0, 70000, 443), [-1, -2147483648, 2147483647, 0, 70000, 443]);
  assert.deepEqual(decodeService(msg(bytes(2, bytes(1, int32(3, -80))))).spec.ports, [{ port: -80 }]);
  assert.equal(decodeStatus(status(-5, 'X', 'y')).code, -5);
});

test('a Service or an EndpointSlice is read to its first 256 ports, and says it had more', () => {
  const ports = (n: number) => Array.from({ length: n }, (_, i) => bytes(1, msg(bytes(1, `p${i}`), bytes(2, 'TCP'), int32(3, 1000 + i))));
  const svc = decodeService(msg(bytes(2, msg(...ports(300)))));
  assert.equal(svc.spec.ports?.length, maxPortsRead);
  assert.deepEqual(svc.spec.ports?.at(-1), { name: 'p255', protocol: 'TCP', port: 1255 });
  assert.equal(svc.spec.morePorts, maxPortsRead);
  assert.equal(decodeService(msg(bytes(2, msg(...ports(maxPortsRead))))).spec.morePorts, undefined, 'exactly the bound: nothing more');
  const slice = decodeEndpointSlice(msg(bytes(1, bytes(1, 's')), ...Array.from({ length: 300 }, (_, i) => bytes(3, int32(3, 1000 + i)))), Buffer.from('kubernetes.io/service-name'));
  assert.equal(slice.ports.length, maxPortsRead);
  assert.equal(slice.morePorts, maxPortsRead);
  // what the cache keeps of one read as JSON is bounded alike
  const kept = ClusterState.trimService({ metadata: { name: 'web', namespace: 'a' }, spec: { ports: Array.from({ length: 300 }, (_, i) => ({ port: 1000 + i })) } } as never);
  assert.equal(kept.spec?.ports?.length, maxPortsRead);
  assert.equal(kept.spec?.morePorts, maxPortsRead);
  const keptSlice = ClusterState.trimSlice({ metadata: { name: 's', namespace: 'a' }, ports: Array.from({ length: 300 }, (_, i) => ({ port: 1000 + i })), endpoints: [] } as never);
  assert.equal(keptSlice.ports?.length, maxPortsRead);
  assert.equal(keptSlice.morePorts, maxPortsRead);
});

test('of an EndpointSlice\'s labels only the Service\'s name is read: among 10,000 copied from its Service, one a prefix longer, one in another case', () => {
  const label = (k: string, v: string) => bytes(11, msg(bytes(1, k), bytes(2, v)));
  const others = Array.from({ length: 10_000 }, (_, i) => label(`team.example/l${i}`, 'v'.repeat(63)));
  const slice = msg(bytes(1, msg(bytes(1, 's'), ...others.slice(0, 5_000), label('kubernetes.io/service-name-x', 'no'),
    label('Kubernetes.io/service-name', 'no'), label('kubernetes.io/service-name', 'web'), ...others.slice(5_000))));
  assert.deepEqual(decodeEndpointSlice(slice, Buffer.from('kubernetes.io/service-name')).metadata.labels, { 'kubernetes.io/service-name': 'web' });
  assert.equal(decodeEndpointSlice(msg(bytes(1, msg(bytes(1, 's'), ...others.slice(0, 10)))), Buffer.from('kubernetes.io/service-name')).metadata.labels, undefined);
});

test('odd values the apiserver never writes are not a crash: a label key __proto__, a deletion time out of range', () => {
  const metaWith = (...fields: Buffer[]) => msg(bytes(1, msg(bytes(1, 'p'), ...fields)));
  const labelled = metaWith(bytes(11, msg(bytes(1, '__proto__'), bytes(2, 'x'))), bytes(11, msg(bytes(1, 'k'), bytes(2, 'v'))));
  assert.deepEqual(decodeEndpointSlice(labelled, Buffer.from('k')).metadata.labels, { k: 'v' });
  const proto = decodeEndpointSlice(labelled, Buffer.from('__proto__')).metadata.labels!;
  assert.deepEqual(Object.entries(proto), [['__proto__', 'x']]);
  assert.equal(Object.getPrototypeOf(proto), Object.prototype);
  assert.equal(decodePod(metaWith(bytes(9, num(1, 2 ** 50)))).metadata.deletionTimestamp, String(2 ** 50));
  // a data key __proto__ is a valid ConfigMap key: kept as its own property, as JSON.parse does
  const cm = decodeData('ConfigMap')(msg(bytes(1, bytes(1, 'c')), bytes(2, msg(bytes(1, '__proto__'), bytes(2, 'pem'))), bytes(2, msg(bytes(1, 'b'), bytes(2, 'x')))));
  assert.deepEqual(Object.entries(cm.data!), Object.entries(JSON.parse('{"__proto__":"pem","b":"x"}')));
  assert.equal(Object.getPrototypeOf(cm.data), Object.prototype);
});

test('watch events: ADDED, BOOKMARK, ERROR as a Status', () => {
  const frame = (b: Buffer) => b.subarray(4);
  assert.deepEqual(decodeWatchEvent(frame(event('ADDED', envelope('Pod', pod({ name: 'a', ns: 'x', rv: '3', ips: ['198.18.0.9'] })))), decodePod),
    { type: 'ADDED', object: { metadata: { name: 'a', namespace: 'x', resourceVersion: '3' }, spec: { hostNetwork: false }, status: { phase: 'Running', podIPs: [{ ip: '198.18.0.9' }] } } });
  assert.equal((decodeWatchEvent(frame(event('BOOKMARK', envelope('Pod', msg(bytes(1, bytes(6, '99')))))), decodePod).object as any).metadata.resourceVersion, '99');
  assert.deepEqual(decodeWatchEvent(frame(event('ERROR', envelope('Status', status(410, 'Expired', 'too old resource version: 1 (5)')))), decodePod),
    { type: 'ERROR', object: { kind: 'Status', code: 410, reason: 'Expired', message: 'too old resource version: 1 (5)' } });
  assert.deepEqual(decodeStatus(status(403, 'Forbidden', 'no')), { kind: 'Status', code: 403, reason: 'Forbidden', message: 'no' });
});

test('what every team writes is asked for in protobuf: Pods, Services, EndpointSlices, labelled Secrets and ConfigMaps, and the JWKS revocation watches\' metadata; custom resources as JSON', async () => {
  const lists = new Map<string, string>();
  const watches = new Map<string, string>();
  const key = (path: string) => { const u = new URL(path, 'https://x'); const sel = u.searchParams.get('labelSelector') ?? (u.searchParams.get('fieldSelector') ? 'fields' : ''); return sel ? `${u.pathname}?${sel}` : u.pathname; };
  const what = (accept: string | undefined, protobuf: unknown) => `${accept ?? (protobuf ? 'protobuf first' : 'json')}${protobuf ? ' +decoder' : ''}`;
  const client = {
    request: async (_m: string, path: string, o: { accept?: string; protobuf?: unknown }) => {
      lists.set(key(path), what(o.accept, o.protobuf));
      return { items: [], metadata: { resourceVersion: '1' } };
    },
    watch: (path: string, signal: AbortSignal, _t: number, accept: string | undefined, _on: unknown, protobuf: unknown) => {
      watches.set(key(path), what(accept, protobuf));
      return new Promise<void>((r) => signal.addEventListener('abort', () => r()));
    },
  } as unknown as KubeClient;
  const state = new ClusterState(client, { namespaces: [], log: silentLogger, endpointAddresses: 'pods', onChange: () => {} });
  const revocation = new KubeRevocation(client, silentLogger);
  state.start();
  revocation.start();
  await Promise.all([state.firstSync(), revocation.whenSynced()]);
  for (let i = 0; watches.size < 11 && i < 1000; i++) await new Promise((r) => setImmediate(r));
  assert.equal(watches.size, 11, [...watches.keys()].join());
  const meta = (as: string) => `application/vnd.kubernetes.protobuf;as=${as};g=meta.k8s.io;v=v1, application/json;as=${as};g=meta.k8s.io;v=v1, application/json +decoder`;
  for (const path of ['/api/v1/pods?fields', '/api/v1/services', '/apis/discovery.k8s.io/v1/endpointslices']) {
    assert.equal(lists.get(path), 'protobuf first +decoder', path);
    assert.equal(watches.get(path), 'protobuf first +decoder', path);
  }
  for (const plural of ['serviceaccounts', 'pods', 'secrets', 'nodes']) {
    assert.equal(lists.get(`/api/v1/${plural}`), meta('PartialObjectMetadataList'), plural);
    assert.equal(watches.get(`/api/v1/${plural}`), meta('PartialObjectMetadata'), plural);
  }
  for (const path of ['/api/v1/configmaps?access-gateway.io/ca-bundle=true', '/api/v1/secrets?access-gateway.io/ca-bundle=true', '/api/v1/secrets?access-gateway.io/listener-tls=true']) {
    assert.equal(lists.get(path), 'protobuf first +decoder', path);
    assert.equal(watches.get(path), 'protobuf first +decoder', path);
  }
  assert.equal(lists.get('/apis/gateway.networking.k8s.io/v1beta1/referencegrants'), 'json');
  await Promise.all([state.stop(), revocation.stop()]);
});
