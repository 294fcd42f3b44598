// access-gateway operator: gateways from the cluster; status, Events and the agw-NAME Service and
// EndpointSlice written to the cluster by the leader; every replica serves every listener.
import { hostname } from 'node:os';
import { GatewayController } from '../controller/gateway-controller.js';
import type { ExposurePolicy, ServiceType } from '../controller/exposure.js';
import { EventRecorder } from '../kube/events.js';
import { applyOwned, watchGateways, writeStatus } from '../kube/gateways.js';
import { LeaderElector } from '../kube/leader.js';
import { publishable, Replicas } from '../kube/replicas.js';
import { flag, parseFlags } from './flags.js';
import { commonFlags, startRuntime } from './runtime.js';

export const operatorFlags = {
  ...commonFlags({ admin: '0.0.0.0:8080', listen: '0.0.0.0', drain: 10, metricsAuth: 'kubernetes' }),
  namespace: flag.list(),
  'advertise-address': flag.optional(),
  'no-expose': flag.boolean(),
  'expose-types': flag.list(),
  'default-expose-type': flag.oneOf(['ClusterIP', 'NodePort', 'LoadBalancer'] as const, 'ClusterIP'),
  'expose-annotations': flag.list(),
  'replica-selector': flag.optional(),
  'leader-elect': flag.boolean(),
  'leader-election-namespace': flag.optional(),
  'leader-election-id': flag.string('access-gateway-operator'),
  'max-gateways-per-namespace': flag.int(16, 0, 100_000),
  'max-labelled-mib-per-namespace': flag.int(8, 0, 1024),
  'released-port-hold-seconds': flag.int(300, 0, 86_400),
};

/** What teams may ask of spec.listener.expose: --expose-types (default ClusterIP only),
 * --default-expose-type (one of them), --expose-annotations (keys, or prefixes ending in *). */
export function exposurePolicy(f: Pick<ReturnType<typeof parseFlags<typeof operatorFlags>>, 'expose-types' | 'default-expose-type' | 'expose-annotations'>): ExposurePolicy {
  const known = ['ClusterIP', 'NodePort', 'LoadBalancer'];
  const types = f['expose-types'].length ? f['expose-types'] : ['ClusterIP'];
  const bad = types.filter((t) => !known.includes(t));
  if (bad.length) throw new Error(`--expose-types: ${bad.join(', ')} is not one of ${known.join(', ')}`);
  if (!types.includes(f['default-expose-type'])) throw new Error(`--default-expose-type ${f['default-expose-type']} is not among --expose-types (${types.join(', ')})`);
  return { types: types as ServiceType[], defaultType: f['default-expose-type'], annotations: f['expose-annotations'] };
}

export async function runOperator(args: string[]): Promise<void> {
  const f = parseFlags(args, operatorFlags);
  const policy = exposurePolicy(f);
  const rt = await startRuntime(f);
  const { log, client, metrics } = rt;
  const listen = f['listen-address'];
  const advertise = f['advertise-address'] ?? (listen === '0.0.0.0' || listen === '::' ? hostname() : listen);
  const podNamespace = process.env.POD_NAMESPACE ?? 'default';
  // the ready operator pods (in a cluster: --replica-selector, e.g. app.kubernetes.io/name=access-gateway)
  const selector = f['replica-selector'];
  const replicas = selector ? new Replicas(client, podNamespace, selector, log, () => controller.resyncAll()) : undefined;
  const elector = f['leader-elect'] ? new LeaderElector(client, {
    namespace: f['leader-election-namespace'] ?? podNamespace, name: f['leader-election-id'],
    identity: process.env.POD_NAME ?? `${hostname()}_${process.pid}`, log,
    onStartedLeading: () => { metrics.leader.set(1); controller.resyncAll(); },
    onStoppedLeading: () => metrics.leader.set(0),
  }) : undefined;
  if (!elector) metrics.leader.set(1);
  const events = new EventRecorder(client, log);
  const controller: GatewayController = new GatewayController({
    client, dataplane: rt.dataplane, issuers: rt.issuers, log, metrics, jwksReady: rt.jwksReadiness, endpointAddresses: f['endpoint-addresses'],
    source: (onEvent, keeper) => watchGateways(client, { namespaces: f.namespace, log, metrics, onEvent, keeper }),
    writeStatus: (gw, status) => writeStatus(client, gw, status),
    events,
    // in a cluster the pods' addresses; outside, the pod's own (POD_IP) or --advertise-address when publishable
    ...(f['no-expose'] ? {} : {
      exposure: {
        addresses: () => (replicas ? replicas.addresses() : [process.env.POD_IP ?? advertise].filter(publishable)),
        write: (obj, exists) => applyOwned(client, obj, exists),
      },
    }),
    exposurePolicy: policy,
    ...(elector ? { isLeader: () => elector.isLeader } : {}),
    namespaces: f.namespace, portRange: f['port-range'], requestablePorts: f['requestable-ports'], maxGatewaysPerNamespace: f['max-gateways-per-namespace'],
    maxLabelledBytesPerNamespace: f['max-labelled-mib-per-namespace'] * 2 ** 20, advertiseHost: advertise,
    releasedPortHoldMs: f['released-port-hold-seconds'] * 1000,
  });
  rt.jwksReadiness.onReady(() => controller.resync());
  const admin = await rt.serveAdmin(() => controller.ready);
  log.info({ mode: 'operator', admin: admin.address(), metricsAuth: f['metrics-auth'], server: client.server.origin,
    portRange: f['port-range'], namespaces: f.namespace.length ? f.namespace : 'all' }, 'starting');
  rt.onShutdown(async () => {
    await elector?.stop(); // releases the Lease at once
    await replicas?.stop();
    await controller.stop();
  });
  elector?.start();
  replicas?.start();
  await controller.start();
  log.info('caches synced');
}
