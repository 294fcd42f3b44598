// The oidc-token plugin against a fake identity provider on loopback (TLS with a test CA).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
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

/** A fake issuer on loopback (TLS with a test CA) answering `answer(path, grant)`; the plugin's arguments. */
async function fakeIssuer(t: TestContext, answer: (req: IncomingMessage, res: ServerResponse, grant: string, issuer: string) => void) {
  const dir = mkdtempSync(join(tmpdir(), 'agw-oidc-login-'));
  const ca = makeCA(dir, 'ca');
  const leaf = makeLeaf(dir, ca, 'idp', { cn: 'localhost', ips: ['127.0.0.1'] });
  const server = createServer({ cert: leaf.cert, key: leaf.key }, (req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      if (req.url === '/.well-known/openid-configuration' && !answerDiscovery) {
        return res.end(JSON.stringify({ issuer, token_endpoint: `${issuer}/token`, device_authorization_endpoint: `${issuer}/device` }));
      }
      answer(req, res, new URLSearchParams(body).get('grant_type') ?? '', issuer);
    });
  });
  let answerDiscovery = false;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  const issuer = `https://127.0.0.1:${(server.address() as { port: number }).port}`;
  return {
    args: ['--issuer', issuer, '--client-id', 'kubectl', '--certificate-authority', ca.certFile, '--cache-dir', join(dir, 'cache')],
    /** The discovery document is `answer`'s too. */
    answerDiscovery: () => { answerDiscovery = true; },
  };
}

/** The plugin's stderr while `run` runs. */
async function stderrOf(run: () => Promise<unknown>): Promise<string> {
  const write = process.stderr.write;
  let text = '';
  process.stderr.write = ((chunk: string | Uint8Array) => { text += String(chunk); return true; }) as typeof process.stderr.write;
  try {
    await run();
  } finally {
    process.stderr.write = write;
  }
  return text;
}

const raw = /[\u0000-\u001f\u007f-\u009f]/;

test('what the issuer says (the URL and code shown, its errors) reaches the terminal escaped', async (t) => {
  const { args } = await fakeIssuer(t, (req, res) => {
    if (req.url === '/device') {
      return res.end(JSON.stringify({ device_code: 'd', user_code: 'AB\u001b[2J', verification_uri: 'https://idp.example/\u001b]0;OWNED\u0007', interval: 1, expires_in: 5 }));
    }
    res.statusCode = 400;
    res.end(JSON.stringify({ error: 'access_denied\u009b', error_description: 'no \u001b]52;c;cm0gLXJm\u0007' }));
  });
  let message = '';
  const shown = await stderrOf(() => runOidcToken(args).catch((err: Error) => { message = err.message; }));
  assert.match(shown, /open https:\/\/idp\.example\/\\u001b\]0;OWNED\\u0007 and enter the code AB\\u001b\[2J\n$/);
  assert.match(message, /^oidc-token: login failed: access_denied\\u009b no \\u001b\]52;c;cm0gLXJm\\u0007$/);
  assert.doesNotMatch(shown.slice(0, -1) + message, raw);
});

test('an issuer\'s answers are read to at most 1 MiB, each request within its timeout (headers and body)', async (t) => {
  const big = `{"x":"${'a'.repeat(1 << 20)}"}`;
  // a discovery document past 1 MiB
  const huge = await fakeIssuer(t, (_req, res) => res.end(big));
  huge.answerDiscovery();
  await assert.rejects(runOidcToken(huge.args), /openid-configuration: the answer is longer than 1048576 bytes/);
  // a device authorization answer past it (a POST's answer is not taken for "not JSON")
  const device = await fakeIssuer(t, (_req, res) => res.end(big));
  await assert.rejects(runOidcToken(device.args), /\/device: the answer is longer than 1048576 bytes/);

  // no answer at all; headers and then nothing: each request gives up after its timeout
  const silent = await fakeIssuer(t, () => {});
  silent.answerDiscovery();
  let started = Date.now();
  await assert.rejects(runOidcToken(silent.args, { timeoutMs: 300 }), /openid-configuration did not answer within 0\.3 s/);
  assert.ok(Date.now() - started < 3_000, `${Date.now() - started} ms`);
  const trickle = await fakeIssuer(t, (_req, res) => {
    res.writeHead(200);
    res.write('{"device_code": "d", '); // and never the rest
  });
  started = Date.now();
  await assert.rejects(runOidcToken(trickle.args, { timeoutMs: 300 }), /\/device did not answer within 0\.3 s/);
  assert.ok(Date.now() - started < 3_000, `${Date.now() - started} ms`);
});
