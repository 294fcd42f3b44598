// A token bucket: `perSecond` refilled continuously, up to a second's worth.

export class TokenBucket {
  private tokens: number;
  private at: number;

  constructor(private readonly perSecond: number, now: number) {
    this.tokens = perSecond;
    this.at = now;
  }

  /** Takes one if there is one now. A clock stepped back adds nothing (an hour back was an hour's debt). */
  take(now: number): boolean {
    this.tokens = Math.min(this.perSecond, this.tokens + (Math.max(0, now - this.at) * this.perSecond) / 1000);
    this.at = now;
    if (this.tokens < 1) return false;
    this.tokens--;
    return true;
  }

  /** The ms until one is there (as of the last take). */
  msUntilOne(): number {
    return Math.max(1, Math.ceil(((1 - this.tokens) * 1000) / this.perSecond));
  }
}
