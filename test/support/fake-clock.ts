// A clock that moves only when the test says so (client-go's FakeClock).
import type { Clock, Timer } from '../../src/clock.js';

interface Pending extends Timer { at: number; fn: () => void; seq: number }

export class FakeClock implements Clock {
  private pending: Pending[] = [];
  private seq = 0;
  /** Every delay a timer was set with, in order (what the code under test asked to wait). */
  readonly delays: number[] = [];

  constructor(private t = 1_000_000) {}

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): Timer {
    this.delays.push(ms);
    const p: Pending = { at: this.t + Math.max(0, ms), fn, seq: this.seq++, unref() { return this; } };
    this.pending.push(p);
    return p;
  }

  clearTimeout(t: Timer): void {
    this.pending = this.pending.filter((p) => p !== t);
  }

  /** Moves time forward, firing due timers in order. */
  advance(ms: number): void {
    const until = this.t + ms;
    for (;;) {
      const due = this.pending.filter((p) => p.at <= until).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (!due) break;
      this.pending = this.pending.filter((p) => p !== due);
      this.t = Math.max(this.t, due.at);
      due.fn();
    }
    this.t = until;
  }

  /** Moves time forward without firing timers (a timer that is late: the event loop was busy). */
  advanceLate(ms: number): void {
    this.t += ms;
  }

  get waiting(): number {
    return this.pending.length;
  }
}
