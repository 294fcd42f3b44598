// TokenReview over the apiserver (authentication.k8s.io/v1).
import { Counter, type Registry } from 'prom-client';
import type { ReviewResult, TokenReviewer } from '../auth/identity.js';
import { KubeApiError, type KubeClient } from './client.js';

export class KubeTokenReviewer implements TokenReviewer {
  private readonly calls: Counter<'result'>;

  constructor(private readonly client: KubeClient, registry: Registry, private readonly timeoutMs = 5_000) {
    this.calls = new Counter({ name: 'access_gateway_token_reviews_total', help: 'TokenReview calls to the apiserver, by result (authenticated, rejected, error).', labelNames: ['result'], registers: [registry] });
  }

  async review(token: string, audiences: string[]): Promise<ReviewResult> {
    try {
      const r = await this.call(token, audiences);
      this.calls.inc({ result: r.authenticated ? 'authenticated' : 'rejected' });
      return r;
    } catch (err) {
      this.calls.inc({ result: 'error' });
      throw err;
    }
  }

  private async call(token: string, audiences: string[]): Promise<ReviewResult> {
    const res = await this.client.request('POST', '/apis/authentication.k8s.io/v1/tokenreviews', {
      apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences },
    }, { timeoutMs: this.timeoutMs });
    if (res.status !== 201 && res.status !== 200) throw new KubeApiError(res.status, res.body, 'TokenReview');
    const st = res.body?.status ?? {};
    if (!st.authenticated || !st.user?.username) return { authenticated: false, error: st.error ?? '' };
    return {
      authenticated: true,
      audiences: st.audiences ?? [],
      user: { username: st.user.username, uid: st.user.uid ?? '', groups: st.user.groups ?? [], extra: st.user.extra ?? {} },
    };
  }
}
