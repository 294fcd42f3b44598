// access-gateway serve: gateways from manifest files (re-read on change) on a desktop or in a CI
// job; status on the admin port (/status) and in the logs. Nothing is written to the cluster.
import { keyOf } from '../api/keys.js';
import type { AccessGatewayStatus } from '../api/types.js';
import { FileSource } from '../controller/file-source.js';
import { GatewayController } from '../controller/gateway-controller.js';
import { flag, parseFlags } from './flags.js';
import { commonFlags, startRuntime } from './runtime.js';

export const serveFlags = {
  ...commonFlags({ admin: '127.0.0.1:8080', listen: '127.0.0.1', drain: 2, metricsAuth: 'none' }),
  gateways: flag.list(),
};

export async function runServe(args: string[]): Promise<void> {
  const f = parseFlags(args, serveFlags);
  if (!f.gateways.length) throw new Error('serve: --gateways FILE|DIR is required');
  const rt = await startRuntime(f);
  const { log } = rt;
  const statuses = new Map<string, AccessGatewayStatus>();
  let files: FileSource | undefined;
  const controller = new GatewayController({
    client: rt.client, dataplane: rt.dataplane, issuers: rt.issuers, log, metrics: rt.metrics, jwksReady: rt.jwksReadiness, endpointAddresses: f['endpoint-addresses'],
    source: (onEvent) => (files = new FileSource(f.gateways, onEvent, log)),
    writeStatus: async (gw, status) => {
      statuses.set(keyOf(gw), status);
      files!.setStatus(gw, status);
      const ready = status.conditions?.find((c) => c.type === 'Ready');
      log.info({ gateway: keyOf(gw), port: status.listener?.port, ready: ready?.status, reason: ready?.reason, message: ready?.message }, 'gateway status');
    },
    namespaces: [], portRange: f['port-range'], requestablePorts: f['requestable-ports'], advertiseHost: f['listen-address'],
  });
  rt.metrics.leader.set(1);
  rt.jwksReadiness.onReady(() => controller.resync());
  const admin = await rt.serveAdmin(() => controller.ready, () => ({
    gateways: Object.fromEntries([...statuses].filter(([k]) => files?.keys().includes(k))),
    fileProblems: Object.fromEntries(files?.problems ?? []),
  }));
  log.info({ mode: 'serve', admin: admin.address(), metricsAuth: f['metrics-auth'], server: rt.client.server.origin, portRange: f['port-range'] }, 'starting');
  rt.onShutdown(() => controller.stop());
  await controller.start();
  log.info('caches synced');
}
