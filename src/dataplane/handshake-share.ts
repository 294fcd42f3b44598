// TLS handshakes' share of the event loop. A handshake signs with the listener's key on the one
// thread every team shares (a full one with RSA-2048 costs ~1.2 ms), before any request, and so
// before the turns requests take: without a bound, a team opening a new connection per request
// would take most of the process from every other team. Handshakes start when their namespace's turn comes (the
// client's first bytes wait in the kernel meanwhile). Measured in docs/performance.md ("Stop 32").
import { createPrivateKey, sign } from 'node:crypto';
import { performance } from 'node:perf_hooks';

/** Milliseconds of handshakes that may start at once: about one RSA-2048 handshake, and what
 * may be overdrawn by one (a shorter turn for others). */
const burstMs = 1.5;

/**
 * What a connection's full handshake costs besides its signature, in ms: the key exchange, the
 * TLS socket and its first request's connection (a full handshake with an RSA-2048 key cost
 * ~1.2 ms of the operator's CPU in the benchmark, its signature 0.35 ms).
 */
export const connectionMs = 0.9;

/** Client addresses whose charges a namespace remembers at most (the oldest is forgotten first). */
const maxSourcesOwed = 1024;

/** What a handshake's later bytes are charged when their turn comes: nothing, what TLS spends on
 * them is charged as it is spent (HandshakeMeter). */
export const noCost = () => 0;

/** A handshake waiting for its turn: false when there was nothing to do (its client is gone). */
type Start = () => boolean;

/** What a handshake costs, in ms, asked when it starts (its listener's key may have changed meanwhile). */
type Cost = () => number;

/** One namespace's waiting handshakes by client address, and the ms it may spend in its turn
 * (deficit round robin). */
type Waiting = { cost: Cost; start: Start };

interface Queue {
  bySource: Map<string, Waiting[]>;
  credit: number;
  /** It is at the front and has had this turn's credit. */
  inTurn: boolean;
}

/**
 * Handshakes take at most `share` of the time (a bucket of milliseconds). Past it they wait, and
 * namespaces take turns by time spent (deficit round robin: each turn adds `burstMs` to a
 * namespace's credit, and it starts handshakes while its credit covers them), so one team's flood, or its costlier key, holds back its own handshakes,
 * not another team's. Within a namespace, client addresses take turns, one each: a flood at
 * another team's port from a few addresses holds back those; an address charged past its
 * handshakes' start (`charge`) lets the namespace's other addresses go first until that is paid.
 * `share` 1: no bound.
 */
export class HandshakeShare {
  private tokens = burstMs;
  private last: number;
  private readonly queues = new Map<string, Queue>();
  /** What namespaces with nothing waiting were charged (`charge`), in ms: their next turns pay it. */
  private readonly owed = new Map<string, number>();
  /** The same by namespace and client address: paid back `burstMs` at a time, by letting the
   * namespace's other addresses go first, or by going when it is alone in its namespace. */
  private readonly sourceOwed = new Map<string, Map<string, number>>();
  private timer: NodeJS.Timeout | undefined;

  /** `onError`: what a start threw (it runs in a timer, with other namespaces'). */
  constructor(private readonly share: number, private readonly onError: (err: unknown) => void, private readonly now = () => performance.now()) {
    if (!(share > 0 && share <= 1)) throw new RangeError(`handshake share ${share}: more than 0, at most 1`);
    this.last = now();
  }

  /** Starts a handshake that costs `cost` ms now and says true, or says false and starts it
   * when the turn of `namespace`, and within it of the client address `source`, comes. */
  start(namespace: string, source: string, cost: Cost, start: Start): boolean {
    if (this.share >= 1) return this.run1(start), true;
    this.refill();
    if (this.queues.size === 0 && this.tokens > 0) {
      const ms = cost();
      if (this.run1(start)) this.tokens -= ms;
      return true;
    }
    let q = this.queues.get(namespace);
    if (!q) {
      this.queues.set(namespace, (q = { bySource: new Map(), credit: -(this.owed.get(namespace) ?? 0), inTurn: false }));
      this.owed.delete(namespace);
    }
    const mine = q.bySource.get(source);
    if (mine) mine.push({ cost, start });
    else q.bySource.set(source, [{ cost, start }]);
    this.schedule();
    return false;
  }

  /** Gives back to the share what a handshake was charged and did not spend (a resumed session
   * signs nothing). Not to its namespace's turn: one started at once was not charged there. */
  refund(ms: number): void {
    this.tokens = Math.min(burstMs, this.tokens + ms);
  }

  /** Charges `namespace` for what a handshake from `source` cost past what it was charged when it
   * started (a client's certificate chain checked during it): the share waits that much longer,
   * the namespace's later turns are skipped until their credit covers it, and within them the
   * namespace's other addresses go first until `source` has paid it. */
  charge(namespace: string, source: string, ms: number): void {
    if (!(ms > 0) || this.share >= 1) return;
    this.tokens -= ms;
    const q = this.queues.get(namespace);
    if (q) q.credit -= ms;
    else this.owed.set(namespace, (this.owed.get(namespace) ?? 0) + ms);
    let owed = this.sourceOwed.get(namespace);
    if (!owed) this.sourceOwed.set(namespace, (owed = new Map()));
    const was = owed.get(source) ?? 0;
    owed.delete(source); // newest last: the oldest is forgotten first
    owed.set(source, was + ms);
    if (owed.size > maxSourcesOwed) owed.delete(owed.keys().next().value!);
  }

  /** The address of `ns` whose handshake goes next: the first in turn that owes nothing, and the
   * owing ones it passes over; if all owe, the first (it pays as it goes). Changes nothing: what
   * is owed is paid once a handshake has started (`paid`). */
  private nextSource(ns: string, q: Queue): { source: string; mine: Waiting[]; passed: string[] } {
    const owed = this.sourceOwed.get(ns);
    let first: [string, Waiting[]] | undefined;
    const passed: string[] = [];
    for (const [source, mine] of q.bySource) {
      first ??= [source, mine];
      if (!owed?.has(source)) return { source, mine, passed };
      passed.push(source);
    }
    return { source: first![0], mine: first![1], passed: [first![0]] };
  }

  /** After a start: each address that was passed over (or went owing) pays `burstMs` of its debt
   * (the ones passed over keep their place: they are asked first next time). */
  private paid(ns: string, passed: string[]): void {
    const owed = this.sourceOwed.get(ns);
    if (!owed) return;
    for (const source of passed) {
      const debt = owed.get(source);
      if (debt === undefined) continue;
      if (debt > burstMs) owed.set(source, debt - burstMs);
      else owed.delete(source);
    }
    if (owed.size === 0) this.sourceOwed.delete(ns);
  }

  private run1(start: Start): boolean {
    try {
      return start();
    } catch (err) {
      this.onError(err);
      return false;
    }
  }

  private refill(): void {
    const t = this.now();
    this.tokens = Math.min(burstMs, this.tokens + (t - this.last) * this.share);
    this.last = t;
    if (this.tokens === burstMs && this.queues.size === 0) { // the share is idle: no one is owed a turn
      this.owed.clear();
      this.sourceOwed.clear();
    }
  }

  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(this.run, Math.ceil(-this.tokens / this.share) || 1);
  }

  private readonly run = (): void => {
    this.timer = undefined;
    this.refill();
    while (this.tokens > 0 && this.queues.size > 0) {
      const [ns, q] = this.queues.entries().next().value!;
      if (!q.inTurn) {
        q.credit += burstMs;
        q.inTurn = true;
      }
      const { source, mine, passed } = this.nextSource(ns, q);
      const next = mine[0]!;
      const cost = next.cost();
      if (q.credit < cost) {
        // its turn is spent: to the back, keeping what is left for its next turn
        q.inTurn = false;
        this.queues.delete(ns);
        this.queues.set(ns, q);
        continue;
      }
      mine.shift();
      q.bySource.delete(source); // to the back of its namespace's addresses
      if (mine.length > 0) q.bySource.set(source, mine);
      if (this.run1(next.start)) {
        this.tokens -= cost;
        q.credit -= cost;
        if (passed.length) this.paid(ns, passed);
      }
      if (q.bySource.size === 0) { // credit is not kept for later; a debt (`charge` while it ran) is
        this.queues.delete(ns);
        if (q.credit < 0) this.owed.set(ns, -q.credit);
      }
    }
    if (this.queues.size > 0) this.schedule();
  };
}

/**
 * What one signature with `key` costs the event loop, in ms: the faster of two, measured for each
 * listener key (a key's cost is its own: its exponent, whether its CRT values are right). A key
 * it cannot sign with this way (an RSA-PSS key bound to another hash) is charged 20 ms.
 */
export function signCost(key: string): number {
  try {
    const k = createPrivateKey(key);
    const alg = k.asymmetricKeyType === 'ed25519' || k.asymmetricKeyType === 'ed448' ? null : 'sha256';
    let ms = Infinity;
    for (let i = 0; i < 2; i++) {
      const t = performance.now();
      sign(alg, Buffer.alloc(32), k);
      ms = Math.min(ms, performance.now() - t);
    }
    return ms;
  } catch {
    return 20;
  }
}
