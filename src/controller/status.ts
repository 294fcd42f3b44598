// The status a reconcile wants written: conditions from translation and from the data plane.
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
}): AccessGatewayStatus {
  let drafts = opts.drafts;
  const { applied } = opts;
  let programmed: ConditionDraft;
  if (applied === null) {
    const notAccepted = drafts.find((d) => d.status !== 'True');
    programmed = cond('Programmed', false, notAccepted?.reason ?? 'Invalid', 'no listener: ' + (notAccepted?.message ?? 'the gateway is not accepted'));
  } else if (applied.programmed) {
    programmed = cond('Programmed', true, 'Programmed', `listening on port ${applied.port}`);
  } else {
    programmed = cond('Programmed', false, applied.reason, applied.message);
    if (applied.reason === 'PortConflict') {
      drafts = drafts.map((d) => (d.type === 'Accepted' ? cond('Accepted', false, 'PortConflict', applied.message) : d));
    }
  }
  const all = [...drafts, programmed];
  all.push(readyFrom(all));
  const status: AccessGatewayStatus = {
    observedGeneration: opts.generation,
    conditions: stampConditions(all, opts.previous?.conditions, opts.generation, opts.now),
  };
  if (opts.routes.length) status.routes = opts.routes;
  if (opts.port !== undefined) status.listener = { port: opts.port, ...(opts.url ? { url: opts.url } : {}) };
  return status;
}

/** JSON with object keys sorted: the apiserver re-orders keys, so compare in this form. */
export function canonical(v: unknown): string {
  return JSON.stringify(v ?? null, (_k, val) => (val && typeof val === 'object' && !Array.isArray(val)
    ? Object.fromEntries(Object.entries(val).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
    : val));
}
