// Kubernetes Events on AccessGateways, de-duplicated: the same reason and message on the same
// object within 10 minutes bumps the existing Event's count (at most once a minute) instead of
// creating a new one, so a flapping gateway cannot flood the apiserver.
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { AccessGateway } from '../api/types.js';
import { isoSeconds, realClock, type Clock } from '../clock.js';
import type { KubeClient } from './client.js';

interface Sent { name: string; count: number; firstMs: number; lastPatch: number }

/** Events remembered for de-duplication; at it, those older than 10 minutes go, then the oldest
 * down to 90%. Each is remembered by a digest of its object, type, reason and message (a
 * condition's message may be 32 KiB: kept whole, 10,000 of them could hold over 600 MiB). */
const maxKept = 10_000;

/** An Event's message, at most 1 KiB of UTF-8 (events.k8s.io's limit for a note; a condition's
 * message may be 32 KiB, and the status keeps it whole). */
export function eventMessage(message: string, maxBytes = 1024): string {
  if (message.length * 3 <= maxBytes || Buffer.byteLength(message) <= maxBytes) return message;
  const { read } = new TextEncoder().encodeInto(message, new Uint8Array(maxBytes - 3)); // (whole characters only)
  return `${message.slice(0, read)}…`;
}

export class EventRecorder {
  private readonly sent = new Map<string, Sent>();
  private seq = 0;

  constructor(private readonly client: KubeClient, private readonly log: Logger, private readonly component = 'access-gateway',
    private readonly clock: Clock = realClock) {}

  async record(gw: AccessGateway, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const ns = gw.metadata.namespace;
    message = eventMessage(message);
    const key = createHash('sha256').update(`${gw.metadata.uid}/${type}/${reason}/${message}`).digest('base64');
    const now = this.clock.now();
    const stamp = isoSeconds(now);
    const prev = this.sent.get(key);
    try {
      if (prev && now - prev.firstMs < 600_000) {
        prev.count++;
        if (now - prev.lastPatch < 60_000) return; // counted; written with the next patch
        prev.lastPatch = now;
        try {
          await this.client.request('PATCH', `/api/v1/namespaces/${ns}/events/${prev.name}`, {
            body: { count: prev.count, lastTimestamp: stamp }, contentType: 'application/merge-patch+json', what: `patch Event ${ns}/${prev.name}`,
          });
        } catch (err) {
          this.sent.delete(key); // gone (expired, deleted): the next one is created afresh
          throw err;
        }
        return;
      }
      if (this.sent.size >= maxKept) this.prune(now);
      const name = `${gw.metadata.name}.${now.toString(16)}${(++this.seq).toString(16)}`;
      await this.client.request('POST', `/api/v1/namespaces/${ns}/events`, { what: `create Event ${ns}/${name}`, body: {
        apiVersion: 'v1', kind: 'Event', metadata: { name, namespace: ns },
        involvedObject: { apiVersion: gw.apiVersion, kind: 'AccessGateway', name: gw.metadata.name, namespace: ns, uid: gw.metadata.uid },
        type, reason, message, count: 1, firstTimestamp: stamp, lastTimestamp: stamp, source: { component: this.component },
        reportingComponent: this.component, reportingInstance: process.env.POD_NAME ?? '',
      } });
      // only an Event this recorder created is ever patched later
      this.sent.delete(key); // an expired one's place: at the back, as the newest
      this.sent.set(key, { name, count: 1, firstMs: now, lastPatch: now });
    } catch (err) {
      this.log.warn({ err: String(err), reason }, 'could not record an Event');
    }
  }

  /** Forgets what can no longer be bumped, then the oldest (not everything: one namespace's
   * thousands of gateways would otherwise undo every other gateway's de-duplication). */
  private prune(now: number): void {
    for (const [k, v] of this.sent) if (now - v.firstMs >= 600_000) this.sent.delete(k);
    for (const k of this.sent.keys()) {
      if (this.sent.size < maxKept * 0.9) break; // a tenth at once: the sweep is paid once per 1,000
      this.sent.delete(k);
    }
  }
}
