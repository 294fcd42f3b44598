// A token bucket: `perSecond` refilled continuously, up to `burst` (a second's worth unless told).

export class TokenBucket {
  private tokens: number;
  private at: number;

  constructor(private readonly perSecond: number, now: number, private readonly burst = perSecond) {
    this.tokens = burst;
    this.at = now;
  }

  /** Takes one if there is one now. A clock stepped back adds nothing (an hour back was an hour's debt). */
  take(now: number): boolean {
    if (!this.has(now)) return false;
    this.tokens--;
    return true;
  }

  /** Whether there is one now (none taken). */
  has(now: number): boolean {
    this.tokens = Math.min(this.burst, this.tokens + (Math.max(0, now - this.at) * this.perSecond) / 1000);
    this.at = now;
    return this.tokens >= 1;
  }

  /** Whether it is full at `now` (as a new one would be). */
  fullAt(now: number): boolean {
    return this.tokens + (Math.max(0, now - this.at) * this.perSecond) / 1000 >= this.burst;
  }

  /** The seconds until one is there (as of the last take). */
  secondsUntilOne(): number {
    return Math.max(0, 1 - this.tokens) / this.perSecond;
  }

  /** The same in whole ms, at least 1 (for a timer). */
  msUntilOne(): number {
    return Math.max(1, Math.ceil(this.secondsUntilOne() * 1000));
  }
}
