// AccessGateways from manifest files (`access-gateway serve`): re-read on change; a file that
// does not parse, or a gateway that does not validate, keeps its last good version (and says why).
import { watch, type FSWatcher, statSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import type { Logger } from 'pino';
import type { AccessGateway, AccessGatewayStatus } from '../api/types.js';
import { FirstFiles, loadManifest, manifestFiles, problemLine, type ManifestGateway } from '../api/manifests.js';
import { keyOf } from '../api/keys.js';
import { canonical } from '../api/canonical.js';
import type { GatewayEvents, GatewaySource } from './gateway-controller.js';

export class FileSource implements GatewaySource {
  private readonly gateways = new Map<string, AccessGateway>();
  /** Last good gateways per file. */
  private readonly byFile = new Map<string, Map<string, AccessGateway>>();
  /** The gateways each file names as last read, valid or not (the first file naming one owns it). */
  private readonly named = new Map<string, Map<string, ManifestGateway>>();
  /** Problems of the last read, by file (shown on /status). */
  readonly problems = new Map<string, string[]>();
  private readonly watchers: FSWatcher[] = [];
  private timer?: NodeJS.Timeout;
  private synced!: () => void;
  private readonly syncedP = new Promise<void>((r) => { this.synced = r; });

  constructor(private readonly paths: string[], private readonly onEvent: GatewayEvents, private readonly log: Logger) {}

  start(): void {
    this.reload();
    this.synced();
    for (const p of this.paths) {
      const dir = statSync(p).isDirectory() ? resolve(p) : dirname(resolve(p));
      const only = statSync(p).isDirectory() ? null : basename(p);
      const w = watch(dir, (_ev, file) => {
        if (only && file && file !== only) return;
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this.reload(), 150); // editors write in several steps
      });
      // the watched directory removed or unreadable: the gateways read last are kept (an
      // unhandled 'error' would end the process)
      w.on('error', (err) => this.log.error({ err: String(err), dir }, 'watching the gateway files failed; serving what was read last'));
      this.watchers.push(w);
    }
  }

  firstSync(): Promise<void> {
    return this.syncedP;
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    for (const w of this.watchers) w.close();
  }

  get(ns: string, name: string): AccessGateway | undefined {
    return this.gateways.get(`${ns}/${name}`);
  }

  keys(): string[] {
    return [...this.gateways.keys()];
  }

  values(): IterableIterator<AccessGateway> {
    return this.gateways.values();
  }

  /** Keeps the status with the object (no event: status is ours). */
  setStatus(gw: AccessGateway, status: AccessGatewayStatus): void {
    const cur = this.gateways.get(keyOf(gw));
    if (cur) cur.status = status;
  }

  private reload(): void {
    let files: string[];
    try {
      files = manifestFiles(this.paths);
    } catch (err) {
      this.log.error({ err: String(err) }, 'cannot list gateway files; keeping the last good configuration');
      return;
    }
    for (const f of [...this.byFile.keys()]) if (!files.includes(f)) this.byFile.delete(f);
    for (const f of [...this.named.keys()]) if (!files.includes(f)) this.named.delete(f);
    for (const f of [...this.problems.keys()]) if (!files.includes(f)) this.problems.delete(f); // (a broken file deleted)
    for (const file of files) this.readFile(file);
    // a gateway is the first file's that names it, valid or not (as validate says): a later
    // file's copy is not used
    const next = new Map<string, AccessGateway>();
    const firsts = new FirstFiles();
    for (const file of files) {
      for (const [k, g] of this.named.get(file) ?? []) {
        const copy = firsts.claim(file, g);
        if (!copy) {
          const gw = this.byFile.get(file)?.get(k);
          if (gw) next.set(k, gw);
          continue;
        }
        const line = problemLine(file, g, copy);
        this.problems.set(file, [...(this.problems.get(file) ?? []), line]);
        this.log.error({ file, problems: [line] }, 'gateway file has problems');
      }
    }
    for (const [key, gw] of next) {
      const old = this.gateways.get(key);
      // like the apiserver: a spec change bumps the generation; label and annotation edits count too
      const sameSpec = old !== undefined && canonical(old.spec) === canonical(gw.spec);
      if (sameSpec && canonical(old.metadata.annotations) === canonical(gw.metadata.annotations)
        && canonical(old.metadata.labels) === canonical(gw.metadata.labels)) continue;
      gw.metadata.generation = sameSpec ? old.metadata.generation : (old?.metadata.generation ?? 0) + 1;
      gw.metadata.creationTimestamp = old?.metadata.creationTimestamp ?? new Date().toISOString();
      if (old?.status) gw.status = old.status;
      this.gateways.set(key, gw);
      this.onEvent(old ? 'update' : 'add', gw, old);
    }
    for (const [key, old] of [...this.gateways]) {
      if (!next.has(key)) {
        this.gateways.delete(key);
        this.onEvent('delete', old, old);
      }
    }
  }

  private readFile(file: string): void {
    const prev = this.byFile.get(file) ?? new Map<string, AccessGateway>();
    const m = loadManifest(file);
    if (m.problem) {
      this.report(file, [m.problem]);
      return; // keep the last good version of the whole file
    }
    const problems: string[] = m.misspelt.map((x) => `${file}: ${x}`);
    const found = new Map<string, AccessGateway>();
    const named = new Map<string, ManifestGateway>();
    for (const g of m.gateways) if (g.named && !named.has(g.key)) named.set(g.key, g);
    this.named.set(file, named);
    for (const g of m.gateways) {
      const obj = g.object;
      const key = g.key;
      if (g.problems.length) {
        problems.push(...g.problems.map((p) => problemLine(file, g, p)));
        const last = prev.get(key);
        if (last && !found.has(key)) found.set(key, last); // keep the last good version of this gateway
        continue;
      }
      found.set(key, { apiVersion: obj.apiVersion, kind: obj.kind, metadata: obj.metadata, spec: obj.spec });
    }
    this.byFile.set(file, found);
    this.report(file, problems);
  }

  private report(file: string, problems: string[]): void {
    if (problems.length) {
      this.problems.set(file, problems);
      this.log.error({ file, problems }, 'gateway file has problems; keeping the last good configuration');
    } else {
      this.problems.delete(file);
    }
  }
}
