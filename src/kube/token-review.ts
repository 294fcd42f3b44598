// TokenReview over the apiserver (authentication.k8s.io/v1).
import type { Logger } from 'pino';
import type { Metrics } from '../observability/metrics.js';
import type { ReviewResult, TokenReviewer } from '../auth/identity.js';
import type { KubeClient } from './client.js';

/** A failed review is logged at most once in this long; the next line counts those left out. */
export const failureLogIntervalMs = 30_000;

export class KubeTokenReviewer implements TokenReviewer {
  private lastLogged = -Infinity;
  private notLogged = 0;

  constructor(
    private readonly client: KubeClient,
    private readonly metrics: Metrics,
    private readonly timeoutMs = 5_000,
    private readonly log?: Logger,
    private readonly now: () => number = performance.now.bind(performance),
  ) {
    for (const result of ['authenticated', 'rejected', 'error']) metrics.tokenReviews.inc({ result }, 0);
  }

  async review(token: string, audiences: string[]): Promise<ReviewResult> {
    const end = this.metrics.tokenReviewDuration.startTimer();
    try {
      const r = await this.call(token, audiences);
      this.metrics.tokenReviews.inc({ result: r.authenticated ? 'authenticated' : 'rejected' });
      return r;
    } catch (err) {
      this.metrics.tokenReviews.inc({ result: 'error' });
      this.logFailure(err);
      throw err;
    } finally {
      end();
    }
  }

  /** Callers get a 503 without the cause; the operator's log says it (the error names the call
   * and the apiserver's answer, never the token). */
  private logFailure(err: unknown): void {
    if (!this.log) return;
    const t = this.now();
    if (t - this.lastLogged < failureLogIntervalMs) { this.notLogged++; return; }
    this.log.warn({ err: err instanceof Error ? err.message : String(err), notLogged: this.notLogged },
      'TokenReview failed: requests needing it are answered 503');
    this.lastLogged = t;
    this.notLogged = 0;
  }

  private async call(token: string, audiences: string[]): Promise<ReviewResult> {
    const res = await this.client.request<{ status?: any }>('POST', '/apis/authentication.k8s.io/v1/tokenreviews', {
      body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences } }, timeoutMs: this.timeoutMs, what: 'TokenReview',
    });
    const st = res?.status ?? {};
    if (!st.authenticated || !st.user?.username) return { authenticated: false, error: st.error ?? '' };
    return {
      authenticated: true,
      audiences: st.audiences ?? [],
      user: { username: st.user.username, uid: st.user.uid ?? '', groups: st.user.groups ?? [], extra: st.user.extra ?? {} },
    };
  }
}
