import { test } from 'node:test';
import assert from 'node:assert/strict';
import { callerImpersonation, escapeExtraKey, forwardRequestHeaders, leanImpersonation, overrideHeader, forwardResponseHeaders, groupsToSend, impersonationHeaders, serviceAccountHeaders } from '../../src/dataplane/headers.js';

test('identity, hop-by-hop and Connection-named headers never cross', () => {
  const out = forwardRequestHeaders({
    authorization: 'Bearer x', 'impersonate-user': 'admin', 'impersonate-group': 'system:masters',
    'impersonate-extra-scopes': 'a', 'impersonate-uid': '1', 'x-remote-user': 'admin', 'x-remote-group': 'g',
    connection: 'keep-alive, x-secret', 'x-secret': 's', 'keep-alive': 'timeout=5', te: 'trailers',
    'transfer-encoding': 'chunked', upgrade: 'websocket', 'proxy-authorization': 'p', 'x-forwarded-for': '1.2.3.4',
    forwarded: 'for=127.0.0.1;proto=https;host=admin.internal', 'x-real-ip': '127.0.0.1', 'x-client-ip': '127.0.0.1', 'true-client-ip': '127.0.0.1', x_real_ip: '127.0.0.1',
    host: 'evil', accept: 'application/json', 'content-type': 'application/json',
    'remote-user': 'admin', 'x-webauth-user': 'admin', 'x-auth-request-user': 'admin', 'x-auth-request-groups': 'admins', x_auth_request_email: 'a@b',
    // where oauth2-proxy (a route's backend) sends the browser after its login: not an identity
    'x-auth-request-redirect': '/app',
  }, false);
  assert.deepEqual(out, { accept: 'application/json', 'content-type': 'application/json', 'x-auth-request-redirect': '/app' });
});

test('a header that overrides the method or path (some backends read it instead of the request line) is found, also spelt with "_"', () => {
  for (const h of ['x-http-method-override', 'x-http-method', 'x-method-override', 'x-original-url', 'x-rewrite-url', 'x_http_method_override', 'x_original_url']) {
    assert.equal(overrideHeader({ accept: 'a', [h]: 'DELETE' }), h);
  }
  assert.equal(overrideHeader({ accept: 'a', 'x-request-id': 'r', 'x-forwarded-for': '1.2.3.4' }), undefined);
});

test('names with "_" that an upstream may read as framing or hop-by-hop headers never cross; other "_" names do', () => {
  const out = forwardRequestHeaders({
    transfer_encoding: 'chunked', content_length: '5', keep_alive: 'x', proxy_authorization: 'p', proxy_connection: 'close', http2_settings: 's',
    'content-length': '5', x_request_id: 'r1', accept: 'a',
  }, false);
  assert.deepEqual(out, { 'content-length': '5', x_request_id: 'r1', accept: 'a' });
});

test('a client\'s Audit-ID never crosses (the apiserver would take it as its audit event\'s ID), also spelt with "_"', () => {
  assert.deepEqual(forwardRequestHeaders({ 'audit-id': 'chosen', audit_id: 'chosen', accept: 'a' }, true), { accept: 'a' });
});

test('lean impersonation (--audit-extras none): a service account with exactly its own groups by its name alone; anyone else as in full', () => {
  const sa = { username: 'system:serviceaccount:team-a:app', uid: 'u1', groups: ['system:serviceaccounts', 'system:serviceaccounts:team-a', 'system:authenticated'],
    extra: { 'authentication.kubernetes.io/credential-id': ['JTI=1'], 'authentication.kubernetes.io/pod-name': ['p'] } };
  assert.deepEqual(leanImpersonation(sa), { 'impersonate-user': 'system:serviceaccount:team-a:app' });
  assert.equal(callerImpersonation(sa)['impersonate-uid'], 'u1', 'full impersonation of the same caller is unchanged');
  // another group (or another namespace's): the apiserver would not add it, so it is sent, with the rest
  const more = { ...sa, groups: [...sa.groups, 'team-a:leads'] };
  assert.deepEqual(leanImpersonation(more), callerImpersonation(more));
  assert.deepEqual(leanImpersonation(more)['impersonate-group'], ['system:serviceaccounts', 'system:serviceaccounts:team-a', 'team-a:leads']);
  const other = { ...sa, groups: ['system:serviceaccounts', 'system:serviceaccounts:team-b'] };
  assert.equal(leanImpersonation(other)['impersonate-uid'], 'u1');
  const person = { username: 'corp:alice', uid: '', groups: ['corp:dev'], extra: { 'corp/team': ['a'] } };
  assert.deepEqual(leanImpersonation(person), callerImpersonation(person));
  assert.deepEqual(leanImpersonation(person)['impersonate-group'], ['corp:dev']);
  // a person with no group of its own keeps its UID and extras
  const alone = { username: 'corp:bob', uid: 'u9', groups: ['system:authenticated'], extra: { 'corp/team': ['b'] } };
  assert.deepEqual(leanImpersonation(alone), { 'impersonate-user': 'corp:bob', 'impersonate-uid': 'u9', 'impersonate-extra-corp%2Fteam': ['b'] });
});

test('Passthrough keeps Authorization but still strips impersonation', () => {
  const out = forwardRequestHeaders({ authorization: 'Bearer x', 'impersonate-user': 'admin' }, true);
  assert.deepEqual(out, { authorization: 'Bearer x' });
});

test('response headers lose hop-by-hop headers', () => {
  assert.deepEqual(forwardResponseHeaders({ 'content-type': 'a', connection: 'close', 'transfer-encoding': 'chunked' }), { 'content-type': 'a' });
});

test('impersonation headers carry user, groups, uid and escaped extras', () => {
  const h = impersonationHeaders({ username: 'system:serviceaccount:a:b', uid: 'u1', groups: ['g1', 'g2'], extra: { 'authentication.kubernetes.io/pod-name': ['p'] } },
    { 'access-gateway.io/gateway': 'a/gw' });
  assert.deepEqual(h, {
    'impersonate-user': 'system:serviceaccount:a:b', 'impersonate-group': ['g1', 'g2'], 'impersonate-uid': 'u1',
    'impersonate-extra-authentication.kubernetes.io%2Fpod-name': ['p'], 'impersonate-extra-access-gateway.io%2Fgateway': 'a/gw',
  });
  assert.equal(escapeExtraKey('a%b c'), 'a%25b%20c');
  // upper case survives the apiserver's lower-casing of header names only escaped
  assert.equal(escapeExtraKey('example.com/Team'), 'example.com%2FTeam'.replace('T', '%54'));
});

test('identity headers spelt with underscores never cross either (CGI/WSGI read _ as -)', () => {
  const out = forwardRequestHeaders({ 'impersonate_user': 'admin', 'x_remote_user': 'admin', 'x-remote_group': 'g', 'x_forwarded_for': '1', accept: 'a' }, false);
  assert.deepEqual(out, { accept: 'a' });
});

test('service-account identity: only a plain name of the given namespace, groups left to the apiserver', () => {
  assert.deepEqual(serviceAccountHeaders('team-a', 'reader', { 'access-gateway.io/caller': 'system:serviceaccount:team-a:app' }), {
    'impersonate-user': 'system:serviceaccount:team-a:reader',
    'impersonate-extra-access-gateway.io%2Fcaller': 'system:serviceaccount:team-a:app',
  });
  for (const [ns, name] of [['team-a', 'x:y'], ['team-a:b', 'x'], ['team-a', ''], ['', 'x'], ['team-a', '../x'], ['team-a', 'system:admin'], ['Team', 'x']]) {
    assert.throws(() => serviceAccountHeaders(ns!, name!, {}), /refusing to impersonate/, `${ns}/${name}`);
  }
});

test('groups the apiserver adds by itself are not sent (each costs it an authorization check): same identity', () => {
  const sa = (groups: string[]) => ({ username: 'system:serviceaccount:team-a:app', uid: 'u', groups, extra: {} });
  // a service account's own groups: the apiserver derives them from the username
  assert.deepEqual(groupsToSend(sa(['system:serviceaccounts', 'system:serviceaccounts:team-a', 'system:authenticated'])), []);
  // anything else is sent, without system:authenticated (added to every impersonated user)
  assert.deepEqual(groupsToSend(sa(['system:serviceaccounts', 'system:serviceaccounts:team-b', 'system:authenticated'])),
    ['system:serviceaccounts', 'system:serviceaccounts:team-b']);
  assert.deepEqual(groupsToSend(sa(['system:serviceaccounts', 'system:serviceaccounts:team-a', 'extra'])),
    ['system:serviceaccounts', 'system:serviceaccounts:team-a', 'extra']);
  assert.deepEqual(groupsToSend({ username: 'alice', uid: '', groups: ['devs', 'system:authenticated'], extra: {} }), ['devs']);
  assert.equal(impersonationHeaders(sa(['system:serviceaccounts', 'system:serviceaccounts:team-a', 'system:authenticated']), {})['impersonate-group'], undefined);
  // a service-account name without its groups (an authenticator may answer so): system:authenticated
  // alone, so the apiserver adds none
  assert.deepEqual(groupsToSend(sa([])), ['system:authenticated']);
  assert.deepEqual(groupsToSend(sa(['system:authenticated'])), ['system:authenticated']);
  assert.deepEqual(leanImpersonation(sa(['system:authenticated']))['impersonate-group'], ['system:authenticated']);
});

test('a WebSocket bearer-token subprotocol (a second, unchecked credential) never crosses; the other subprotocols do', () => {
  const tok = 'base64url.bearer.authorization.k8s.io.ZXlKaGJHY2lPaUpTVXpJMU5pSjk';
  for (const keep of [false, true]) {
    const out = forwardRequestHeaders({ authorization: 'Bearer a', 'sec-websocket-protocol': `v5.channel.k8s.io, ${tok}, v4.channel.k8s.io` }, keep);
    assert.equal(out['sec-websocket-protocol'], 'v5.channel.k8s.io, v4.channel.k8s.io');
    assert.equal(forwardRequestHeaders({ 'sec-websocket-protocol': `${tok.toUpperCase()},v4.channel.k8s.io` }, keep)['sec-websocket-protocol'], 'v4.channel.k8s.io');
    assert.equal(forwardRequestHeaders({ 'sec-websocket-protocol': tok }, keep)['sec-websocket-protocol'], undefined);
  }
  assert.equal(forwardRequestHeaders({ 'sec-websocket-protocol': 'chat, superchat' }, false)['sec-websocket-protocol'], 'chat, superchat');
});

test('Impersonate-* values go out as their UTF-8 bytes (a header is written as latin1); ASCII as it is', () => {
  const h = impersonationHeaders({ username: 'élice', uid: 'ü1', groups: ['Prüfer', 'dev'], extra: { team: ['日本'] } }, { 'access-gateway.io/caller': 'zoë' });
  const bytes = (v: unknown) => [v].flat().map((x) => Buffer.from(String(x), 'latin1').toString('utf8'));
  assert.deepEqual(bytes(h['impersonate-user']), ['élice']);
  assert.deepEqual(bytes(h['impersonate-uid']), ['ü1']);
  assert.deepEqual(bytes(h['impersonate-group']), ['Prüfer', 'dev']);
  assert.deepEqual(bytes(h['impersonate-extra-team']), ['日本']);
  assert.deepEqual(bytes(h['impersonate-extra-access-gateway.io%2Fcaller']), ['zoë']);
  assert.equal(impersonationHeaders({ username: 'alice', uid: '', groups: [], extra: {} }, {})['impersonate-user'], 'alice');
});
