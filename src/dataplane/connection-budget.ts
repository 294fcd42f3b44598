// Open client connections per namespace, across all of its gateways' listeners. Every team's
// listeners share one process: a connection holds ~14 KiB of its memory (~60 KiB over TLS) and a file
// descriptor, so one team must not be able to open enough of them to starve or OOM the others.

export class ConnectionBudget {
  private readonly open = new Map<string, number>();

  /** `perNamespace` 0: no limit. */
  constructor(readonly perNamespace: number) {}

  /** Counts a new connection of `namespace`; false (nothing counted) when it is at its limit. */
  take(namespace: string): boolean {
    const n = this.open.get(namespace) ?? 0;
    if (this.perNamespace > 0 && n >= this.perNamespace) return false;
    this.open.set(namespace, n + 1);
    return true;
  }

  /** A connection that `take` counted has closed. */
  give(namespace: string): void {
    const n = (this.open.get(namespace) ?? 0) - 1;
    if (n > 0) this.open.set(namespace, n);
    else this.open.delete(namespace);
  }

  /** Open connections of `namespace`. */
  count(namespace: string): number {
    return this.open.get(namespace) ?? 0;
  }
}
