// A generic controller, controller-runtime's shape: keys (never events) go through a
// de-duplicating, rate-limited work queue to N workers; one function turns each reconcile's
// outcome into a queue action and counts it:
//   Result {}                 -> forget the key's back-off           result="success"
//   Result { requeueAfterMs } -> forget, and add again after it       result="requeue"
//   Result { gone }           -> forget, and drop a time it was to be added again
//   TerminalError             -> log, forget, do not retry            result="terminal"
//   any other error           -> add again with per-key back-off     result="error"
import type { Logger } from 'pino';
import { realClock, type Clock } from '../clock.js';
import type { Metrics } from '../observability/metrics.js';
import { WorkQueue } from './queue.js';

export interface Result {
  requeueAfterMs?: number;
  /** The object is gone: nothing waits for it (a time it was to be added again is dropped). */
  gone?: boolean;
}

/** An error retrying cannot fix (bad input): logged and counted, never retried. */
export class TerminalError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TerminalError';
  }
}

export type Reconcile = (key: string, log: Logger) => Promise<Result>;

export interface ControllerOptions {
  /** Names the controller in logs (`controller`). */
  name: string;
  reconcile: Reconcile;
  workers?: number;
  log: Logger;
  metrics?: Metrics;
  clock?: Clock;
  /** The group (namespace) a key takes turns in on the queue; default: one group. */
  groupOf?: (key: string) => string;
  /** Each group's share of the event loop for reconciles (WorkQueue groupTime). */
  groupTime?: { msPerSecond: number; burstMs: number };
  /** Called after every reconcile of a key, whatever its outcome. */
  onReconciled?: (key: string) => void;
}

export class Controller {
  readonly queue: WorkQueue;
  private workers: Promise<void>[] = [];
  private seq = 0;

  constructor(private readonly opts: ControllerOptions) {
    const m = opts.metrics;
    for (const result of ['success', 'requeue', 'terminal', 'error']) m?.reconciles.inc({ result }, 0);
    this.queue = new WorkQueue({
      clock: opts.clock ?? realClock, groupOf: opts.groupOf, ...(opts.groupTime ? { groupTime: opts.groupTime } : {}),
      ...(m ? {
        hooks: {
          add: () => m.queueAdds.inc(), retry: () => m.queueRetries.inc(),
          depth: (n) => m.queueDepth.set(n), waited: (s) => m.queueDuration.observe(s),
        },
      } : {}),
    });
  }

  enqueue(key: string): void {
    this.queue.add(key);
  }

  start(): void {
    for (let w = 0; w < (this.opts.workers ?? 2); w++) this.workers.push(this.work());
  }

  /** Stops taking keys and waits for the reconciles in progress. */
  async stop(): Promise<void> {
    this.queue.shutdown();
    await Promise.all(this.workers);
  }

  private async work(): Promise<void> {
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      await this.reconcileHandler(key);
    }
  }

  /** One key: reconcile, then the queue action and the count its outcome calls for. */
  private async reconcileHandler(key: string): Promise<void> {
    const { metrics: m, name } = this.opts;
    const log = this.opts.log.child({ controller: name, key, reconcileId: (++this.seq).toString(36) });
    const started = performance.now();
    let result: 'success' | 'requeue' | 'terminal' | 'error';
    try {
      const r = await this.opts.reconcile(key, log);
      this.queue.forget(key);
      if (r.gone) this.queue.cancel(key);
      if (r.requeueAfterMs) {
        result = 'requeue';
        this.queue.addAfter(key, r.requeueAfterMs);
      } else {
        result = 'success';
      }
    } catch (err) {
      if (err instanceof TerminalError) {
        result = 'terminal';
        log.error({ err }, 'reconcile failed (not retried)');
        this.queue.forget(key);
      } else {
        result = 'error';
        log.warn({ err: String(err), retries: this.queue.numRequeues(key) }, 'reconcile failed; retrying');
        this.queue.addRateLimited(key);
      }
    } finally {
      const seconds = (performance.now() - started) / 1000;
      m?.reconcileDuration.observe(seconds);
      m?.workDuration.observe(seconds);
      this.queue.done(key);
      this.opts.onReconciled?.(key);
    }
    m?.reconciles.inc({ result });
  }
}
