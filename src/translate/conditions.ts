// Gateway-API style conditions (metav1.Condition): reason never empty, observedGeneration set.
import { ConditionType, Reason } from '../api/conditions.js';
import { oneLine } from '../printable.js';

export type ConditionStatus = 'True' | 'False' | 'Unknown';

export interface ConditionDraft {
  type: ConditionType;
  status: ConditionStatus;
  /** A Reason, or several joined by mergeReasons. */
  reason: string;
  message: string;
}

export interface Condition extends ConditionDraft {
  observedGeneration: number;
  lastTransitionTime: string;
}

export const conditionOrder: ConditionType[] = [ConditionType.Accepted, ConditionType.ResolvedRefs, ConditionType.Programmed, ConditionType.Ready];

/** A condition; its message, which may quote a team's spec, with control characters escaped
 * (kubectl and can-i print it to someone's terminal). */
export function cond(type: ConditionType, ok: boolean, reason: string, message: string): ConditionDraft {
  return { type, status: ok ? 'True' : 'False', reason, message: oneLine(message) };
}

/** Ready summarises the other three. */
export function readyFrom(drafts: ConditionDraft[]): ConditionDraft {
  const bad = conditionOrder.slice(0, 3).map((t) => drafts.find((d) => d.type === t))
    .find((d) => !d || d.status !== 'True');
  if (!bad) return cond(ConditionType.Ready, true, Reason.Ready, 'the listener serves this generation');
  return cond(ConditionType.Ready, false, bad.reason, `${bad.type}: ${bad.message}`);
}

/** Final conditions: keeps lastTransitionTime of conditions whose status did not change. */
export function stampConditions(drafts: ConditionDraft[], previous: readonly { type: string; status: string; lastTransitionTime?: string }[] | undefined,
  generation: number, now: string): Condition[] {
  return conditionOrder.flatMap((type) => {
    const d = drafts.find((x) => x.type === type);
    if (!d) return [];
    const prev = previous?.find((p) => p.type === type);
    const lastTransitionTime = prev && prev.status === d.status && prev.lastTransitionTime ? prev.lastTransitionTime : now;
    return [{ ...d, message: bounded(d.message), observedGeneration: generation, lastTransitionTime }];
  });
}

/** The CRD's bound on a condition message (metav1.Condition's). */
export const maxMessageLength = 32_768;

/** A message cut to the bound (a longer one makes the apiserver refuse the whole status). */
export function bounded(message: string): string {
  if (message.length <= maxMessageLength) return message;
  const tail = ` … (${message.length} characters, cut)`;
  return message.slice(0, maxMessageLength - tail.length) + tail;
}
