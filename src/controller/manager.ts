// Wires informers, the work queue, reconcile and the data plane. Level-triggered: every
// reconcile recomputes the gateway's plan and status from the cache, whatever the event was.
import type { Logger } from 'pino';
import type { AccessGateway } from '../api/types.js';
import { applyDefaults } from '../api/defaults.js';
import type { ListenerManager } from '../dataplane/listener-manager.js';
import type { KubeClient } from '../kube/client.js';
import { gatewaysPath, writeStatus } from '../kube/gateways.js';
import { Informer, type InformerEvent, type KubeObject } from '../kube/informer.js';
import { listenerTLSLabel, translate, type SecretLike } from '../translate/translate.js';
import { PortAllocator } from './ports.js';
import { WorkQueue } from './queue.js';
import { TerminalError, type Result } from './reconcile.js';
import { canonical, desiredStatus } from './status.js';

export interface ManagerOptions {
  namespaces: string[];
  portRange: [number, number];
  advertiseHost: string;
  workers?: number;
  resyncMs?: number;
  log: Logger;
}

export class Manager {
  private readonly informers: Informer<AccessGateway>[];
  private readonly secretInformers: Informer<SecretLike & KubeObject>[];
  readonly queue = new WorkQueue();
  private readonly ports: PortAllocator;
  /** Status last written per key, so our own writes do not trigger reconciles. */
  private readonly written = new Map<string, string>();
  private readonly initial = new Set<string>();
  /** Gateways waiting for a port another gateway holds: retried when a port is released. */
  private readonly waitingForPort = new Set<string>();
  private initialListed = false;
  private workers: Promise<void>[] = [];
  private resyncTimer?: NodeJS.Timeout;
  private reconcileSeq = 0;

  constructor(private readonly client: KubeClient, private readonly dataplane: ListenerManager, private readonly opts: ManagerOptions) {
    this.ports = new PortAllocator(opts.portRange);
    const nss = opts.namespaces.length ? opts.namespaces : [undefined];
    this.informers = nss.map((ns) => new Informer<AccessGateway>(client, {
      name: `accessgateways${ns ? `/${ns}` : ''}`,
      path: gatewaysPath(ns),
      log: opts.log,
      onEvent: (type, obj, old) => this.onEvent(type, obj, old),
    }));
    // Only labelled Secrets are watched (and cached): listener certificates.
    this.secretInformers = nss.map((ns) => new Informer<SecretLike & KubeObject>(client, {
      name: `secrets${ns ? `/${ns}` : ''}`,
      path: ns ? `/api/v1/namespaces/${ns}/secrets` : '/api/v1/secrets',
      labelSelector: `${listenerTLSLabel}=true`,
      log: opts.log,
      onEvent: (_type, obj) => this.onSecret(obj),
    }));
  }

  private onSecret(secret: KubeObject): void {
    for (const key of this.keys()) {
      const gw = this.get(key)!;
      if (gw.metadata.namespace === secret.metadata.namespace && gw.spec.listener?.tls?.secretName === secret.metadata.name) this.queue.add(key);
    }
  }

  private secret(ns: string, name: string): SecretLike | undefined {
    for (const i of this.secretInformers) {
      const s = i.cache.get(`${ns}/${name}`);
      if (s) return s;
    }
    return undefined;
  }

  private get allInformers(): Informer<KubeObject>[] {
    return [...this.informers, ...this.secretInformers] as Informer<KubeObject>[];
  }

  /** Informers synced and every gateway seen at start-up reconciled once. */
  get ready(): boolean {
    return this.initialListed && this.initial.size === 0;
  }

  async start(): Promise<void> {
    for (const i of this.allInformers) i.start();
    const n = this.opts.workers ?? 2;
    for (let w = 0; w < n; w++) this.workers.push(this.work());
    await Promise.all(this.allInformers.map((i) => i.firstSync));
    for (const key of this.keys()) this.initial.add(key);
    this.initialListed = true;
    this.resyncTimer = setInterval(() => { for (const k of this.keys()) this.queue.add(k); }, this.opts.resyncMs ?? 300_000).unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.resyncTimer);
    this.queue.shutdown();
    await Promise.all(this.allInformers.map((i) => i.stop()));
    await Promise.all(this.workers);
  }

  private keys(): string[] {
    return this.informers.flatMap((i) => [...i.cache.keys()]);
  }

  private get(key: string): AccessGateway | undefined {
    for (const i of this.informers) {
      const gw = i.cache.get(key);
      if (gw) return gw;
    }
    return undefined;
  }

  private onEvent(type: InformerEvent, obj: AccessGateway, old: AccessGateway | undefined): void {
    const key = `${obj.metadata.namespace}/${obj.metadata.name}`;
    if (type === 'update' && old && old.metadata.generation === obj.metadata.generation
      && canonical(obj.status) === this.written.get(key)) return;
    this.queue.add(key);
  }

  private async work(): Promise<void> {
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      const reconcileId = (++this.reconcileSeq).toString(36);
      const log = this.opts.log.child({ controller: 'accessgateway', key, reconcileId });
      try {
        const result = await this.reconcile(key, log);
        this.queue.forget(key);
        if (result.requeueAfterMs) this.queue.addAfter(key, result.requeueAfterMs);
      } catch (err) {
        if (err instanceof TerminalError) {
          log.error({ err }, 'reconcile failed (not retried)');
          this.queue.forget(key);
        } else {
          log.warn({ err: String(err), retries: this.queue.numRequeues(key) }, 'reconcile failed; retrying');
          this.queue.addRateLimited(key);
        }
      } finally {
        this.initial.delete(key);
        this.queue.done(key);
      }
    }
  }

  private async reconcile(key: string, log: Logger): Promise<Result> {
    const gw = this.get(key);
    if (!gw) {
      this.ports.release(key);
      this.waitingForPort.delete(key);
      for (const k of this.waitingForPort) this.queue.add(k);
      this.written.delete(key);
      await this.dataplane.apply(key, null);
      log.debug('gateway gone; listener closed');
      return {};
    }
    const spec = applyDefaults(gw);
    const claim = this.ports.claim({
      key,
      requested: spec.spec.listener?.port,
      previous: gw.status?.listener?.port,
      rank: `${gw.metadata.creationTimestamp ?? ''}/${key}`,
    });
    if ('port' in claim && claim.evicted) this.queue.add(claim.evicted);
    if ('conflict' in claim) this.waitingForPort.add(key);
    else this.waitingForPort.delete(key);
    const secrets: Record<string, SecretLike> = {};
    const tlsName = spec.spec.listener?.tls?.secretName;
    const tlsSecret = tlsName ? this.secret(gw.metadata.namespace, tlsName) : undefined;
    if (tlsSecret) secrets[`${gw.metadata.namespace}/${tlsName}`] = tlsSecret;
    const t = translate(spec, { port: 'port' in claim ? { port: claim.port } : { conflict: claim.conflict }, secrets });
    const applied = await this.dataplane.apply(key, t.plan);
    let requeueAfterMs: number | undefined;
    if (applied && !applied.programmed && applied.reason === 'PortConflict') {
      const port = this.ports.portOf(key);
      if (port !== undefined && spec.spec.listener?.port === undefined) {
        // An allocated port that another process holds: pick another one on the next pass.
        this.ports.block(port);
        this.ports.release(key);
        requeueAfterMs = 100;
      } else {
        requeueAfterMs = 30_000;
      }
    }
    const port = 'port' in claim ? this.ports.portOf(key) : undefined;
    const status = desiredStatus({
      generation: gw.metadata.generation ?? 0,
      previous: gw.status,
      drafts: t.conditions,
      applied,
      port,
      url: port !== undefined && applied?.programmed ? `${t.plan?.tls ? 'https' : 'http'}://${this.opts.advertiseHost}:${port}` : undefined,
      now: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    });
    const json = canonical(status);
    if (json !== canonical(gw.status)) {
      this.written.set(key, json);
      await writeStatus(this.client, gw, status);
      log.info({ ready: status.conditions?.find((c) => c.type === 'Ready')?.status, port }, 'status written');
    } else {
      this.written.set(key, json);
    }
    return requeueAfterMs ? { requeueAfterMs } : {};
  }
}
