// A real OpenID provider for the tests: panva's certified oidc-provider, on HTTPS on loopback with
// a test CA. Users log in without a browser through CIBA (Client Initiated Backchannel
// Authentication, poll mode): the test names the user (login_hint), the provider's
// "authentication device" approves at once, and the client collects a real signed ID token.
import { createServer, type Server } from 'node:https';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';
import { Agent, request } from 'undici';
import { makeCA, makeLeaf, type CertPair } from './certs.js';

export interface OidcAccount { email?: string; email_verified?: boolean; groups?: string[]; [claim: string]: unknown }

export interface OidcProvider {
  issuer: string;
  /** PEM of the CA that signed the provider's serving certificate. */
  ca: CertPair;
  clientId: string;
  /** A fresh ID token for `user` (an account of the provider). */
  idToken(user: string): Promise<string>;
  /** What the person does in a browser with the code a device login shows: approve it as `user`. */
  approveDevice(userCode: string, user: string): Promise<void>;
  /** Restarts with a new signing key (same issuer, port and accounts). */
  rotateKeys(): Promise<void>;
  stop(): Promise<void>;
  start(): Promise<void>;
}

async function signingKey(kid: string) {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  return { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
}

export async function startOidcProvider(accounts: Record<string, OidcAccount>, opts: { clientId?: string } = {}): Promise<OidcProvider> {
  const dir = mkdtempSync(join(tmpdir(), 'agw-oidc-'));
  const ca = makeCA(dir, 'oidc-ca');
  const serving = makeLeaf(dir, ca, 'oidc', { cn: 'oidc', ips: ['127.0.0.1'], dnsNames: ['localhost'] });
  const clientId = opts.clientId ?? 'kubernetes';
  const clientSecret = 'not-a-secret-test-client';
  let server: Server | undefined;
  let port = 0;
  let key = await signingKey('key-1');
  let generation = 1;
  const dispatcher = new Agent({ connect: { ca: ca.cert } });

  const provider = (issuer: string) => {
    const p: any = new (Provider as any)(issuer, {
      clients: [{
        client_id: clientId, client_secret: clientSecret, grant_types: ['urn:openid:params:grant-type:ciba'], response_types: [], redirect_uris: [],
        backchannel_token_delivery_mode: 'poll', token_endpoint_auth_method: 'client_secret_basic',
      }, {
        // what a command-line tool registers: public, device flow, refresh tokens
        client_id: `${clientId}-cli`, token_endpoint_auth_method: 'none', response_types: [], redirect_uris: [],
        grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
      }],
      scopes: ['openid', 'offline_access', 'email', 'groups', 'profile'],
      features: {
        devInteractions: { enabled: false },
        deviceFlow: { enabled: true },
        ciba: {
          enabled: true, deliveryModes: ['poll'],
          processLoginHint: async (_ctx: unknown, hint: string) => (accounts[hint] ? hint : undefined),
          verifyUserCode: async () => {},
          validateRequestContext: async () => {},
          validateBindingMessage: async () => {},
          // the user's device approves at once
          triggerAuthenticationDevice: async (_ctx: unknown, req: any, account: any, client: any) => {
            const grant = new p.Grant({ accountId: account.accountId, clientId: client.clientId });
            grant.addOIDCScope('openid email groups profile');
            await grant.save();
            await p.backchannelResult(req, grant);
          },
        },
      },
      findAccount: async (_ctx: unknown, id: string) => (accounts[id] ? { accountId: id, claims: async () => ({ sub: id, ...accounts[id] }) } : undefined),
      claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'], profile: ['name', 'preferred_username'] },
      conformIdTokenClaims: false, // the claims go into the ID token itself
      jwks: { keys: [key] },
      // an account with `shortLived` gets ID tokens of 2 s
      ttl: {
        IdToken: (_ctx: unknown, t: any) => (accounts[t.available?.sub]?.shortLived ? 2 : 600),
        AccessToken: (_ctx: unknown, t: any) => (accounts[t.accountId]?.shortLived ? 2 : 600), // the ID token of a grant ends with it
        BackchannelAuthenticationRequest: 60, Grant: 600,
      },
    });
    return p;
  };

  let current: any;
  const start = async () => {
    const srv = createServer({ cert: serving.cert, key: serving.key });
    await new Promise<void>((resolve) => srv.listen(port, '127.0.0.1', resolve));
    port = (srv.address() as { port: number }).port;
    current = provider(`https://127.0.0.1:${port}`);
    srv.on('request', current.callback());
    server = srv;
  };
  const stop = async () => {
    const srv = server;
    server = undefined;
    if (!srv) return;
    srv.closeAllConnections();
    await new Promise<void>((resolve) => srv.close(() => resolve()));
  };
  await start();
  const issuer = `https://127.0.0.1:${port}`;
  const basic = `Basic ${Buffer.from(`${clientId}:${clientSecret}`).toString('base64')}`;
  const post = async (path: string, form: Record<string, string>) => {
    const res = await request(`${issuer}${path}`, {
      method: 'POST', dispatcher, body: new URLSearchParams(form).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic },
    });
    return { status: res.statusCode, body: await res.body.json() as any };
  };

  return {
    issuer, ca, clientId,
    async idToken(user) {
      const auth = await post('/backchannel', { scope: 'openid email groups profile', login_hint: user });
      if (auth.status !== 200) throw new Error(`CIBA request for ${user}: ${auth.status} ${JSON.stringify(auth.body)}`);
      for (let i = 0; i < 50; i++) {
        const t = await post('/token', { grant_type: 'urn:openid:params:grant-type:ciba', auth_req_id: auth.body.auth_req_id });
        if (t.status === 200) return t.body.id_token as string;
        if (t.body.error !== 'authorization_pending' && t.body.error !== 'slow_down') throw new Error(`token for ${user}: ${t.status} ${JSON.stringify(t.body)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
      throw new Error(`token for ${user}: still pending`);
    },
    async approveDevice(userCode, user) {
      // the provider's own device-verification pages would do this after a browser login
      const code = await current.DeviceCode.findByUserCode(userCode.replace(/[^A-Z]/gi, '').toUpperCase());
      if (!code) throw new Error(`no device login with code ${userCode}`);
      const grant = new current.Grant({ accountId: user, clientId: code.clientId });
      grant.addOIDCScope(code.params.scope);
      Object.assign(code, { accountId: user, authTime: Math.floor(Date.now() / 1000), grantId: await grant.save(), scope: code.params.scope });
      await code.save();
    },
    async rotateKeys() {
      await stop();
      key = await signingKey(`key-${++generation}`);
      await start();
    },
    stop, start,
  };
}
