// TokenReview over the apiserver (authentication.k8s.io/v1).
import type { Metrics } from '../observability/metrics.js';
import type { ReviewResult, TokenReviewer } from '../auth/identity.js';
import type { KubeClient } from './client.js';

export class KubeTokenReviewer implements TokenReviewer {
  constructor(private readonly client: KubeClient, private readonly metrics: Metrics, private readonly timeoutMs = 5_000) {
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
      throw err;
    } finally {
      end();
    }
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
