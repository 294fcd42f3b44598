// Validation shared by `access-gateway validate`, the file source and the controller: the CRD
// schema (walked generically, so it cannot drift), the CRD's CEL rules (each rule text has a
// TypeScript twin here; a test fails when one is missing), and checks the apiserver cannot do
// (regexes compile).
import { applyDefaults } from './defaults.js';
import { gatewayNameProblem, isDnsLabel, isGatewayName } from './names.js';
import type { AccessGateway } from './types.js';
import { patternTotals, routePatterns } from './regex.js';
import { schema } from './schema.js';
import { oneLine } from '../printable.js';

export interface Problem {
  field: string;
  message: string;
}

type S = {
  type?: string; properties?: Record<string, S>; items?: S; required?: string[]; enum?: unknown[];
  minimum?: number; maximum?: number; minLength?: number; maxLength?: number; minItems?: number; maxItems?: number;
  pattern?: string; format?: string; 'x-kubernetes-int-or-string'?: boolean; 'x-kubernetes-preserve-unknown-fields'?: boolean;
  'x-kubernetes-validations'?: { rule: string; message?: string; messageExpression?: string; fieldPath?: string; optionalOldSelf?: boolean }[];
  'x-kubernetes-list-type'?: string; 'x-kubernetes-list-map-keys'?: string[]; additionalProperties?: S | boolean;
};

type Obj = Record<string, any>;
const has = (o: Obj, k: string) => o !== null && typeof o === 'object' && o[k] !== undefined;

/** Why a pathPrefix or rewritePrefix is not a decoded path (the CRD's rule), or null. */
export function decodedPathProblem(p: string): string | null {
  // eslint-disable-next-line no-control-regex
  return /\/\/+[^/]|\/\.\.?(\/|;|$)|[%\\\x00-\x1f\x7f]/.test(p)
    ? "a decoded path: no '//' but trailing, no '.' or '..' segment, no '%', backslash or control character (requests holding them are refused before routing)" : null;
}

/** TypeScript twins of the CRD's CEL rules, keyed by the rule's text. */
export const celRules: Record<string, (self: any) => string | null> = {
  '!self.matches(r"//+[^/]|/[.][.]?(/|;|$)|[%\\\\\\x00-\\x1f\\x7f]")': (self: string) => (typeof self === 'string' ? decodedPathProblem(self) : null),
  // (oldSelf: an update; validate and serve read objects as made)
  "oldSelf.hasValue() || !has(self.metadata.name) || (size(self.metadata.name) <= 59 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))": (self: Obj) =>
    typeof self.metadata?.name !== 'string' || isGatewayName(self.metadata.name) ? null : gatewayNameProblem,
  '!has(self.access) || self.access.all(a, !has(a.routes) || a.routes.all(n, self.routes.exists(r, r.name == n)))': (self: Obj) => {
    const names = new Set((self.routes ?? []).map((r: Obj) => r.name));
    const unknown = (self.access ?? []).flatMap((a: Obj) => (a.routes ?? []).filter((n: string) => !names.has(n)));
    return unknown.length ? `access rules may only name routes defined in spec.routes; unknown: ${unknown.join(', ')}` : null;
  },
  '!has(self.authentication.issuers) || size(self.authentication.issuers) == 0 || (has(self.listener) && has(self.listener.tls))': (self: Obj) =>
    !(self.authentication?.issuers?.length) || has(self.listener ?? {}, 'tls') ? null : "authentication.issuers needs listener.tls: people's ID tokens are not sent over plain HTTP",
  'has(self.serviceAccounts) || has(self.groups) || has(self.users)': (self: Obj) =>
    has(self, 'serviceAccounts') || has(self, 'groups') || has(self, 'users') ? null : 'an access rule must name at least one of serviceAccounts, groups or users',
  '!has(self.notBefore) || !has(self.notAfter) || self.notBefore < self.notAfter': (self: Obj) =>
    !has(self, 'notBefore') || !has(self, 'notAfter') || !(Date.parse(self.notBefore) >= Date.parse(self.notAfter))
      ? null : 'notBefore must be earlier than notAfter',
  'self.all(r, self.exists_one(o, o.name == r.name))': (self: Obj[]) => {
    const seen = new Map<string, number>();
    for (const r of self) seen.set(r?.name, (seen.get(r?.name) ?? 0) + 1);
    const dups = [...seen].filter(([, n]) => n > 1).map(([k]) => k);
    return dups.length ? `route names must be unique; duplicated: ${dups.join(', ')}` : null;
  },
  'has(self.apiserver) != has(self.service)': (self: Obj) =>
    has(self, 'apiserver') !== has(self, 'service') ? null : 'exactly one of apiserver or service must be set',
  "has(self.serviceAccountName) == (has(self.identity) && self.identity == 'ServiceAccount')": (self: Obj) =>
    has(self, 'serviceAccountName') === (self.identity === 'ServiceAccount')
      ? null : 'serviceAccountName is required with identity ServiceAccount, and only allowed with it',
  "self in ['Impersonate', 'ServiceAccount', 'Passthrough']": (self: unknown) => {
    if (self === 'Impersonate' || self === 'ServiceAccount' || self === 'Passthrough') return null;
    return self === 'Gateway'
      ? "identity Gateway was removed: it sent requests with the operator's own credentials. Use identity ServiceAccount with serviceAccountName (a service account of this namespace), or Impersonate (the caller)"
      : 'identity must be one of Impersonate, ServiceAccount, Passthrough';
  },
  "!has(self.caRef) || (has(self.scheme) && self.scheme == 'https')": (self: Obj) =>
    !has(self, 'caRef') || self.scheme === 'https' ? null : 'caRef may only be set when scheme is https',
  "type(self) == int ? (self >= 1 && self <= 65535) : self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')": (self: unknown) =>
    (typeof self === 'number' ? self >= 1 && self <= 65535 : typeof self === 'string' && self.length <= 63 && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(self))
      ? null : 'port must be a number from 1 to 65535 or a Service port name (a DNS label)',
};

/**
 * An RFC 3339 date-time (2026-12-01T09:00:00Z, with an optional fraction and an offset) as
 * milliseconds since the epoch, or null: stricter than the apiserver's `format: date-time`, which
 * lets through a few forms a time window must not read as "no limit". The date must exist
 * (2026-02-30 is refused, not read as March 2).
 */
export function parseDateTime(v: string): number | null {
  const m = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/.exec(v);
  if (!m) return null;
  const [, y, mo, d, h, mi, s] = m.map(Number) as number[];
  const day = new Date(Date.UTC(y!, mo! - 1, d!));
  if (day.getUTCFullYear() !== y || day.getUTCMonth() !== mo! - 1 || day.getUTCDate() !== d || h! > 23 || mi! > 59 || s! > 60) return null;
  const t = Date.parse(v);
  return Number.isNaN(t) ? null : t;
}

export function isDateTime(v: string): boolean {
  return parseDateTime(v) !== null;
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

function walk(v: unknown, s: S, path: string, out: Problem[]): void {
  const at = path || '<root>';
  if (s['x-kubernetes-int-or-string']) {
    if (typeof v !== 'string' && !Number.isInteger(v)) out.push({ field: at, message: `must be an integer or a string, got ${typeName(v)}` });
  } else if (s.type) {
    const t = typeName(v);
    const ok = s.type === t || (s.type === 'number' && t === 'integer');
    if (!ok) {
      out.push({ field: at, message: `must be of type ${s.type}, got ${t}` });
      return;
    }
  }
  if (s.enum && !s.enum.includes(v)) out.push({ field: at, message: `unsupported value ${JSON.stringify(v)}: must be one of ${s.enum.map((e) => JSON.stringify(e)).join(', ')}` });
  if (typeof v === 'number') {
    if (s.minimum !== undefined && v < s.minimum) out.push({ field: at, message: `must be at least ${s.minimum}, got ${v}` });
    if (s.maximum !== undefined && v > s.maximum) out.push({ field: at, message: `must be at most ${s.maximum}, got ${v}` });
  }
  if (typeof v === 'string') {
    if (s.minLength !== undefined && v.length < s.minLength) out.push({ field: at, message: `must be at least ${s.minLength} characters long` });
    if (s.maxLength !== undefined && v.length > s.maxLength) out.push({ field: at, message: `must be at most ${s.maxLength} characters long` });
    if (s.pattern && !new RegExp(s.pattern).test(v)) out.push({ field: at, message: `${JSON.stringify(v)} does not match ${s.pattern}` });
    if (s.format === 'date-time' && !isDateTime(v)) out.push({ field: at, message: `${JSON.stringify(v)} is not an RFC 3339 date-time (e.g. 2026-12-01T09:00:00Z)` });
  }
  if (Array.isArray(v)) {
    if (s.minItems !== undefined && v.length < s.minItems) out.push({ field: at, message: `must have at least ${s.minItems} item(s)` });
    if (s.maxItems !== undefined && v.length > s.maxItems) out.push({ field: at, message: `must have at most ${s.maxItems} items, got ${v.length}` });
    if (s['x-kubernetes-list-type'] === 'map') {
      const keys = s['x-kubernetes-list-map-keys'] ?? [];
      const seen = new Set<string>();
      for (const [i, item] of v.entries()) {
        const k = JSON.stringify(keys.map((key) => (item as Obj)?.[key]));
        if (seen.has(k)) out.push({ field: `${path}[${i}]`, message: `duplicate entry for key ${keys.join(',')}=${k}` });
        seen.add(k);
      }
    }
    if (s.items) v.forEach((item, i) => walk(item, s.items!, `${path}[${i}]`, out));
  } else if (v !== null && typeof v === 'object') {
    const o = v as Obj;
    for (const r of s.required ?? []) if (o[r] === undefined) out.push({ field: path ? `${path}.${r}` : r, message: 'required field is missing' });
    if (s.properties && !s['x-kubernetes-preserve-unknown-fields']) {
      for (const k of Object.keys(o)) {
        if (!(k in s.properties)) out.push({ field: path ? `${path}.${k}` : k, message: 'unknown field' });
      }
    }
    for (const [k, p] of Object.entries(s.properties ?? {})) {
      if (o[k] !== undefined && !(path === '' && k === 'metadata')) walk(o[k], p, path ? `${path}.${k}` : k, out);
    }
  }
  for (const rule of s['x-kubernetes-validations'] ?? []) {
    const twin = celRules[rule.rule];
    if (!twin) throw new Error(`no TypeScript twin for CEL rule ${JSON.stringify(rule.rule)}`);
    const msg = twin(v);
    if (msg) out.push({ field: rule.fieldPath ? `${path}${rule.fieldPath}`.replace(/^\./, '') : at, message: msg });
  }
}

function regexes(spec: Obj, out: Problem[]): void {
  const totals = patternTotals();
  for (const [i, r] of (spec?.routes ?? []).entries()) {
    const at = `spec.routes[${i}].apiserver`;
    const lists = ['acceptPaths', 'rejectPaths', 'rejectMethods'].map((f) => [`${at}.${f}`, r?.apiserver?.[f] ?? []] as const);
    if (lists.some(([, ps]) => !Array.isArray(ps) || ps.some((p: unknown) => typeof p !== 'string'))) continue; // the schema says so
    const info = routePatterns(lists, at, totals);
    if (!('size' in info)) out.push({ field: info.field, message: info.pattern === undefined ? info.why : `invalid regex: ${info.why}` });
    if ('why' in info && info.field === 'spec.routes') return; // the gateway's bound: the rest is not compiled
  }
}

/** Every problem with an AccessGateway object; empty when it is valid. */
export function validateGateway(obj: unknown): Problem[] {
  const out: Problem[] = [];
  const o = obj as Obj;
  if (!o || typeof o !== 'object') return [{ field: '<root>', message: 'not an object' }];
  if (!o.metadata?.name) out.push({ field: 'metadata.name', message: 'required field is missing' });
  else if (typeof o.metadata.name !== 'string') out.push({ field: 'metadata.name', message: `must be a string, got ${typeName(o.metadata.name)}` });
  const ns = o.metadata?.namespace;
  if (ns !== undefined && ns !== null && ns !== '' && (typeof ns !== 'string' || !isDnsLabel(ns))) {
    out.push({ field: 'metadata.namespace', message: 'must be a DNS label (lower-case letters, digits and -, at most 63 characters)' });
  }
  walk(o, schema as S, '', out);
  // with the schema's defaults, as the cluster has them (a route's default filters are patterns too)
  if (!out.length) regexes(applyDefaults(o as AccessGateway).spec, out);
  // fields name the object's keys and messages quote its values: no control character printed raw
  return out.map((p) => ({ field: oneLine(p.field), message: oneLine(p.message) }));
}
