// "Why was I denied?" as pure logic: the apiserver's request attributes of a method and path, and
// the admission steps of a gateway explained without serving anything.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyDefaults } from '../../src/api/defaults.js';
import { CachingRequestReviewer, requestAttributes, describeAttributes } from '../../src/auth/request-info.js';
import { explain, explainGateway, impersonatedSubject, offlineTable } from '../../src/dataplane/explain.js';
import { statusBody, ForbiddenError } from '../../src/errors.js';
import { translate } from '../../src/translate/translate.js';

test('requestAttributes reads a request as the apiserver RequestInfo factory does', () => {
  const r = (m: string, p: string, q = '') => {
    const a = requestAttributes(m, p, q);
    return 'resourceAttributes' in a ? a.resourceAttributes : a.nonResourceAttributes;
  };
  assert.deepEqual(r('GET', '/api/v1/namespaces/a/pods'), { verb: 'list', group: '', version: 'v1', resource: 'pods', namespace: 'a' });
  assert.deepEqual(r('GET', '/api/v1/namespaces/a/pods', '?watch=true'), { verb: 'watch', group: '', version: 'v1', resource: 'pods', namespace: 'a' });
  assert.deepEqual(r('GET', '/api/v1/watch/namespaces/a/pods'), { verb: 'watch', group: '', version: 'v1', resource: 'pods', namespace: 'a' });
  assert.deepEqual(r('POST', '/api/v1/namespaces/a/pods/p/exec'), { verb: 'create', group: '', version: 'v1', resource: 'pods', subresource: 'exec', namespace: 'a', name: 'p' });
  assert.deepEqual(r('DELETE', '/apis/apps/v1/namespaces/a/deployments'), { verb: 'deletecollection', group: 'apps', version: 'v1', resource: 'deployments', namespace: 'a' });
  assert.deepEqual(r('PATCH', '/apis/apps/v1/namespaces/a/deployments/d/scale'), { verb: 'patch', group: 'apps', version: 'v1', resource: 'deployments', subresource: 'scale', namespace: 'a', name: 'd' });
  assert.deepEqual(r('GET', '/api/v1/namespaces/a'), { verb: 'get', group: '', version: 'v1', resource: 'namespaces', namespace: 'a', name: 'a' });
  assert.deepEqual(r('PUT', '/api/v1/namespaces/a/finalize'), { verb: 'update', group: '', version: 'v1', resource: 'namespaces', subresource: 'finalize', namespace: 'a', name: 'a' });
  assert.deepEqual(r('GET', '/api/v1/nodes/n'), { verb: 'get', group: '', version: 'v1', resource: 'nodes', name: 'n' });
  assert.deepEqual(r('GET', '/version'), { path: '/version', verb: 'get' });
  assert.deepEqual(r('GET', '/apis/apps/v1'), { path: '/apis/apps/v1', verb: 'get' });
  assert.equal(describeAttributes(requestAttributes('GET', '/apis/apps/v1/namespaces/a/deployments/d')), 'get deployments.apps d in namespace a');
  // ?watch= as the apiserver reads a bool: anything but 0 and false (any case) is true, also empty
  const pods = { group: '', version: 'v1', resource: 'pods', namespace: 'a' };
  for (const w of ['yes', 'TRUE', '', '2', 'on']) assert.deepEqual(r('GET', '/api/v1/namespaces/a/pods', `?watch=${w}`), { verb: 'watch', ...pods }, w);
  for (const w of ['0', 'false', 'FALSE', 'False']) assert.deepEqual(r('GET', '/api/v1/namespaces/a/pods', `?watch=${w}`), { verb: 'list', ...pods }, w);
  // a field selector requiring metadata.name names the object (resourceNames rules apply)
  assert.deepEqual(r('GET', '/api/v1/namespaces/a/pods', '?fieldSelector=metadata.name%3Dp1'), { verb: 'list', ...pods, name: 'p1' });
  assert.deepEqual(r('GET', '/api/v1/namespaces/a/pods', '?watch=1&fieldSelector=status.phase%3DRunning,metadata.name%3D%3Dp2'), { verb: 'watch', ...pods, name: 'p2' });
  for (const f of ['metadata.name!%3Dp1', 'metadata.namespace%3Dp1', 'metadata.name%3D..', 'metadata.name%3Da%2Fb', 'metadata.name%3D']) {
    assert.deepEqual(r('GET', '/api/v1/namespaces/a/pods', `?fieldSelector=${f}`), { verb: 'list', ...pods }, f);
  }
});

const gw = applyDefaults({
  apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: 'api', namespace: 'team-a', generation: 1 },
  spec: {
    authentication: { audiences: ['gw'] },
    access: [
      { serviceAccounts: [{ namespace: 'team-a', name: 'reader' }], routes: ['kube-api'] },
      { users: ['later'], notBefore: '2999-01-01T00:00:00Z' },
    ],
    routes: [
      { name: 'svc', pathPrefix: '/svc', service: { name: 'ledger', port: 80 } },
      { name: 'kube-api', pathPrefix: '/', apiserver: { identity: 'ServiceAccount', serviceAccountName: 'viewer', rejectPaths: ['^/api/.*/secrets'] } },
    ],
  },
});
const table = offlineTable(translate(gw, { port: { port: 1 } }).plan!);
const reader = { username: 'system:serviceaccount:team-a:reader', uid: '', groups: ['system:serviceaccounts'], extra: {} };

test('explainGateway: each step with the rule that decided; the apiserver subject of the route', () => {
  const ok = explainGateway(table, reader, 'GET', '/api/v1/namespaces/team-a/pods');
  assert.deepEqual(ok.explanation.steps.map((s) => [s.step, s.allowed, s.field]), [
    ['access', true, 'spec.access[0]'], ['route', true, 'spec.routes[1]'], ['filter', true, 'spec.routes[1].apiserver.acceptPaths[0]']]);
  // identity ServiceAccount: RBAC is asked about the gateway namespace's account, not the caller
  assert.equal(ok.rbac?.subject.username, 'system:serviceaccount:team-a:viewer');
  assert.deepEqual(ok.rbac?.subject.groups, ['system:serviceaccounts', 'system:serviceaccounts:team-a', 'system:authenticated']);
  const secret = explainGateway(table, reader, 'GET', '/api/v1/namespaces/team-a/secrets');
  assert.deepEqual(secret.explanation.steps.at(-1), { step: 'filter', allowed: false, field: 'spec.routes[1].apiserver.rejectPaths[0]',
    message: 'path /api/v1/namespaces/team-a/secrets is rejected by spec.routes[1].apiserver.rejectPaths[0] "^/api/.*/secrets" of route kube-api' });
  assert.equal(secret.rbac, undefined);
  const svc = explainGateway(table, reader, 'GET', '/svc/x').explanation;
  assert.deepEqual(svc.steps.at(-1), { step: 'route', allowed: false, field: 'spec.access[0].routes',
    message: 'system:serviceaccount:team-a:reader may not use route svc of gateway team-a/api: spec.access[0] grants only kube-api' });
  const later = explainGateway(table, { ...reader, username: 'later' }, 'GET', '/x').explanation;
  assert.match(later.steps[0]!.message, /spec.access\[1\] names it, but its notBefore 2999-01-01T00:00:00.000Z has not come/);
  assert.deepEqual(explainGateway(table, reader, 'GET', '/a/%2e%2e/b').explanation.steps.map((s) => s.step), ['request']);
});

test('the RBAC subject is what the gateway sends, in either --audit-extras mode', () => {
  const spec = { ...gw.spec, access: [{ serviceAccounts: [{ namespace: 'team-a', name: 'reader' }] }],
    routes: [{ name: 'own', pathPrefix: '/', apiserver: { identity: 'Impersonate' } }] };
  const plan = translate(applyDefaults({ ...gw, spec } as typeof gw), { port: { port: 1 } }).plan!;
  const pod = { username: 'system:serviceaccount:team-a:reader', uid: 'u-1', groups: ['system:serviceaccounts', 'system:serviceaccounts:team-a', 'system:authenticated'],
    extra: { 'authentication.kubernetes.io/pod-name': ['p-1'], 'Access-Gateway.io/gateway': ['team-b/other'] } };
  const subject = (auditExtras: boolean) => explainGateway(offlineTable(plan, auditExtras), pod, 'GET', '/api/v1/namespaces/team-a/pods').rbac!.subject;
  // none: the account's name alone; the apiserver adds its groups and there is no UID or extra
  assert.deepEqual(subject(false), { username: pod.username, uid: '', groups: pod.groups, extra: {} });
  // all: UID, the token's extra and the gateway's own three (a caller's value under a gateway key is not sent)
  assert.deepEqual(subject(true), { username: pod.username, uid: 'u-1', groups: pod.groups, extra: {
    'authentication.kubernetes.io/pod-name': ['p-1'], 'access-gateway.io/gateway': ['team-a/api'], 'access-gateway.io/route': ['own'],
    'access-gateway.io/caller': [pod.username] } });
  // a person: its groups as sent, system:authenticated added; an extra key's case kept
  const ana = { username: 'ana', uid: '', groups: ['devs'], extra: { Team: ['a'] } };
  const t = offlineTable(translate(applyDefaults({ ...gw, spec: { ...spec, access: [{ users: ['ana'] }] } } as typeof gw), { port: { port: 1 } }).plan!, false);
  assert.deepEqual(explainGateway(t, ana, 'GET', '/version').rbac!.subject, { username: 'ana', uid: '', groups: ['devs', 'system:authenticated'], extra: { Team: ['a'] } });
  // Passthrough: the caller's own token, so the caller as it is
  const through = { ...spec, access: [...spec.access, { users: ['oidc:ana'] }], routes: [{ name: 'own', pathPrefix: '/', apiserver: { identity: 'Passthrough' } }] };
  const pt = offlineTable(translate(applyDefaults({ ...gw, spec: through } as typeof gw), { port: { port: 1 } }).plan!, false);
  assert.deepEqual(explainGateway(pt, pod, 'GET', '/api/v1/namespaces/team-a/pods').rbac!.subject, pod);
  const oidc = { username: 'oidc:ana', uid: '', groups: ['oidc:devs'], extra: {} };
  assert.deepEqual(explainGateway(pt, oidc, 'GET', '/version').rbac!.subject.groups, ['oidc:devs', 'system:authenticated']);
  assert.deepEqual(impersonatedSubject({ 'impersonate-user': 'system:anonymous' }).groups, ['system:unauthenticated']);
  assert.deepEqual(impersonatedSubject({ 'impersonate-user': 'x', 'impersonate-group': ['system:unauthenticated'] }).groups, ['system:unauthenticated']);
});

test('explain: RBAC not asked without a reviewer is unknown, not yes', async () => {
  const e = await explain(table, reader, 'GET', '/api/v1/namespaces/team-a/pods');
  assert.equal(e.allowed, null);
  assert.equal(e.steps.at(-1)!.allowed, null);
  const no = await explain(table, reader, 'GET', '/api/v1/namespaces/team-a/pods', { reviewRequest: async () => ({ allowed: false, reason: 'no binding' }) });
  assert.equal(no.allowed, false);
  assert.match(no.steps.at(-1)!.message, /the apiserver says no: system:serviceaccount:team-a:viewer may list pods in namespace team-a \(no binding\)/);
});

test('a Status body names the step and rule as a cause, and nothing when there are none', () => {
  const body = JSON.parse(statusBody(new ForbiddenError('no', { step: 'filter', field: 'spec.routes[0].apiserver.rejectPaths[1]' })));
  assert.deepEqual(body.details.causes, [{ reason: 'AGW_ERR_FORBIDDEN', message: 'refused by the gateway at step filter', field: 'spec.routes[0].apiserver.rejectPaths[1]' }]);
  assert.deepEqual(JSON.parse(statusBody(new ForbiddenError('no'))).details.causes, [{ reason: 'AGW_ERR_FORBIDDEN' }]);
});

test('can-i answers are remembered for their TTL by subject and question; failures are not', async () => {
  let asked = 0;
  let now = 0;
  let fail = false;
  const c = new CachingRequestReviewer({ reviewRequest: async () => { asked++; if (fail) throw new Error('down'); return { allowed: true, reason: '' }; } }, 10_000, 4096, () => now);
  const attrs = requestAttributes('GET', '/api/v1/namespaces/a/pods');
  await c.reviewRequest(reader, attrs, 'team-a');
  await c.reviewRequest(reader, attrs, 'team-a');
  assert.equal(asked, 1);
  await c.reviewRequest({ ...reader, groups: ['other'] }, attrs, 'team-a');
  await c.reviewRequest(reader, requestAttributes('DELETE', '/api/v1/namespaces/a/pods'), 'team-a');
  assert.equal(asked, 3, 'another subject or question is asked');
  now = 10_001;
  fail = true;
  await assert.rejects(c.reviewRequest(reader, attrs, 'team-a'));
  await assert.rejects(c.reviewRequest(reader, attrs, 'team-a'));
  assert.equal(asked, 5, 'a failure is asked again');
});

test('can-i answers are kept apart per namespace: one team can neither evict nor see another\'s', async () => {
  let asked = 0;
  let now = 0;
  const c = new CachingRequestReviewer({ reviewRequest: async () => { asked++; return { allowed: true, reason: '' }; } }, 10_000, 3, () => now);
  const q = (i: number) => requestAttributes('GET', `/api/v1/namespaces/a/pods/p${i}`);
  await c.reviewRequest(reader, q(0), 'team-b');
  await c.reviewRequest(reader, q(0), 'team-a');
  assert.equal(asked, 2, 'team-a is not answered from team-b\'s cache');
  for (let i = 1; i <= 5; i++) await c.reviewRequest(reader, q(i), 'team-a');
  assert.deepEqual(c.size, { answers: 4, namespaces: 2 }, 'team-a holds its 3, team-b its 1');
  asked = 0;
  await c.reviewRequest(reader, q(0), 'team-b');
  assert.equal(asked, 0, 'team-b\'s answer outlived team-a\'s questions');
  await c.reviewRequest(reader, q(5), 'team-a');
  await c.reviewRequest(reader, q(1), 'team-a');
  assert.equal(asked, 1, 'team-a\'s newest answer is kept, its oldest gone');
  now = 10_001;
  await c.reviewRequest(reader, q(0), 'team-c');
  assert.deepEqual(c.size, { answers: 1, namespaces: 1 }, 'expired answers are swept, with the namespaces left empty');
});
