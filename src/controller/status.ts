// The status a reconcile wants written: conditions from translation and from the data plane.
import { parseDateTime } from '../api/validate.js';
import { ConditionType, Reason } from '../api/conditions.js';
import type { AccessGatewayStatus } from '../api/types.js';
import { cond, readyFrom, stampConditions, type ConditionDraft } from '../translate/conditions.js';
import type { ApplyResult } from '../dataplane/listener-manager.js';

export function desiredStatus(opts: {
  generation: number;
  previous: AccessGatewayStatus | undefined;
  drafts: ConditionDraft[];
  applied: ApplyResult | null;
  port: number | undefined;
  routes: { name: string; endpoints: number }[];
  url: string | undefined;
  now: string;
  /** When the gateway was given `port` (listener.since). */
  since?: string;
  /** Access rules past their notAfter. */
  expiredAccessRules?: { index: number; notAfter: string }[];
}): AccessGatewayStatus {
  let drafts = opts.drafts;
  const { applied } = opts;
  let programmed: ConditionDraft;
  if (applied === null) {
    const notAccepted = drafts.find((d) => d.status !== 'True');
    programmed = cond(ConditionType.Programmed, false, notAccepted?.reason ?? Reason.Invalid, 'no listener: ' + (notAccepted?.message ?? 'the gateway is not accepted'));
  } else if (applied.programmed) {
    programmed = cond(ConditionType.Programmed, true, Reason.Programmed, `listening on port ${applied.port}`);
  } else {
    programmed = cond(ConditionType.Programmed, false, applied.reason, applied.message);
    if (applied.reason === Reason.PortConflict) {
      drafts = drafts.map((d) => (d.type === ConditionType.Accepted ? cond(ConditionType.Accepted, false, Reason.PortConflict, applied.message) : d));
    }
  }
  const all = [...drafts, programmed];
  all.push(readyFrom(all));
  const status: AccessGatewayStatus = {
    observedGeneration: opts.generation,
    conditions: stampConditions(all, opts.previous?.conditions, opts.generation, opts.now),
  };
  if (opts.routes.length) status.routes = opts.routes;
  if (opts.port !== undefined) status.listener = { port: opts.port, ...(opts.since ? { since: opts.since } : {}), ...(opts.url ? { url: opts.url } : {}) };
  if (opts.expiredAccessRules?.length) status.expiredAccessRules = opts.expiredAccessRules;
  return status;
}

/** Longest wait for the next notAfter (timers overflow past 2^31 ms; the resync comes sooner anyway). */
const maxExpiryWaitMs = 3_600_000;

/**
 * The access rules of `spec` whose notAfter is at or before `now`, and how long until the next
 * one expires (plus a second, so the status is written after it has), if any.
 */
export function accessExpiry(access: { notAfter?: string }[] | undefined, now: number): { expired: { index: number; notAfter: string }[]; nextMs?: number } {
  const expired: { index: number; notAfter: string }[] = [];
  let next = Infinity;
  (access ?? []).forEach((a, index) => {
    if (a.notAfter === undefined) return;
    const t = parseDateTime(a.notAfter);
    if (t === null) return; // the gateway is not accepted (translate says why)
    if (t <= now) expired.push({ index, notAfter: a.notAfter });
    else next = Math.min(next, t);
  });
  return next === Infinity ? { expired } : { expired, nextMs: Math.min(next - now + 1000, maxExpiryWaitMs) };
}
