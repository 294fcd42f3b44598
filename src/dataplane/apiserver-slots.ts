// --max-apiserver-requests-per-namespace: at most N requests of a namespace's gateways waiting for
// the apiserver's answer (its response headers) at once; the others wait in order. A slot is
// given back when the answer's headers arrive, so a watch or `logs -f` holds one only until the
// apiserver starts streaming. Each namespace's slots are its own: a team's queue holds only its
// own requests.

/** `state`: waiting, taken out (gone) or given a slot (ran). */
interface Waiter { go: (release: () => void) => void; state: 'waiting' | 'gone' | 'ran' }

/** `gone`: taken-out requests still in `waiting` (dropped when they are half of it); `serving`:
 * `next` is giving slots (a release meanwhile, by a waiter whose client left, leaves it to that loop). */
interface Held { n: number; waiting: Waiter[]; head: number; gone: number; serving: boolean }

export class ApiserverSlots {
  private readonly held = new Map<string, Held>();

  /** `limit` 0: no limit (take runs at once and counts nothing). */
  constructor(readonly limit: number) {}

  /**
   * Runs `go` with a slot of `namespace` now, or in order when one is given back. `go` gets the
   * slot's release (idempotent). Returns undefined when `go` ran at once, else a function that
   * takes the request out of the line (its client left, or it waited too long).
   */
  take(namespace: string, go: (release: () => void) => void): (() => void) | undefined {
    if (this.limit <= 0) {
      go(noop);
      return undefined;
    }
    let h = this.held.get(namespace);
    if (!h) this.held.set(namespace, (h = { n: 0, waiting: [], head: 0, gone: 0, serving: false }));
    if (h.n < this.limit) {
      h.n++;
      go(this.releaser(namespace, h));
      return undefined;
    }
    const w: Waiter = { go, state: 'waiting' };
    h.waiting.push(w);
    return () => {
      if (w.state !== 'waiting') return;
      w.state = 'gone';
      if (++h.gone > 32 && h.gone * 2 > h.waiting.length - h.head) {
        h.waiting = h.waiting.slice(h.head).filter((x) => x.state === 'waiting');
        h.head = 0;
        h.gone = 0;
      }
    };
  }

  /** Requests of `namespace` holding a slot, and waiting for one (taken-out ones not counted). */
  size(namespace: string): { held: number; waiting: number } {
    const h = this.held.get(namespace);
    return { held: h?.n ?? 0, waiting: h ? h.waiting.length - h.head - h.gone : 0 };
  }

  /** Every namespace with requests holding or waiting for a slot (the gauge, at a scrape). */
  *namespaces(): Iterable<{ namespace: string; held: number; waiting: number }> {
    for (const namespace of [...this.held.keys()]) yield { namespace, ...this.size(namespace) };
  }

  private releaser(namespace: string, h: Held): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      h.n--;
      this.next(namespace, h);
    };
  }

  /** Gives free slots to the first waiting requests still there. */
  private next(namespace: string, h: Held): void {
    if (h.serving) return;
    h.serving = true;
    try {
      while (h.n < this.limit && h.head < h.waiting.length) {
        const w = h.waiting[h.head]!;
        h.waiting[h.head++] = undefined as never;
        if (w.state === 'gone') {
          h.gone--;
          continue;
        }
        w.state = 'ran';
        h.n++;
        w.go(this.releaser(namespace, h));
      }
    } finally {
      h.serving = false;
    }
    if (h.head === h.waiting.length || (h.head > 1024 && h.head * 2 > h.waiting.length)) {
      h.waiting = h.waiting.slice(h.head);
      h.head = 0;
    }
    if (h.n === 0 && h.waiting.length === 0 && this.held.get(namespace) === h) this.held.delete(namespace);
  }
}

const noop = (): void => {};
