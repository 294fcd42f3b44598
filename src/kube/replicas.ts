// The operator's own ready pods, for the agw-NAME EndpointSlices: a pod that turns unready (as on
// SIGTERM, when /readyz fails first) leaves every gateway's EndpointSlice.
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import type { KubeClient } from './client.js';
import type { KubeObject } from './informer.js';
import { Watched } from './watched.js';

type Pod = KubeObject & { status?: { podIP?: string; conditions?: { type: string; status: string }[] }; metadata: KubeObject['metadata'] & { deletionTimestamp?: string } };

export class Replicas {
  private readonly pods: Watched<Pod>;
  private last = '';

  constructor(client: KubeClient, namespace: string, selector: string, log: Logger, onChange: () => void) {
    this.pods = new Watched<Pod>(client, {
      name: 'pods(replicas)', namespaces: [namespace], labelSelector: selector, log,
      path: (ns) => `/api/v1/namespaces/${ns}/pods`,
      onEvent: () => {
        const now = this.addresses().join(',');
        if (now !== this.last) { this.last = now; onChange(); }
      },
    });
  }

  start(): void {
    this.pods.start();
  }

  stop(): Promise<void> {
    return this.pods.stop();
  }

  addresses(): string[] {
    const out: string[] = [];
    for (const p of this.pods.values()) {
      const ready = p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
      const ip = p.status?.podIP;
      if (ready && ip && !p.metadata.deletionTimestamp && publishable(ip)) out.push(ip);
    }
    return out.sort();
  }
}

/** Addresses an EndpointSlice may list (the apiserver refuses loopback, link-local and unspecified). */
export function publishable(addr: string): boolean {
  const v = isIP(addr);
  if (v === 4) return !/^(127\.|169\.254\.|0\.)/.test(addr);
  if (v === 6) return addr !== '::1' && addr !== '::' && !addr.toLowerCase().startsWith('fe80:');
  return false;
}
