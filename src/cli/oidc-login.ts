// access-gateway oidc-token: the exec credential plugin of an OIDC kubeconfig. Prints an ID token
// of the person's identity provider as an ExecCredential: a cached one while it lasts, else one
// got with the cached refresh token, else a new login with the device authorization grant
// (RFC 8628: the person opens a URL, on any device, and enters the code shown on stderr). Tokens
// are cached in the user's cache directory, readable by the user only; errors never carry a token.
import { createHash } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { unverifiedExpiry } from '../auth/bearer.js';
import { readCapped } from '../capped.js';
import { oneLine } from '../printable.js';
import { flag, parseFlags } from './flags.js';
import { privateDir, writePrivate } from './private-file.js';

export const oidcTokenFlags = {
  issuer: flag.string(),
  'client-id': flag.string(),
  'client-secret': flag.optional(),
  'certificate-authority': flag.optional(),
  scopes: flag.string('openid email profile groups offline_access'),
  'cache-dir': flag.optional(),
};

interface Cached { id_token?: string; refresh_token?: string }

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The most of an issuer's answer read (as src/auth/oidc.ts reads its documents), and how long one
 * request may take, answer read whole (undici's own timeouts are 300 s). */
const maxAnswerBytes = 1 << 20;
const requestTimeoutMs = 5_000;
/** The longest a device login is waited for, whatever the issuer's expires_in says. */
const maxLoginSeconds = 3600;

/** When an ID token expires (ms), 0 when it says nothing readable. */
const expiry = (idToken: string): number => (unverifiedExpiry(idToken) ?? 0) * 1000;

/** `timeoutMs`: each request's bound (tests shorten it). */
export async function runOidcToken(args: string[], { timeoutMs = requestTimeoutMs } = {}): Promise<number> {
  const f = parseFlags(args, oidcTokenFlags);
  if (!f.issuer.startsWith('https://') || !f['client-id']) throw new Error('oidc-token: --issuer https://… and --client-id are required');
  const dir = f['cache-dir'] ?? join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'access-gateway', 'oidc');
  const file = join(dir, `${createHash('sha256').update(`${f.issuer}\u0000${f['client-id']}`).digest('hex').slice(0, 32)}.json`);
  privateDir(dir); // before reading: a cache another user could write is not trusted
  let cached: Cached = {};
  try {
    cached = JSON.parse(readFileSync(file, 'utf8')) as Cached;
  } catch { /* no cache yet */ }
  const out = (t: Cached) => {
    writePrivate(file, JSON.stringify(t));
    process.stdout.write(`${JSON.stringify({ apiVersion: 'client.authentication.k8s.io/v1', kind: 'ExecCredential',
      status: { token: t.id_token, expirationTimestamp: new Date(expiry(t.id_token!)).toISOString() } })}\n`);
    return 0;
  };
  if (cached.id_token && expiry(cached.id_token) > Date.now() + 30_000) return out(cached);

  const dispatcher = new Agent({ connect: f['certificate-authority'] ? { ca: readFileSync(f['certificate-authority'], 'utf8') } : {} });
  const secret = f['client-secret'];
  // one request, its answer read whole within timeoutMs and maxAnswerBytes; a body that is not JSON is {}
  const call = async (url: string, opts: { method?: 'POST'; body?: string; headers?: Record<string, string> } = {}) => {
    const signal = AbortSignal.timeout(timeoutMs);
    try {
      const res = await request(url, { ...opts, dispatcher, signal });
      const text = (await readCapped(res.body, maxAnswerBytes, `oidc-token: ${url}`)).toString('utf8');
      let body: Record<string, any> = {};
      try {
        body = JSON.parse(text) ?? {};
      } catch { /* not JSON */ }
      return { status: res.statusCode, body: typeof body === 'object' ? body : {} };
    } catch (err) {
      if (signal.aborted) throw new Error(`oidc-token: ${url} did not answer within ${timeoutMs / 1000} s`);
      throw err;
    }
  };
  const post = (url: string, form: Record<string, string>) => call(url, {
    method: 'POST', body: new URLSearchParams({ ...form, ...(secret ? {} : { client_id: f['client-id'] }) }).toString(),
    headers: { 'content-type': 'application/x-www-form-urlencoded',
      ...(secret ? { authorization: `Basic ${Buffer.from(`${encodeURIComponent(f['client-id'])}:${encodeURIComponent(secret)}`).toString('base64')}` } : {}) },
  });
  const res = await call(`${f.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`);
  const discovery = res.body as { issuer?: string; token_endpoint?: string; device_authorization_endpoint?: string };
  if (res.status !== 200 || discovery.issuer !== f.issuer) throw new Error(`oidc-token: ${f.issuer} has no OpenID discovery document naming it (HTTP ${res.status})`);
  const tokenEndpoint = discovery.token_endpoint;
  const https = (u: string | undefined): u is string => typeof u === 'string' && u.startsWith('https://');
  if (!https(tokenEndpoint)) throw new Error(`oidc-token: ${f.issuer} names no https token_endpoint`);
  if (discovery.device_authorization_endpoint !== undefined && !https(discovery.device_authorization_endpoint)) {
    throw new Error(`oidc-token: ${f.issuer} names a device_authorization_endpoint that is not https`);
  }

  if (cached.refresh_token) {
    const r = await post(tokenEndpoint, { grant_type: 'refresh_token', refresh_token: cached.refresh_token });
    if (r.status === 200 && r.body.id_token) return out({ id_token: r.body.id_token, refresh_token: r.body.refresh_token ?? cached.refresh_token });
    // refused (revoked, expired): not kept, whether or not the login below completes
    if (r.body.error === 'invalid_grant') rmSync(file, { force: true });
  }
  if (!discovery.device_authorization_endpoint) throw new Error(`oidc-token: ${f.issuer} offers no device authorization grant; log in another way`);
  const d = await post(discovery.device_authorization_endpoint, { scope: f.scopes });
  // the issuer's words are shown escaped: an ESC in them would reach the person's terminal
  const said = (v: unknown) => oneLine(String(v ?? ''));
  if (d.status !== 200) throw new Error(`oidc-token: device authorization refused (HTTP ${d.status} ${said(d.body.error)}: ${said(d.body.error_description)})`);
  process.stderr.write(`To log in to ${said(f.issuer)}, open ${said(d.body.verification_uri_complete ?? d.body.verification_uri)} and enter the code ${said(d.body.user_code)}\n`);
  let interval = Math.min(60, Math.max(1, Number(d.body.interval) || 5)) * 1000;
  const until = Date.now() + Math.min(maxLoginSeconds, Number(d.body.expires_in) || 600) * 1000;
  while (Date.now() < until) {
    await sleep(interval);
    const t = await post(tokenEndpoint, { grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: d.body.device_code });
    if (t.status === 200) {
      if (!t.body.id_token) throw new Error('oidc-token: the provider answered without an ID token (is the openid scope allowed?)');
      return out({ id_token: t.body.id_token, refresh_token: t.body.refresh_token });
    }
    if (t.body.error === 'slow_down') interval += 5_000;
    else if (t.body.error !== 'authorization_pending') throw new Error(`oidc-token: login failed: ${said(t.body.error)} ${said(t.body.error_description)}`);
  }
  throw new Error('oidc-token: the login was not completed in time');
}
