// Leader election over a coordination.k8s.io/v1 Lease, after client-go's leaderelection:
// create the Lease or take it when it is empty or expired, renew it every retryPeriod with
// optimistic concurrency, step down when renewing has failed for renewDeadline, and release it
// on stop so a follower takes over at once. Expiry is judged by the local time at which the
// Lease was last seen to change (client-go's observedTime), never by the holder's clock.
import type { Logger } from 'pino';
import { realClock, sleep, type Clock } from '../clock.js';
import { ApiError, type KubeClient } from './client.js';

export interface LeaderOptions {
  namespace: string;
  name: string;
  identity: string;
  /** How long followers wait before taking a Lease that is no longer renewed (default 15 s). */
  leaseDurationMs?: number;
  /** How long the leader keeps leading while renewals fail (default 10 s; keep below leaseDuration). */
  renewDeadlineMs?: number;
  /** Interval between attempts to acquire or renew (default 2 s). */
  retryPeriodMs?: number;
  log: Logger;
  onStartedLeading?: () => void;
  onStoppedLeading?: () => void;
  clock?: Clock;
}

interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
  [k: string]: unknown;
}
interface Lease {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string; [k: string]: unknown };
  spec?: LeaseSpec;
}

/** A Kubernetes MicroTime: RFC 3339 with microseconds. */
export const microTime = (d = new Date()): string => d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');

type Attempt = 'ok' | 'held' | 'failed';

export class LeaderElector {
  private readonly leaseMs: number;
  private readonly renewMs: number;
  private readonly retryMs: number;
  private readonly path: string;
  private readonly abort = new AbortController();
  private running?: Promise<void>;
  private leading = false;
  private lastRenew = 0;
  /** The Lease as last read or written, and the local time its spec last changed. */
  private observed?: { lease: Lease; key: string; at: number };

  private readonly clock: Clock;

  constructor(private readonly client: KubeClient, private readonly opts: LeaderOptions) {
    this.clock = opts.clock ?? realClock;
    this.leaseMs = opts.leaseDurationMs ?? 15_000;
    this.renewMs = opts.renewDeadlineMs ?? 10_000;
    this.retryMs = opts.retryPeriodMs ?? 2_000;
    this.path = `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(opts.namespace)}/leases`;
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    this.running ??= this.run();
  }

  /** Stops the loop; a leader releases the Lease so a follower takes over at once. Not restartable. */
  async stop(): Promise<void> {
    await this.halt();
    await this.release();
  }

  /**
   * For tests (crash simulation): stops the loop as if the process died — the Lease is neither
   * released nor renewed and onStoppedLeading is not called, so followers wait for it to expire.
   */
  async abandon(): Promise<void> {
    await this.halt();
    this.leading = false;
  }

  private async halt(): Promise<void> {
    this.abort.abort();
    await this.running;
  }

  private async run(): Promise<void> {
    const { signal } = this.abort;
    while (!signal.aborted) {
      const started = this.clock.now();
      if (this.leading && started - this.lastRenew >= this.renewMs) {
        this.stepDown(`could not renew the Lease for ${this.renewMs} ms`);
      }
      // a renewal must not outlive the renew deadline
      const timeoutMs = this.leading ? this.lastRenew + this.renewMs - started : this.renewMs;
      let result: Attempt = 'failed';
      try {
        result = await this.tryAcquireOrRenew(timeoutMs);
      } catch (err) {
        this.opts.log.debug({ lease: this.opts.name, err: String(err) }, 'leader election attempt failed');
      }
      if (result === 'ok') {
        this.lastRenew = started;
        if (!this.leading && !signal.aborted) {
          this.leading = true;
          this.opts.log.info({ lease: this.opts.name, identity: this.opts.identity }, 'acquired leadership');
          this.callback(this.opts.onStartedLeading);
        }
      } else if (result === 'held' && this.leading) {
        this.stepDown(`the Lease is held by ${this.observed?.lease.spec?.holderIdentity}`);
      }
      let wait = this.retryMs;
      if (this.leading) wait = Math.max(0, Math.min(wait, this.lastRenew + this.renewMs - this.clock.now()));
      else wait *= 1 + Math.random() * 0.2; // jitter, so followers do not poll in step
      await sleep(wait, signal, this.clock);
    }
  }

  private async tryAcquireOrRenew(timeoutMs: number): Promise<Attempt> {
    const { name, identity } = this.opts;
    const req = (method: string, path: string, what: string, body?: unknown) =>
      this.client.request<Lease>(method, path, { body, what, timeoutMs: Math.max(100, timeoutMs) });
    const status = (err: unknown) => (err instanceof ApiError ? err.status : 0);
    // twice at most: a 409 (lost a race to create or update) means re-read and re-decide
    for (let i = 0; i < 2; i++) {
      let got: Lease | undefined;
      try {
        got = await req('GET', `${this.path}/${encodeURIComponent(name)}`, `get Lease ${name}`);
      } catch (err) {
        if (status(err) !== 404) throw err;
      }
      if (!got) {
        try {
          this.observe(await req('POST', this.path, `create Lease ${name}`, this.record(undefined)));
          return 'ok';
        } catch (err) {
          if (status(err) === 409) continue;
          throw err;
        }
      }
      this.observe(got);
      const holder = got.spec?.holderIdentity;
      if (holder && holder !== identity && !this.expired()) return 'held';
      try {
        this.observe(await req('PUT', `${this.path}/${encodeURIComponent(name)}`, `update Lease ${name}`, this.record(got)));
        return 'ok';
      } catch (err) {
        if (status(err) === 409) continue;
        throw err;
      }
    }
    return 'failed';
  }

  /** Our claim on the Lease, built on `cur` (whose resourceVersion makes the PUT conditional). */
  private record(cur: Lease | undefined): Lease {
    const { name, namespace, identity } = this.opts;
    const old = cur?.spec ?? {};
    const mine = old.holderIdentity === identity;
    const now = microTime(new Date(this.clock.now()));
    return {
      apiVersion: 'coordination.k8s.io/v1', kind: 'Lease',
      metadata: { ...cur?.metadata, name, namespace },
      spec: {
        ...old,
        holderIdentity: identity,
        leaseDurationSeconds: Math.max(1, Math.ceil(this.leaseMs / 1000)),
        acquireTime: mine && old.acquireTime ? old.acquireTime : now,
        renewTime: now,
        leaseTransitions: cur ? (old.leaseTransitions ?? 0) + (mine ? 0 : 1) : 0,
      },
    };
  }

  private observe(lease: Lease): void {
    const s = lease.spec ?? {};
    const key = JSON.stringify([s.holderIdentity, s.leaseDurationSeconds, s.acquireTime, s.renewTime, s.leaseTransitions]);
    const prev = this.observed;
    if (prev?.key === key) {
      prev.lease = lease; // same record, newer resourceVersion: keep the observed time
      return;
    }
    this.observed = { lease, key, at: this.clock.now() };
    const holder = s.holderIdentity;
    if (holder !== prev?.lease.spec?.holderIdentity && holder && holder !== this.opts.identity) {
      this.opts.log.info({ lease: this.opts.name, leader: holder }, 'observed a new leader');
    }
  }

  private expired(): boolean {
    const o = this.observed;
    return !o || o.at + (o.lease.spec?.leaseDurationSeconds ?? 0) * 1000 <= this.clock.now();
  }

  private stepDown(reason: string): void {
    this.leading = false;
    this.opts.log.info({ lease: this.opts.name, identity: this.opts.identity, reason }, 'stopped leading');
    this.callback(this.opts.onStoppedLeading);
  }

  /** Like client-go's ReleaseOnCancel: clears the holder and shortens the Lease to 1 s. */
  private async release(): Promise<void> {
    const { name, identity, log } = this.opts;
    const lease = this.observed?.lease;
    let reason = 'stopping; the Lease will expire';
    if (lease?.spec?.holderIdentity === identity) {
      const now = microTime(new Date(this.clock.now()));
      const { holderIdentity: _, ...spec } = lease.spec;
      try {
        this.observe(await this.client.request<Lease>('PUT', `${this.path}/${encodeURIComponent(name)}`, {
          body: { ...lease, spec: { ...spec, leaseDurationSeconds: 1, acquireTime: now, renewTime: now } }, timeoutMs: this.renewMs, what: `release Lease ${name}`,
        }));
        reason = 'released the Lease';
      } catch (err) {
        log.debug({ lease: name, err: String(err) }, 'releasing the Lease failed; it will expire');
      }
    }
    if (this.leading) this.stepDown(reason);
  }

  private callback(fn: (() => void) | undefined): void {
    try {
      fn?.();
    } catch (err) {
      this.opts.log.warn({ lease: this.opts.name, err: String(err) }, 'leader election callback threw');
    }
  }
}
