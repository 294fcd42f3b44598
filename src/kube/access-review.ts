// SubjectAccessReviews for the gateways' impersonation checks (`kubectl --as` through a gateway)
// and can-i questions,
// through a fair limiter queued by the gateway's namespace, like the TokenReviews: one team
// asking many questions delays another team's by at most one review per waiting team.
import { AuthUnavailableError } from '../errors.js';
import type { AccessReviewer, ImpersonateAttributes, Verdict } from '../auth/impersonation.js';
import type { CallerIdentity } from '../auth/identity.js';
import type { RequestAttributes, RequestReviewer } from '../auth/request-info.js';
import type { FairLimiter } from '../auth/review-limiter.js';
import type { Metrics } from '../observability/metrics.js';
import type { KubeClient } from './client.js';

export class KubeAccessReviewer implements AccessReviewer, RequestReviewer {
  constructor(private readonly client: KubeClient, private readonly limiter: FairLimiter, private readonly metrics: Metrics,
    private readonly timeoutMs = 5_000) {
    for (const result of ['allowed', 'denied', 'error', 'refused']) metrics.impersonationReviews.inc({ result }, 0);
  }

  async review(caller: CallerIdentity, attrs: ImpersonateAttributes, namespace: string, background = false): Promise<Verdict> {
    let v: Verdict;
    try {
      v = await this.ask(caller, { resourceAttributes: attrs }, namespace, background);
    } catch (err) {
      // the limiter's refusal (a request's is counted as refused; a background one, NoSlotNowError, is not)
      if (err instanceof AuthUnavailableError) throw err;
      this.metrics.impersonationReviews.inc({ result: 'error' });
      throw new AuthUnavailableError('impersonation check unavailable: the apiserver did not answer a SubjectAccessReview; retry later',
        { cause: err, retryAfterSeconds: 1 });
    }
    this.metrics.impersonationReviews.inc({ result: v.allowed ? 'allowed' : 'denied' });
    return v;
  }

  /** Whether `subject` may make a request (can-i): the question the apiserver will ask. */
  reviewRequest(subject: CallerIdentity, attrs: RequestAttributes, namespace: string): Promise<Verdict> {
    return this.ask(subject, attrs, namespace);
  }

  private ask(subject: CallerIdentity, attrs: RequestAttributes | { resourceAttributes: ImpersonateAttributes }, namespace: string, background = false): Promise<Verdict> {
    const call = () => subjectAccessReview(this.client, subject, attrs, this.timeoutMs);
    return background ? this.limiter.tryRun(namespace, call) : this.limiter.run(namespace, call);
  }
}

/** One SubjectAccessReview: may `subject` do what `attrs` say? Throws when the apiserver does not answer. */
export async function subjectAccessReview(client: KubeClient, subject: CallerIdentity,
  attrs: RequestAttributes | { resourceAttributes: ImpersonateAttributes }, timeoutMs = 5_000): Promise<Verdict> {
  const res = await client.request<{ status?: any }>('POST', '/apis/authorization.k8s.io/v1/subjectaccessreviews', {
    body: {
      apiVersion: 'authorization.k8s.io/v1', kind: 'SubjectAccessReview',
      spec: { user: subject.username, uid: subject.uid || undefined, groups: subject.groups, extra: subject.extra, ...attrs },
    },
    timeoutMs, what: 'SubjectAccessReview',
  });
  const st = res?.status ?? {};
  return { allowed: st.allowed === true && st.denied !== true, reason: typeof st.reason === 'string' ? st.reason : '' };
}
