// The oidc-token plugin against a fake identity provider on loopback (TLS with a test CA).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:https';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runOidcToken } from '../../src/cli/oidc-login.js';
import { makeCA, makeLeaf } from '../support/certs.js';

test('a refresh token the provider refuses (invalid_grant) is not kept, even when the new login fails', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'agw-oidc-login-'));
  const ca = makeCA(dir, 'ca');
  const leaf = makeLeaf(dir, ca, 'idp', { cn: 'localhost', ips: ['127.0.0.1'] });
  const seen: string[] = [];
  const server = createServer({ cert: leaf.cert, key: leaf.key }, (req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      seen.push(`${req.method} ${req.url} ${new URLSearchParams(body).get('grant_type') ?? ''}`);
      res.setHeader('content-type', 'application/json');
      if (req.url === '/.well-known/openid-configuration') {
        res.end(JSON.stringify({ issuer, token_endpoint: `${issuer}/token`, device_authorization_endpoint: `${issuer}/device` }));
      } else if (req.url === '/token') {
        res.statusCode = 400;
        res.end(JSON.stringify({ error: 'invalid_grant' }));
      } else {
        res.statusCode = 400; // the device login fails too
        res.end(JSON.stringify({ error: 'unauthorized_client' }));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.after(() => server.close());
  const issuer = `https://127.0.0.1:${(server.address() as { port: number }).port}`;
  const cache = join(dir, 'cache');
  const args = ['--issuer', issuer, '--client-id', 'kubectl', '--certificate-authority', ca.certFile, '--cache-dir', cache];
  // a first run makes the private cache directory (and fails at the device login)
  await assert.rejects(runOidcToken(args), /device authorization refused/);
  const name = join(cache, `${createHash('sha256').update(`${issuer}\u0000kubectl`).digest('hex').slice(0, 32)}.json`);
  writeFileSync(name, JSON.stringify({ refresh_token: 'revoked' }), { mode: 0o600 });
  await assert.rejects(runOidcToken(args), /device authorization refused/);
  assert.ok(seen.includes('POST /token refresh_token'), seen.join('; '));
  assert.equal(existsSync(name), false, 'the refused refresh token was kept');
});
