// TLS handshakes' share of the event loop. A full handshake signs with the listener's key on the
// one thread every team shares (a full one with RSA-2048 costs ~1.2 ms), before any request, and so before the turns
// requests take: without a bound, a team opening a new connection per request would take most of
// the process from every other team. Handshakes start when their namespace's turn comes (the
// client's first bytes wait in the kernel meanwhile). Measured in docs/performance.md ("Stop 32").
import { createPrivateKey, sign } from 'node:crypto';
import { performance } from 'node:perf_hooks';

/** Milliseconds of handshakes that may start at once: about one (a shorter turn for others). */
const burstMs = 1.5;

/**
 * What a connection's full handshake costs besides its signature, in ms: the key exchange, the
 * TLS socket and its first request's connection (a full handshake with an RSA-2048 key cost
 * ~1.2 ms of the operator's CPU in the benchmark, its signature 0.35 ms).
 */
export const connectionMs = 0.9;

/** A handshake waiting for its turn: false when there was nothing to do (its client is gone). */
type Start = () => boolean;

/**
 * Handshakes take at most `share` of the time (a bucket of milliseconds). Past it they wait, and
 * each namespace's waiting handshakes take turns, one each, so that one team's flood holds back
 * its own handshakes, not another team's. `share` 1: no bound.
 */
export class HandshakeShare {
  private tokens = burstMs;
  private last: number;
  private readonly waiting = new Map<string, Array<{ cost: number; start: Start }>>();
  private timer: NodeJS.Timeout | undefined;

  constructor(readonly share: number, private readonly now = () => performance.now()) {
    this.last = now();
  }

  /** Starts a handshake that costs `cost` ms now and says true, or says false and starts it
   * when `namespace`'s turn comes. */
  start(namespace: string, cost: number, start: Start): boolean {
    if (this.share >= 1) return start(), true;
    this.refill();
    if (this.waiting.size === 0 && this.tokens > 0) {
      if (start()) this.tokens -= cost;
      return true;
    }
    const q = this.waiting.get(namespace);
    if (q) q.push({ cost, start });
    else this.waiting.set(namespace, [{ cost, start }]);
    this.schedule();
    return false;
  }

  /** Gives back what a handshake was charged and did not spend (a resumed session signs nothing). */
  refund(ms: number): void {
    this.tokens = Math.min(burstMs, this.tokens + ms);
  }

  private refill(): void {
    const t = this.now();
    this.tokens = Math.min(burstMs, this.tokens + (t - this.last) * this.share);
    this.last = t;
  }

  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(this.run, Math.ceil(-this.tokens / this.share) || 1);
  }

  private readonly run = (): void => {
    this.timer = undefined;
    this.refill();
    // one each, in turn: a namespace that started one goes to the back
    while (this.tokens > 0 && this.waiting.size > 0) {
      const [ns, q] = this.waiting.entries().next().value!;
      this.waiting.delete(ns);
      const h = q.shift()!;
      if (q.length > 0) this.waiting.set(ns, q);
      if (h.start()) this.tokens -= h.cost;
    }
    if (this.waiting.size > 0) this.schedule();
  };
}

const signing = new Map<string, number>();

/** What one signature with `key` costs the event loop, in ms: measured once per kind and size of key. */
export function signCost(key: string): number {
  const k = createPrivateKey(key);
  const d = k.asymmetricKeyDetails;
  const kind = `${k.asymmetricKeyType}:${d?.modulusLength ?? d?.namedCurve ?? ''}`;
  let ms = signing.get(kind);
  if (ms === undefined) {
    const alg = k.asymmetricKeyType === 'ed25519' || k.asymmetricKeyType === 'ed448' ? null : 'sha256';
    ms = Infinity;
    for (let i = 0; i < 3; i++) {
      const t = performance.now();
      sign(alg, Buffer.alloc(32), k);
      ms = Math.min(ms, performance.now() - t);
    }
    signing.set(kind, ms);
  }
  return ms;
}
