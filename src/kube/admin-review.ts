// The admin port's token checks against the apiserver: a TokenReview with no audiences (so the
// apiserver's own, which a Prometheus service-account token carries) and a SubjectAccessReview
// for a non-resource URL. Counted apart from the gateways' TokenReviews.
import type { AdminReviewer, AdminUser } from '../observability/admin-auth.js';
import type { Metrics } from '../observability/metrics.js';
import type { KubeClient } from './client.js';

type Review = 'TokenReview' | 'SubjectAccessReview';

export class KubeAdminReviewer implements AdminReviewer {
  constructor(private readonly client: KubeClient, private readonly metrics?: Metrics, private readonly timeoutMs = 5_000) {}

  async authenticate(token: string): Promise<AdminUser | null> {
    const st = await this.call('TokenReview', '/apis/authentication.k8s.io/v1/tokenreviews', { token },
      (s) => Boolean(s.authenticated && s.user?.username));
    if (!st.authenticated || !st.user?.username) return null;
    return { username: st.user.username, uid: st.user.uid ?? '', groups: st.user.groups ?? [], extra: st.user.extra ?? {} };
  }

  async authorize(user: AdminUser, verb: string, path: string): Promise<boolean> {
    const st = await this.call('SubjectAccessReview', '/apis/authorization.k8s.io/v1/subjectaccessreviews', {
      user: user.username, uid: user.uid || undefined, groups: user.groups, extra: user.extra,
      nonResourceAttributes: { verb, path },
    }, (s) => s.allowed === true && s.denied !== true);
    return st.allowed === true && st.denied !== true;
  }

  private async call(review: Review, path: string, spec: object, allowed: (status: any) => boolean): Promise<any> {
    const group = review === 'TokenReview' ? 'authentication.k8s.io/v1' : 'authorization.k8s.io/v1';
    const end = this.metrics?.adminAuthReviewDuration.startTimer({ review });
    try {
      const res = await this.client.request<{ status?: any }>('POST', path, { body: { apiVersion: group, kind: review, spec }, timeoutMs: this.timeoutMs, what: review });
      const st = res?.status ?? {};
      this.metrics?.adminAuthReviews.inc({ review, result: allowed(st) ? 'allowed' : 'denied' });
      return st;
    } catch (err) {
      this.metrics?.adminAuthReviews.inc({ review, result: 'error' });
      throw err;
    } finally {
      end?.();
    }
  }
}
