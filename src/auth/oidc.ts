// OIDC issuers configured by the platform (operator configuration: the `jwt` list of the
// apiserver's AuthenticationConfiguration, pasted as is). A platform source may name any identity
// except system:* ones and team:* ones (a team's client CA's), refused whatever the mappings say.
// Discovery and keys are fetched from the issuer (with its CA), cached, refreshed on an unknown
// kid at most every 10 s, and an issuer that cannot be reached fails closed (503 for tokens not
// cached yet).
import { parse } from '@bufbuild/cel';
import { decodeJwt, errors as jose, jwtVerify, type JSONWebKeySet, type JWTPayload } from 'jose';
import { readCapped } from '../capped.js';
import { Agent } from '../undici.js';
import { gatewayExtraKeys } from '../api/labels.js';
import { isTeamName, teamRoot } from '../api/names.js';
import { AuthUnavailableError, UnauthenticatedError } from '../errors.js';
import { compileCel, type CelProgram } from './cel.js';
import { IssuerKeys } from './issuer-keys.js';
import { unforwardableIdentity, type CallerIdentity } from './identity.js';

/** One entry of AuthenticationConfiguration.jwt (apiserver.config.k8s.io/v1). */
export interface JwtAuthenticator {
  issuer: { url: string; discoveryURL?: string; certificateAuthority?: string; audiences: string[]; audienceMatchPolicy?: string };
  claimValidationRules?: { claim?: string; requiredValue?: string; expression?: string; message?: string }[];
  claimMappings: {
    username: { claim?: string; prefix?: string; expression?: string };
    groups?: { claim?: string; prefix?: string; expression?: string };
    uid?: { claim?: string; expression?: string };
    extra?: { key: string; valueExpression: string }[];
  };
  userValidationRules?: { expression: string; message?: string }[];
}

type Mapping = { claim: string; prefix: string } | { program: CelProgram } | null;

/** What jose says about the token itself (a 401); every other failure is the issuer's (503). */
const tokenErrors = [jose.JWTExpired, jose.JWTClaimValidationFailed, jose.JWTInvalid, jose.JWSInvalid, jose.JWSSignatureVerificationFailed,
  jose.JOSEAlgNotAllowed, jose.JOSENotSupported, jose.JWKSMultipleMatchingKeys];
const algorithms = ['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512', 'EdDSA'];

/** Keys tried for a token that names none (or a kid several keys share), at most. */
export const maxKeysTried = 4;

/** A token no one key is chosen for (no kid, and several of the issuer's keys of its alg; or a
 * kid they share) checked against each, as the apiserver does: the first whose signature holds
 * decides (its claims too); none: the last refusal. */
async function verifyEach(token: string, err: InstanceType<typeof jose.JWKSMultipleMatchingKeys>, checks: Parameters<typeof jwtVerify>[2]): Promise<JWTPayload> {
  let last: unknown = err, n = 0;
  for await (const key of err as unknown as AsyncIterable<Parameters<typeof jwtVerify>[1] & object>) {
    if (++n > maxKeysTried) break;
    try {
      return (await jwtVerify(token, key, checks)).payload;
    } catch (e) {
      if (!(e instanceof jose.JWSSignatureVerificationFailed)) throw e;
      last = e;
    }
  }
  throw last;
}

/** Compiles a mapping: a claim (with its prefix, which must be given, as the apiserver requires) or a CEL expression. */
function mapping(m: { claim?: string; prefix?: string; expression?: string } | undefined, field: string, prefixRequired: boolean): Mapping {
  if (!m || (m.claim === undefined && m.expression === undefined)) return null;
  if (m.claim !== undefined && m.expression !== undefined) throw new Error(`${field}: claim and expression are mutually exclusive`);
  if (m.expression !== undefined) {
    if (m.prefix !== undefined) throw new Error(`${field}.prefix: may only be set with claim`);
    return { program: compile(m.expression, `${field}.expression`) };
  }
  if (prefixRequired && m.prefix === undefined) throw new Error(`${field}.prefix: required when claim is set (it may be "")`);
  return { claim: m.claim!, prefix: m.prefix ?? '' };
}

function compile(source: string, field: string): CelProgram {
  try {
    return compileCel(source);
  } catch (err) {
    throw new Error(`${field}: ${(err as Error).message}`);
  }
}

/**
 * The claims an expression reads by a name written in it: `claims.NAME`, `has(claims.NAME)`,
 * `claims["NAME"]` (and `claims.?NAME`, should the parser take it), wherever they stand. Read from
 * the parsed expression, not its text: `claims.emailx`, `claims.email_verified`, `'claims.email'` (a
 * string) and `x.claims.email` do not read claims.email. The apiserver counts selects only;
 * `claims["email"]` is the same read, so it counts here (a username made so is refused, where the
 * apiserver would take it), and `claims["email_verified"]` likewise. A name computed when it runs
 * (`claims['em' + 'ail']`) is not seen, nor by the apiserver. `source` has compiled already.
 */
function claimsRead(source: string): Set<string> {
  const names = new Set<string>();
  const isClaims = (e: unknown) => {
    const k = (e as { exprKind?: { case?: string; value?: { name?: string } } } | undefined)?.exprKind;
    return k?.case === 'identExpr' && k.value?.name === 'claims';
  };
  const walk = (node: unknown): void => {
    if (!node || typeof node !== 'object' || ArrayBuffer.isView(node)) return;
    const kind = (node as { exprKind?: { case?: string; value?: Record<string, unknown> } }).exprKind;
    if (kind?.case === 'selectExpr' && isClaims(kind.value?.operand)) names.add(String(kind.value!.field));
    if (kind?.case === 'callExpr' && ['_[_]', '_?._', '_[?_]'].includes(String(kind.value?.function))) {
      const [on, key] = kind.value!.args as unknown[];
      const c = (key as { exprKind?: { case?: string; value?: { constantKind?: { case?: string; value?: unknown } } } } | undefined)?.exprKind;
      if (isClaims(on) && c?.case === 'constExpr' && c.value?.constantKind?.case === 'stringValue') names.add(String(c.value.constantKind.value));
    }
    for (const v of Object.values(node)) walk(v);
  };
  walk(parse(source).expr);
  return names;
}

export class OidcIssuer {
  readonly url: string;
  private readonly audiences: string[];
  private readonly username: Mapping;
  private readonly groups: Mapping;
  private readonly uid: Mapping;
  private readonly extra: { key: string; program: CelProgram }[];
  private readonly claimRules: ({ claim: string; value: string } | { program: CelProgram; message: string })[];
  private readonly userRules: { program: CelProgram; message: string }[];
  private readonly dispatcher: Agent;
  private keys: IssuerKeys | null = null;
  private discovering: Promise<IssuerKeys> | null = null;
  private failedAt = -Infinity;

  /** Checks and compiles the configuration; throws with the field and the compiler's message. */
  constructor(private readonly cfg: JwtAuthenticator, private readonly now: () => number = Date.now) {
    const url = cfg.issuer?.url;
    if (typeof url !== 'string' || !/^https:\/\/[^?#]+$/.test(url)) throw new Error('issuer.url: an https URL without query or fragment is required');
    this.url = url;
    if (cfg.issuer.discoveryURL !== undefined && !/^https:\/\/[^?#]+$/.test(cfg.issuer.discoveryURL)) throw new Error('issuer.discoveryURL: an https URL is required');
    if (!Array.isArray(cfg.issuer.audiences) || !cfg.issuer.audiences.length) throw new Error('issuer.audiences: at least one is required');
    this.audiences = cfg.issuer.audiences;
    if (!cfg.claimMappings?.username) throw new Error('claimMappings.username: required');
    this.username = mapping(cfg.claimMappings.username, 'claimMappings.username', true);
    if (!this.username) throw new Error('claimMappings.username: claim or expression is required');
    this.groups = mapping(cfg.claimMappings.groups, 'claimMappings.groups', true);
    this.uid = mapping(cfg.claimMappings.uid, 'claimMappings.uid', false);
    this.extra = (cfg.claimMappings.extra ?? []).map((e, i) => {
      if (!/^[a-z0-9.-]+\/[a-z0-9._/-]+$/.test(e.key ?? '')) throw new Error(`claimMappings.extra[${i}].key: a domain-prefixed lower-case path is required`);
      if (gatewayExtraKeys.has(e.key.toLowerCase())) throw new Error(`claimMappings.extra[${i}].key: ${e.key} is the gateway's own`);
      if (/^([^/]*\.)?(kubernetes\.io|k8s\.io)\//.test(e.key)) throw new Error(`claimMappings.extra[${i}].key: the kubernetes.io and k8s.io domains are reserved`);
      return { key: e.key, program: compile(e.valueExpression, `claimMappings.extra[${i}].valueExpression`) };
    });
    this.claimRules = (cfg.claimValidationRules ?? []).map((r, i) => (r.expression !== undefined
      ? { program: compile(r.expression, `claimValidationRules[${i}].expression`), message: r.message ?? `claimValidationRules[${i}] failed` }
      : { claim: r.claim ?? '', value: r.requiredValue ?? '' }));
    // the apiserver's rule: a username made from claims.email by an expression (the claim form is
    // checked per token below) needs the configuration to read claims.email_verified somewhere the
    // claims are checked or mapped, or an unverified address would be someone's username
    const usernameReads = 'program' in this.username ? claimsRead(this.username.program.source) : new Set<string>();
    if (usernameReads.has('email') && !usernameReads.has('email_verified')
      && ![...this.extra.map((e) => e.program), ...this.claimRules.flatMap((r) => ('program' in r ? [r.program] : []))]
        .some((p) => claimsRead(p.source).has('email_verified'))) {
      throw new Error('claimMappings.username.expression: it reads claims.email, so claims.email_verified must be read in claimMappings.username.expression, '
        + 'claimMappings.extra[*].valueExpression or claimValidationRules[*].expression (as the apiserver requires: else an unverified address is a username)');
    }
    this.userRules = (cfg.userValidationRules ?? []).map((r, i) => ({
      program: compile(r.expression, `userValidationRules[${i}].expression`), message: r.message ?? `userValidationRules[${i}] failed` }));
    this.dispatcher = new Agent({ connect: cfg.issuer.certificateAuthority ? { ca: cfg.issuer.certificateAuthority } : {}, connections: 4 });
  }

  /** The caller a token of this issuer names, and until when (ms) that may be cached. */
  async authenticate(token: string): Promise<{ id: CallerIdentity; expiresAt: number }> {
    const keys = await this.keySet();
    const loads = keys.loads;
    let payload: JWTPayload;
    const checks = { issuer: this.url, audience: this.audiences, algorithms, clockTolerance: 5, requiredClaims: ['exp'] };
    try {
      try {
        ({ payload } = await jwtVerify(token, keys.getKey, checks));
      } catch (err) {
        if (!(err instanceof jose.JWKSMultipleMatchingKeys)) throw err;
        payload = await verifyEach(token, err, checks);
      }
    } catch (err) {
      if (err instanceof jose.JWKSNoMatchingKey) this.unknownKey(token, keys, loads);
      if (tokenErrors.some((E) => err instanceof E)) throw new UnauthenticatedError(`invalid bearer token: ${(err as Error).message}`);
      // anything else is the issuer's keys not being had (network, HTTP status, bad key set): not the token's fault
      throw new AuthUnavailableError(`issuer ${this.url} cannot be reached for its keys`, { cause: err, retryAfterSeconds: 5 });
    }
    return { id: this.identity(payload), expiresAt: (payload.exp ?? 0) * 1000 };
  }

  /** A kid not in the key set: the token's fault (401) if the keys were fetched for it, or predate
   * it; else a rotation not fetched yet because the last fetch is under 10 s old (anyone's token
   * with a made-up kid can cause one), so 503 until the next fetch is allowed. */
  private unknownKey(token: string, keys: IssuerKeys, loadsBefore: number): never {
    let iat: unknown;
    try { iat = decodeJwt(token).iat; } catch { /* no iat: the token's fault */ }
    const now = this.now();
    // (an iat in the future is forged: such a token is 401, not a 503 anyone could ask for)
    if (keys.loads === loadsBefore && typeof iat === 'number' && iat * 1000 > keys.loadedAt - 5_000 && iat * 1000 <= now + 5_000) {
      const retryAfterSeconds = Math.min(10, Math.max(1, Math.ceil((keys.attemptedAt + keys.gapMs - now) / 1000)));
      throw new AuthUnavailableError(`issuer ${this.url}: the token's key is not among the keys fetched ${Math.round((now - keys.loadedAt) / 1000)} s ago; fetched again shortly`,
        { retryAfterSeconds });
    }
    throw new UnauthenticatedError(`invalid bearer token: no key of issuer ${this.url} matches it`);
  }

  /** The claims mapped as the apiserver maps them, then the rule it recommends and we enforce. */
  identity(claims: JWTPayload): CallerIdentity {
    const refuse = (why: string): never => { throw new UnauthenticatedError(`invalid bearer token: ${why}`); };
    for (const r of this.claimRules) {
      if ('claim' in r) { if (claims[r.claim] !== r.value) refuse(`claim ${r.claim} must be ${JSON.stringify(r.value)}`); }
      else if (this.eval(r.program, { claims }) !== true) refuse(r.message);
    }
    const username = this.one(this.username!, claims, 'username');
    if (typeof username !== 'string' || !username) return refuse('the username mapping gives no username');
    const m = this.username!;
    if ('claim' in m && m.claim === 'email' && claims.email_verified !== undefined && claims.email_verified !== true) refuse('email_verified is not true');
    const groups = this.groups ? this.many(this.groups, claims, 'groups') : [];
    const uid = this.uid ? this.one(this.uid, claims, 'uid') : '';
    const extra: Record<string, string[]> = {};
    for (const e of this.extra) {
      const v = this.eval(e.program, { claims });
      const values = (Array.isArray(v) ? v : v === undefined || v === null || v === '' ? [] : [v]).map(String).filter(Boolean);
      if (values.length) extra[e.key] = values;
    }
    const id: CallerIdentity = { username, uid: typeof uid === 'string' ? uid : '', groups, extra };
    // names travel as header values: checked before the system: rule, which must see them as the apiserver will
    const why = unforwardableIdentity(id);
    if (why) refuse(`the mapped ${why}`);
    // platform sources may name anyone but the cluster's own identities and the teams' (team:NS:
    // names come only from a team's client CA: one issuer naming team:b:x would act as team b's)
    const reserved = reservedPrefix(id.username);
    if (reserved) refuse(`issuer ${this.url} may not name ${reserved} users (${id.username})`);
    for (const g of id.groups) {
      const r = reservedPrefix(g);
      if (r) refuse(`issuer ${this.url} may not name ${r} groups (${g})`);
    }
    for (const r of this.userRules) if (this.eval(r.program, { user: id }) !== true) refuse(r.message);
    return id;
  }

  private eval(p: CelProgram, vars: Record<string, unknown>): unknown {
    try {
      return p.run(vars);
    } catch (err) {
      throw new UnauthenticatedError(`invalid bearer token: ${(err as Error).message}`);
    }
  }

  private one(m: NonNullable<Mapping>, claims: JWTPayload, what: string): unknown {
    if ('program' in m) return this.eval(m.program, { claims });
    const v = claims[m.claim];
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw new UnauthenticatedError(`invalid bearer token: claim ${m.claim} (${what}) is not a string`);
    return m.prefix + v;
  }

  private many(m: NonNullable<Mapping>, claims: JWTPayload, what: string): string[] {
    const v = 'program' in m ? this.eval(m.program, { claims }) : claims[m.claim];
    const list = v === undefined || v === null ? [] : Array.isArray(v) ? v : [v];
    if (list.some((x) => typeof x !== 'string')) throw new UnauthenticatedError(`invalid bearer token: ${what} are not strings`);
    return [...new Set((list as string[]).map((g) => ('claim' in m ? m.prefix + g : g)))];
  }

  /** Discovery once (retried at most every 5 s after a failure), then the remote key set. */
  private async keySet(): Promise<IssuerKeys> {
    if (this.keys) return this.keys;
    if (!this.discovering) {
      if (this.now() - this.failedAt < 5_000) throw new AuthUnavailableError(`issuer ${this.url} discovery failed recently; retrying shortly`, { retryAfterSeconds: 5 });
      this.discovering = this.discover().then((k) => (this.keys = k), (err) => {
        this.failedAt = this.now();
        throw new AuthUnavailableError(`issuer ${this.url} cannot be reached for its discovery document`, { cause: err, retryAfterSeconds: 5 });
      }).finally(() => { this.discovering = null; });
    }
    return this.discovering;
  }

  private async discover(): Promise<IssuerKeys> {
    const where = this.cfg.issuer.discoveryURL ?? `${this.url.replace(/\/$/, '')}/.well-known/openid-configuration`;
    const doc = await getJSON(where, this.dispatcher) as { issuer?: string; jwks_uri?: string };
    if (doc.issuer !== this.url) throw new Error(`${where} names issuer ${JSON.stringify(doc.issuer)}, not ${this.url}`);
    if (!doc.jwks_uri?.startsWith('https://')) throw new Error(`${where}: no https jwks_uri`);
    const uri = doc.jwks_uri;
    return new IssuerKeys(async () => await getJSON(uri, this.dispatcher) as JSONWebKeySet, this.now);
  }
}

/** The most of an issuer's discovery document or key set read, and of redirects followed. */
const maxIssuerDocBytes = 1 << 20;
const maxRedirects = 3;

/** GETs `url`'s JSON: redirects followed only to https (an issuer's answer sends the operator
 * nowhere else, a plain-http address inside the cluster say), at most `maxIssuerDocBytes` read. */
export async function getJSON(url: string, dispatcher: Agent, redirects = maxRedirects, signal = AbortSignal.timeout(5_000)): Promise<unknown> {
  const u = new URL(url);
  const res = await dispatcher.request({ origin: u.origin, path: `${u.pathname}${u.search}`, method: 'GET', signal });
  const location = res.headers.location;
  if (res.statusCode >= 300 && res.statusCode < 400 && typeof location === 'string') {
    await res.body.dump();
    const next = new URL(location, url);
    if (next.protocol !== 'https:') throw new Error(`${url}: redirected to ${next.protocol} (only https is followed)`);
    if (redirects <= 0) throw new Error(`${url}: more than ${maxRedirects} redirects`);
    return getJSON(next.href, dispatcher, redirects - 1, signal); // (5 s in all)
  }
  if (res.statusCode < 200 || res.statusCode > 299) {
    await res.body.dump();
    throw new Error(`${url}: HTTP ${res.statusCode}`);
  }
  return JSON.parse((await readCapped(res.body, maxIssuerDocBytes, url)).toString('utf8'));
}

/** The platform's issuers by URL: each compiled, or why it cannot be used. */
export class OidcIssuers {
  private readonly byUrl = new Map<string, OidcIssuer | { problem: string }>();

  constructor(config: { jwt?: JwtAuthenticator[] } | undefined) {
    (config?.jwt ?? []).forEach((cfg, i) => {
      const url = cfg?.issuer?.url;
      const key = typeof url === 'string' ? url : `jwt[${i}]`;
      if (this.byUrl.has(key)) {
        this.byUrl.set(key, { problem: `jwt[${i}]: issuer ${key} is configured twice` });
        return;
      }
      try {
        this.byUrl.set(key, new OidcIssuer(cfg));
      } catch (err) {
        this.byUrl.set(key, { problem: `jwt[${i}] (${key}): ${(err as Error).message}` });
      }
    });
  }

  get(url: string): OidcIssuer | { problem: string } | undefined {
    return this.byUrl.get(url);
  }

  /** For translate: each issuer URL, and its problem if it has one. */
  states(): Record<string, string | null> {
    return Object.fromEntries([...this.byUrl].map(([u, x]) => [u, 'problem' in x ? x.problem : null]));
  }
}

/** The prefix of names only the cluster (system:) or a team's client CA (team:) may give. */
function reservedPrefix(name: string): string | undefined {
  return name.startsWith('system:') ? 'system:' : isTeamName(name) ? teamRoot : undefined;
}
