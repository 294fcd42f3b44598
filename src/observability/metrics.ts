// The Prometheus registry: prom-client's process and Node.js metrics, prefixed access_gateway_.
import { Registry, collectDefaultMetrics } from 'prom-client';

export function createRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'access_gateway_' });
  return registry;
}
