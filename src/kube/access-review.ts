// SubjectAccessReviews for the gateways' impersonation checks (`kubectl --as` through a gateway),
// through a fair limiter queued by the gateway's namespace, like the TokenReviews: one team
// asking many questions delays another team's by at most one review per waiting team.
import { AuthUnavailableError } from '../errors.js';
import type { AccessReviewer, ImpersonateAttributes, Verdict } from '../auth/impersonation.js';
import type { CallerIdentity } from '../auth/identity.js';
import type { FairLimiter } from '../auth/review-limiter.js';
import type { Metrics } from '../observability/metrics.js';
import type { KubeClient } from './client.js';

export class KubeAccessReviewer implements AccessReviewer {
  constructor(private readonly client: KubeClient, private readonly limiter: FairLimiter, private readonly metrics: Metrics,
    private readonly timeoutMs = 5_000) {
    for (const result of ['allowed', 'denied', 'error', 'refused']) metrics.impersonationReviews.inc({ result }, 0);
  }

  review(caller: CallerIdentity, attrs: ImpersonateAttributes, namespace: string): Promise<Verdict> {
    return this.limiter.run(namespace, async () => {
      let st: any;
      try {
        const res = await this.client.request<{ status?: any }>('POST', '/apis/authorization.k8s.io/v1/subjectaccessreviews', {
          body: {
            apiVersion: 'authorization.k8s.io/v1', kind: 'SubjectAccessReview',
            spec: { user: caller.username, uid: caller.uid || undefined, groups: caller.groups, extra: caller.extra, resourceAttributes: attrs },
          },
          timeoutMs: this.timeoutMs, what: 'SubjectAccessReview',
        });
        st = res?.status ?? {};
      } catch (err) {
        this.metrics.impersonationReviews.inc({ result: 'error' });
        throw new AuthUnavailableError('impersonation check unavailable: the apiserver did not answer a SubjectAccessReview; retry later',
          { cause: err, retryAfterSeconds: 1 });
      }
      const allowed = st.allowed === true && st.denied !== true;
      this.metrics.impersonationReviews.inc({ result: allowed ? 'allowed' : 'denied' });
      return { allowed, reason: typeof st.reason === 'string' ? st.reason : '' };
    });
  }
}
