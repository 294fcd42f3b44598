// The request admission chain, step by step, without sockets (kube-rbac-proxy tests its filters
// this way): a plan from translate(), a fake token reviewer, the real route table.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { OutgoingHttpHeaders } from 'node:http';
import { applyDefaults } from '../../src/api/defaults.js';
import { translate } from '../../src/translate/translate.js';
import { authnKeys, authnOf, RouteTable, type CompiledRoute, type DataplaneDeps } from '../../src/dataplane/route-table.js';
import { replacePrefix, underPrefix } from '../../src/dataplane/path.js';
import { PoolRegistry } from '../../src/dataplane/endpoints.js';
import { admit, authorizationHeader, checkImpersonation, newSeen, requestTarget, type RequestHead, type RouteAdmitted, type Seen } from '../../src/dataplane/admission.js';
import { defaultLimits, discovery } from '../../src/dataplane/listener.js';
import { budgetsFor, type CallerBudgets } from '../../src/dataplane/namespace-budget.js';
import { accessEnded, HeldAccess, recheckSlice } from '../../src/dataplane/held.js';
import { callerImpersonation, remoteHeaders } from '../../src/dataplane/headers.js';
import { FilterChecks } from '../../src/dataplane/filter-checks.js';
import { createMetrics, testMetrics } from '../../src/observability/metrics.js';
import { Registry } from 'prom-client';
import { silentLogger } from '../../src/observability/logger.js';
import type { CallerIdentity } from '../../src/auth/identity.js';
import { EntryBudget } from '../../src/auth/token-cache.js';
import type { AccessGateway } from '../../src/api/types.js';

/** A JWT-shaped token (never verified here: the fake reviewer knows it). */
function token(sa: string): string {
  const b = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b({ alg: 'RS256', kid: 'k' })}.${b({ sub: sa, aud: ['gw'], exp: Math.floor(Date.now() / 1000) + 3600 })}.c2ln`;
}

const users: Record<string, string> = {
  app: 'system:serviceaccount:team-a:app', limited: 'system:serviceaccount:team-a:limited', other: 'system:serviceaccount:team-b:x',
};
const tokens = Object.fromEntries(Object.entries(users).map(([k, u]) => [k, token(u)]));
const byToken = new Map(Object.entries(users).map(([k, u]) => [tokens[k]!, u]));

function table(spec: Record<string, unknown>, snapshot: Record<string, unknown> = {}, extra: Partial<DataplaneDeps> = {}, callers?: CallerBudgets, previous?: RouteTable): RouteTable {
  const gw = { apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: 'gw', namespace: 'team-a', generation: 1 },
    spec: { authentication: { audiences: ['gw'] }, ...spec } } as unknown as AccessGateway;
  const t = translate(applyDefaults(gw), { port: { port: 1 }, ...snapshot });
  assert.ok(t.plan, JSON.stringify(t.conditions));
  const deps: DataplaneDeps = {
    apiserver: {} as DataplaneDeps['apiserver'], log: silentLogger, pools: new PoolRegistry(), metrics: testMetrics(),
    reviewer: {
      async review(tok: string) {
        const username = byToken.get(tok);
        if (!username) return { authenticated: false as const, error: 'unknown token' };
        const ns = username.split(':')[2]!;
        const user: CallerIdentity = { username, uid: 'u', groups: ['system:serviceaccounts', `system:serviceaccounts:${ns}`], extra: {} };
        return { authenticated: true as const, user, audiences: ['gw'] };
      },
    },
    ...extra,
  };
  return RouteTable.build(t.plan, deps, previous, callers);
}

const req = (url: string, who: string | null, method = 'GET', extra: string[] = []) => {
  const rawHeaders = [...(who ? ['Authorization', `Bearer ${tokens[who]}`] : []), ...extra];
  const headers: Record<string, string> = {};
  for (let i = 0; i < rawHeaders.length; i += 2) headers[rawHeaders[i]!.toLowerCase()] ??= rawHeaders[i + 1]!;
  return { method, url, headers, rawHeaders };
};

async function status(t: RouteTable, url: string, who: string | null, method = 'GET', extra: string[] = []): Promise<number | string> {
  try {
    const a = await admit(t, req(url, who, method, extra), { caller: '-' } as Seen);
    return a.kind === 'route' ? `${a.route.plan.name} ${a.path}` : a.kind === 'can-i' ? 'discovery-or-can-i' : 'discovery';
  } catch (err) {
    return (err as { status: number }).status;
  }
}

const ledger = {
  services: { 'team-a/ledger': { metadata: { name: 'ledger', namespace: 'team-a' }, spec: { ports: [{ name: 'http', port: 80 }] } } },
  endpointSlices: { 'team-a/ledger': [{ ports: [{ name: 'http', port: 8080 }], endpoints: [{ addresses: ['198.18.0.2'] }] }] },
};

test('requestTarget: refuses non-canonical paths (400) and long ones (414), keeps the query as sent', () => {
  const t = table({ access: [], routes: [{ name: 'r', pathPrefix: '/', apiserver: {} }] });
  assert.deepEqual(requestTarget(t, '/api/%73ecrets?watch=1&x=%2F'), { path: '/api/secrets', query: '?watch=1&x=%2F' });
  assert.throws(() => requestTarget(t, '/api/%2e%2e/x'), (e: any) => e.status === 400);
  assert.throws(() => requestTarget(t, '/' + 'a'.repeat(5000)), (e: any) => e.status === 414);
});

test('authorizationHeader: one is read, two are refused whatever their case', async () => {
  assert.equal(authorizationHeader(req('/', 'app')), `Bearer ${tokens.app}`);
  assert.throws(() => authorizationHeader(req('/', 'app', 'GET', ['AUTHORIZATION', 'Bearer x'])), (e: any) => e.status === 401 && /more than one Authorization header/.test(e.message));
  // refused as any malformed Authorization: at the authentication step, counted
  const t = table({ access: [{ groups: ['system:serviceaccounts'] }], routes: [{ name: 'kube', pathPrefix: '/', apiserver: {} }] });
  assert.throws(() => admit(t, req('/', 'app', 'GET', ['AUTHORIZATION', 'Bearer x']), { caller: '-' } as Seen),
    (e: any) => e.status === 401 && e.step === 'authentication' && e.field === 'spec.authentication');
  const e = await (t as unknown as { deps: DataplaneDeps }).deps.metrics.exposition();
  assert.match(e.head + Buffer.concat([...e.chunks]).toString(), /^access_gateway_authentications_total\{namespace="team-a",gateway="gw",result="unauthenticated"\} 1$/m);
  t.dispose();
});

test('the chain answers each refusal with its status, in order', async () => {
  const t = table({
    access: [{ serviceAccounts: [{ namespace: 'team-a', name: 'app' }] }, { serviceAccounts: [{ namespace: 'team-a', name: 'limited' }], routes: ['rest'] }],
    routes: [
      { name: 'configmaps', pathPrefix: '/api/v1/namespaces/team-a/configmaps', apiserver: {} },
      { name: 'rest', pathPrefix: '/', apiserver: { rejectPaths: ['^/api/v1/namespaces/team-a/secrets'], rejectMethods: ['^DELETE$'] } },
    ],
  });
  assert.equal(await status(t, '/api/v1/namespaces/team-a/../x', 'app'), 400); // before authentication
  assert.equal(await status(t, '/api/v1/namespaces/team-a/configmaps', null), 401);
  assert.equal(await status(t, '/api/v1/namespaces/team-a/configmaps', 'other'), 403); // no access rule
  assert.equal(await status(t, '/api/v1/namespaces/team-a/configmaps', 'app'), 'configmaps /api/v1/namespaces/team-a/configmaps');
  assert.equal(await status(t, '/api/v1/namespaces/team-a/configmaps', 'limited'), 403); // route not granted
  assert.equal(await status(t, '/api/v1/namespaces/team-a/%63onfigmaps', 'limited'), 403); // nor encoded
  assert.equal(await status(t, '/api/v1/namespaces/team-a/%73ecrets', 'app'), 403); // rejectPaths on the decoded path
  assert.equal(await status(t, '/api/v1/namespaces/team-a/pods', 'app', 'DELETE'), 403); // rejectMethods
  assert.equal(await status(t, '/api/v1/namespaces/team-a/p%C3%B6ds?x=1', 'app'), 'rest /api/v1/namespaces/team-a/p%C3%B6ds?x=1');
  assert.equal(await status(t, '/.well-known/access-gateway', 'limited'), 'discovery');
});

test('callers spec.access does not name are cached apart: another team\'s valid tokens for this audience evict none of the namespace\'s budget', async () => {
  const budget = new EntryBudget(2);
  const callers = { tokens: budget, buckets: new EntryBudget(2) };
  // made once: a token made again in a later second has another exp, and the reviewer knows it not
  const outsiderTokens = Array.from({ length: 300 }, (_, i) => token(`system:serviceaccount:team-b:o${i}`));
  const outsider = (i: number) => outsiderTokens[i]!;
  const outsiders = new Map(outsiderTokens.map((tok, i) => [tok, `system:serviceaccount:team-b:o${i}`]));
  let reviews = 0;
  const reviewer = {
    async review(tok: string) {
      reviews++;
      const username = byToken.get(tok) ?? outsiders.get(tok);
      if (!username) return { authenticated: false as const, error: 'unknown token' };
      return { authenticated: true as const, user: { username, uid: 'u', groups: [], extra: {} }, audiences: ['gw'] };
    },
  };
  const spec = { access: [{ serviceAccounts: [{ namespace: 'team-a', name: 'app' }] }], routes: [{ name: 'r', pathPrefix: '/', apiserver: {} }] };
  const t = table(spec, {}, { reviewer }, callers);
  const admitted = async (tok: string) => {
    try {
      await admit(t, { method: 'GET', url: '/api', headers: { authorization: `Bearer ${tok}` }, rawHeaders: ['Authorization', `Bearer ${tok}`] }, { caller: '-' } as Seen);
      return 200;
    } catch (err) {
      return (err as { status: number }).status;
    }
  };
  assert.equal(await admitted(tokens.app!), 200);
  assert.equal(reviews, 1);
  for (let i = 0; i < 300; i++) assert.equal(await admitted(outsider(i)), 403);
  assert.equal(reviews, 301);
  assert.equal(await admitted(tokens.app!), 200);
  assert.equal(reviews, 301, 'the admitted caller was evicted by refused ones');
  assert.equal(await admitted(outsider(299)), 403);
  assert.equal(reviews, 301, 'a refused caller is still cached (apart): its next request costs no review');
  // a second gateway of the namespace still caches its callers: the budget holds app's only
  const t2 = table(spec, {}, { reviewer }, callers);
  await admit(t2, { method: 'GET', url: '/api', headers: { authorization: `Bearer ${tokens.app}` }, rawHeaders: ['Authorization', `Bearer ${tokens.app}`] }, { caller: '-' } as Seen);
  await admit(t2, { method: 'GET', url: '/api', headers: { authorization: `Bearer ${tokens.app}` }, rawHeaders: ['Authorization', `Bearer ${tokens.app}`] }, { caller: '-' } as Seen);
  assert.equal(reviews, 302);
});

test('routes match whole path elements; no route is 404', async () => {
  const t = table({ access: [{ serviceAccounts: [{ namespace: 'team-a', name: 'app' }] }],
    routes: [{ name: 'own', pathPrefix: '/api/v1/namespaces/team-a', apiserver: {} }] });
  assert.equal(await status(t, '/api/v1/namespaces/team-a', 'app'), 'own /api/v1/namespaces/team-a');
  assert.equal(await status(t, '/api/v1/namespaces/team-a/configmaps', 'app'), 'own /api/v1/namespaces/team-a/configmaps');
  assert.equal(await status(t, '/api/v1/namespaces/team-a-prod/configmaps', 'app'), 404);
});

test('a path whose `;` parameters, dropped (as Tomcat, Jetty and Spring do), would choose another route is refused 400: a caller granted only one route cannot reach another\'s', async () => {
  const t = table({
    access: [{ serviceAccounts: [{ namespace: 'team-a', name: 'app' }] }, { serviceAccounts: [{ namespace: 'team-a', name: 'limited' }], routes: ['public'] }],
    routes: [
      { name: 'admin', pathPrefix: '/admin', service: { name: 'ledger', port: 'http' } },
      { name: 'public', pathPrefix: '/', service: { name: 'ledger', port: 'http' } },
    ],
  }, ledger);
  assert.equal(await status(t, '/admin/users', 'limited'), 403);
  for (const p of ['/admin;x/users', '/admin;jsessionid=1', '/admin%3Bx/users', '/admin;/users']) assert.equal(await status(t, p, 'limited'), 400, p);
  // also for a caller who may use both: the route is the one the backend serves, or none
  assert.equal(await status(t, '/admin;x/users', 'app'), 400);
  // empty segments once parameters are dropped (`/;x/admin` is `//admin`, which servers merge)
  assert.equal(await status(t, '/;x/admin/users', 'limited'), 400);
  assert.equal(await status(t, '/a/;x/admin', 'limited'), 400);
  // parameters that leave the route as it is pass, as sent
  assert.equal(await status(t, '/admin/users;jsessionid=1', 'app'), 'admin /admin/users;jsessionid=1');
  assert.equal(await status(t, '/public;v=1/x', 'limited'), 'public /public;v=1/x');
  assert.equal(await status(t, '/a;b', 'limited'), 'public /a;b');
  // a route whose prefix holds parameters is reached by them, and only by them
  const v2 = table({ access: [{ serviceAccounts: [{ namespace: 'team-a', name: 'app' }] }],
    routes: [{ name: 'v2', pathPrefix: '/app;v=2', service: { name: 'ledger', port: 'http' } }, { name: 'public', pathPrefix: '/', service: { name: 'ledger', port: 'http' } }] }, ledger);
  assert.equal(await status(v2, '/app;v=2/x', 'app'), 'v2 /app;v=2/x');
  assert.equal(await status(v2, '/app;v=2', 'app'), 'v2 /app;v=2');
  assert.equal(await status(v2, '/app;v=3/x', 'app'), 400);
  assert.equal(await status(v2, '/app/x', 'app'), 'public /app/x');
});

test('can-i: a caller spec.access does not admit is answered, but gets no place in the gateway\'s rate limiter; one it admits is limited', async () => {
  const t = table({ access: [{ serviceAccounts: [{ namespace: 'team-a', name: 'app' }] }], routes: [{ name: 'r', pathPrefix: '/', apiserver: {} }],
    rateLimit: { requestsPerSecond: 1, burst: 1 } });
  assert.equal(await status(t, '/.well-known/access-gateway/can-i?path=/version', 'other'), 'discovery-or-can-i');
  assert.equal(t.limiter!.callers, 0);
  assert.equal(await status(t, '/.well-known/access-gateway/can-i?path=/version', 'app'), 'discovery-or-can-i');
  assert.equal(t.limiter!.callers, 1);
});

test('a request carrying a method or path override is refused 400 before its token is checked: a route\'s methods would not hold against a backend honouring it', async () => {
  const t = table({ access: [{ serviceAccounts: [{ namespace: 'team-a', name: 'app' }] }],
    routes: [{ name: 'read', pathPrefix: '/', methods: ['POST'], service: { name: 'ledger', port: 'http' } }] }, ledger);
  assert.equal(await status(t, '/x', 'app', 'POST'), 'read /x');
  assert.equal(await status(t, '/x', 'app', 'POST', ['X-HTTP-Method-Override', 'DELETE']), 400);
  assert.equal(await status(t, '/x', null, 'POST', ['X-Original-URL', '/admin']), 400);
});

test('the services-proxy form is its path form: methods, prefix, rewrite, grants and route order apply', async () => {
  const t = table({
    access: [{ serviceAccounts: [{ namespace: 'team-a', name: 'app' }], routes: ['admin', 'read'] }, { serviceAccounts: [{ namespace: 'team-a', name: 'limited' }], routes: ['read'] }],
    routes: [
      { name: 'admin', pathPrefix: '/ledger/v1/admin', rewritePrefix: '/v1/admin', service: { name: 'ledger', port: 'http' } },
      { name: 'read', pathPrefix: '/ledger/v1/', rewritePrefix: '/v1/', methods: ['GET'], service: { name: 'ledger', port: 'http' } },
      { name: 'kube-api', pathPrefix: '/', apiserver: {} },
    ],
  }, ledger);
  const sp = '/api/v1/namespaces/team-a/services/ledger:http/proxy';
  assert.equal(await status(t, `${sp}/v1/accounts?a=b`, 'app'), 'read /v1/accounts?a=b');
  assert.equal(await status(t, '/ledger/v1/accounts?a=b', 'app'), 'read /v1/accounts?a=b');
  assert.equal(await status(t, `${sp}/v1/admin/x`, 'app'), 'admin /v1/admin/x');
  // limited may use read only: the path form of /v1/admin/x is route admin, which it may not use
  assert.equal(await status(t, '/ledger/v1/admin/x', 'limited'), 403);
  assert.equal(await status(t, `${sp}/v1/admin/x`, 'limited'), 403);
  // a method the route does not allow: no service route serves it (the path form goes to kube-api)
  assert.equal(await status(t, `${sp}/v1/accounts`, 'app', 'DELETE'), 404);
  // outside the route's upstream paths
  assert.equal(await status(t, `${sp}/admin`, 'app'), 404);
  assert.equal(await status(t, `${sp}`, 'app'), 404);
  // another Service, port or scheme than any route names
  assert.equal(await status(t, '/api/v1/namespaces/team-a/services/other/proxy/v1/x', 'app'), 403);
  assert.equal(await status(t, '/api/v1/namespaces/team-a/services/ledger:9999/proxy/v1/x', 'app'), 403);
  assert.equal(await status(t, '/api/v1/namespaces/team-a/services/https:ledger:http/proxy/v1/x', 'app'), 403);
  // encoded forms read the same
  assert.equal(await status(t, '/api/v1/namespaces/team-a/services/ledger:http/pro%78y/v1/accounts', 'app'), 'read /v1/accounts');
});

test('routes to one Service share its endpoints\' pools, each route holding its own reference: another table\'s pools outlive this one', () => {
  const pools = new PoolRegistry();
  const many = { ...ledger, endpointSlices: { 'team-a/ledger': [{ ports: [{ name: 'http', port: 8080 }], endpoints: [1, 2, 3].map((i) => ({ addresses: [`198.18.0.${i}`] })) }] } };
  const spec = (n: number) => ({ access: [], routes: Array.from({ length: n }, (_, i) => ({ name: `r${i}`, pathPrefix: `/r${i}`, service: { name: 'ledger', port: 'http' } })) });
  const a = table(spec(3), many, { pools });
  assert.equal(pools.size, 3);
  assert.ok(a.routes.every((r) => r.backend!.pools.length === 3 && r.backend!.pools.every((p, i) => p === a.routes[0]!.backend!.pools[i])), 'the same pools');
  const b = table(spec(1), many, { pools });
  a.dispose();
  assert.equal(pools.size, 3, 'b still uses them');
  assert.ok(b.routes[0]!.backend!.pools.every((p) => !p.retired));
  b.dispose();
  assert.equal(pools.size, 0);
});

test('shared pools are a target\'s own: another port, another Service, a route whose caRef is not found (no endpoints, the key of a sound route) shares nothing', () => {
  const pools = new PoolRegistry();
  const snap = {
    services: {
      'team-a/ledger': { metadata: { name: 'ledger', namespace: 'team-a' }, spec: { ports: [{ name: 'https', port: 443 }, { name: 'http', port: 80 }] } },
      'team-a/other': { metadata: { name: 'other', namespace: 'team-a' }, spec: { ports: [{ name: 'https', port: 443 }] } },
    },
    endpointSlices: {
      'team-a/ledger': [{ ports: [{ name: 'https', port: 8443 }, { name: 'http', port: 8080 }], endpoints: [{ addresses: ['198.18.0.2'] }] }],
      'team-a/other': [{ ports: [{ name: 'https', port: 9443 }], endpoints: [{ addresses: ['198.18.0.3'] }] }],
    },
  };
  const t = table({ access: [], routes: [
    { name: 'broken', pathPrefix: '/x', service: { name: 'ledger', port: 'https', scheme: 'https', caRef: { kind: 'ConfigMap', name: 'missing', key: 'ca.crt' } } },
    { name: 'l443', pathPrefix: '/a', service: { name: 'ledger', port: 'https', scheme: 'https' } },
    { name: 'l80', pathPrefix: '/b', service: { name: 'ledger', port: 'http' } },
    { name: 'o', pathPrefix: '/c', service: { name: 'other', port: 'https', scheme: 'https' } },
  ] }, snap, { pools });
  const keys = Object.fromEntries(t.routes.map((r) => [r.plan.name, r.backend!.pools.map((p) => p.key.split('/')[2])]));
  assert.deepEqual(keys, { broken: [], l443: ['198.18.0.2:8443'], l80: ['198.18.0.2:8080'], o: ['198.18.0.3:9443'] });
  t.dispose();
  assert.equal(pools.size, 0);
});

test('tenancy: another team granted a Service has pools of its own (its connections count against its own bound), and neither its tables nor a build of its that fails give back the owner\'s references', () => {
  const pools = new PoolRegistry();
  const snap = {
    services: { 'team-a/ledger': { metadata: { name: 'ledger', namespace: 'team-a' }, spec: { ports: [{ name: 'http', port: 80 }] } } },
    endpointSlices: { 'team-a/ledger': [{ ports: [{ name: 'http', port: 8080 }], endpoints: [{ addresses: ['198.18.0.2'] }, { addresses: ['198.18.0.3'] }] }] },
    referenceGrants: { 'team-a': [{ spec: { from: [{ group: 'access-gateway.io', kind: 'AccessGateway', namespace: 'team-b' }], to: [{ group: '', kind: 'Service' }] } }] },
  };
  const build = (ns: string, routes: unknown[], bad = false) => {
    const gw = { apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: 'gw', namespace: ns, generation: 1 },
      spec: { authentication: { audiences: ['gw'] }, access: [], routes } } as unknown as AccessGateway;
    const t = translate(applyDefaults(gw), { port: { port: 1 }, ...snap } as never);
    assert.ok(t.plan, JSON.stringify(t.conditions));
    if (bad) (t.plan.routes.at(-1)!.target as { acceptPaths: string[] }).acceptPaths = ['(']; // compiling it throws, after the others took pools
    return RouteTable.build(t.plan, { apiserver: {} as DataplaneDeps['apiserver'], log: silentLogger, pools, metrics: testMetrics(), reviewer: {} as DataplaneDeps['reviewer'] });
  };
  const a = build('team-a', [{ name: 'r1', pathPrefix: '/a', service: { name: 'ledger', port: 'http' } }, { name: 'r2', pathPrefix: '/b', service: { name: 'ledger', port: 80 } }]);
  const owned = a.routes.flatMap((r) => r.backend!.pools);
  const bRoutes = Array.from({ length: 4 }, (_, j) => ({ name: `b${j}`, pathPrefix: `/p${j}`, service: { name: 'ledger', namespace: 'team-a', port: j % 2 ? 80 : 'http' } }));
  let prev: RouteTable | undefined;
  for (let i = 0; i < 3; i++) {
    const b = build('team-b', bRoutes);
    const its = b.routes[0]!.backend!.pools[0]!;
    assert.ok(!owned.includes(its), 'team-b took one of team-a\'s pools');
    assert.equal(its.namespace, 'team-b');
    if (prev) assert.equal(its, prev.routes[0]!.backend!.pools[0], 'its own pools are kept across its rebuilds');
    prev?.dispose(b);
    prev = b;
  }
  assert.throws(() => build('team-b', [...bRoutes, { name: 'k', pathPrefix: '/k', apiserver: {} }], true));
  prev!.dispose();
  assert.ok(owned.every((p) => !p.retired), 'team-a\'s pools are still its own');
  assert.equal(pools.size, 2);
  assert.ok(owned.every((p) => p.refs === 2), 'two routes of team-a each hold each of its two pools');
  a.dispose();
  assert.equal(pools.size, 0);
});

test('the services-proxy form chooses as its plain definition does (every route, the path form built and matched), over generated routes and paths', () => {
  // the definition: the first route to the Service whose upstream paths hold PATH and that the
  // path form, built, would be routed to; the table asks only earlier routes that can take it
  const segs = ['a', 'b', 'ab'];
  let seed = 7;
  const rnd = (n: number) => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) >>> 8) % n;
  const prefixOf = () => `/${Array.from({ length: rnd(4) }, () => segs[rnd(3)]).join('/')}${rnd(4) === 0 ? '/' : ''}`;
  let compared = 0, proxied = 0;
  for (let round = 0; round < 60; round++) {
    const routes = Array.from({ length: 2 + rnd(7) }, (_, i) => ({
      name: `r${i}`, pathPrefix: prefixOf(), ...(rnd(2) ? { rewritePrefix: prefixOf() } : {}), ...(rnd(4) === 0 ? { methods: ['GET'] } : {}),
      service: { name: rnd(4) === 0 ? 'other' : 'ledger', port: 'http' },
    }));
    const t = table({ access: [{ serviceAccounts: [{ namespace: 'team-a', name: 'app' }] }], routes }, ledger);
    const svc = { namespace: 'team-a', name: 'ledger' };
    for (let k = 0; k < 40; k++) {
      const path = `/${Array.from({ length: rnd(5) }, () => segs[rnd(3)]).join('/')}`;
      const method = rnd(3) === 0 ? 'POST' : 'GET';
      const mayUse = (r: { plan: { name: string } }) => r.plan.name !== 'r1';
      let want: { path: string } | undefined, denied: string | undefined;
      for (const r of t.routes) {
        const tg = r.plan.target;
        if (tg.kind !== 'service' || tg.name !== 'ledger') continue;
        const upstream = r.rewrite ?? r.prefix;
        if (!underPrefix(path, upstream)) continue;
        const form = replacePrefix(path, upstream, r.prefix);
        if (t.match(form, method) !== r) continue;
        if (mayUse(r)) { want = { path: form }; break; }
        denied ??= form;
      }
      want ??= denied !== undefined ? { path: denied } : undefined;
      const got = t.servicesProxy(svc, path, method, mayUse);
      assert.deepEqual('path' in got ? got : undefined, want, `${JSON.stringify(routes.map((r) => [r.pathPrefix, r.rewritePrefix, r.methods, r.service.name]))} ${method} ${path}`);
      compared++;
      if (want) proxied++;
    }
  }
  assert.ok(compared === 2400 && proxied > 300, `${proxied} of ${compared} chose a route`);
});

test('identity ServiceAccount impersonates that account of the gateway namespace; audit extras in both modes', async () => {
  const t = table({ access: [{ serviceAccounts: [{ namespace: 'team-a', name: 'app' }] }],
    routes: [
      { name: 'as-reader', pathPrefix: '/r', rewritePrefix: '/', apiserver: { identity: 'ServiceAccount', serviceAccountName: 'reader' } },
      { name: 'as-caller', pathPrefix: '/', apiserver: {} },
    ] });
  const a = await admit(t, req('/r/api', 'app'), { caller: '-' });
  assert.equal(a.kind, 'route');
  if (a.kind !== 'route') return;
  const headers = (id: typeof a.id, route: typeof a.route) => {
    const h: OutgoingHttpHeaders = {};
    t.impersonate(h, id, route);
    return h;
  };
  assert.deepEqual(headers(a.id, a.route), {
    'impersonate-user': 'system:serviceaccount:team-a:reader',
    'impersonate-extra-access-gateway.io%2Fgateway': 'team-a/gw',
    'impersonate-extra-access-gateway.io%2Froute': 'as-reader',
    'impersonate-extra-access-gateway.io%2Fcaller': 'system:serviceaccount:team-a:app',
  });
  const b = await admit(t, req('/api', 'app'), { caller: '-' });
  if (b.kind !== 'route') return assert.fail('not routed');
  const h = headers(b.id, b.route);
  assert.equal(h['impersonate-user'], 'system:serviceaccount:team-a:app');
  assert.equal(h['impersonate-extra-access-gateway.io%2Fcaller'], 'system:serviceaccount:team-a:app');
  // a caller's --as: who it asked for, the route's audit extras (made at plan time), the caller
  const as = () => t.impersonationAs({ ...b.id, username: 'zoë' }, { user: 'bob', uid: '', groups: ['dev'], extra: {} }, b.route);
  const expected = {
    'impersonate-user': 'bob', 'impersonate-group': ['dev'],
    'impersonate-extra-access-gateway.io%2Fgateway': 'team-a/gw',
    'impersonate-extra-access-gateway.io%2Froute': 'as-caller',
    'impersonate-extra-access-gateway.io%2Fcaller': Buffer.from('zoë').toString('latin1'),
  };
  assert.deepEqual(as(), expected);
  assert.deepEqual(as(), expected, 'the same each call');
  // its groups as asked (and checked): a lone system:authenticated left out, the apiserver would
  // give the service account its own two groups instead
  const asSA = t.impersonationAs(b.id, { user: 'system:serviceaccount:team-a:other', uid: '', groups: ['system:authenticated'], extra: {} }, b.route);
  assert.deepEqual(asSA['impersonate-group'], ['system:authenticated']);
});

test('a caller\'s Impersonate-* headers are kept once per caller, whatever the routes; the gateway\'s audit extras win over a caller\'s extra of the same key', () => {
  const t = table({ access: [{ serviceAccounts: [{ namespace: 'team-a', name: 'app' }] }],
    routes: [1, 2, 3].map((i) => ({ name: `r${i}`, pathPrefix: `/r${i}`, apiserver: {} })) });
  const id = { username: 'system:serviceaccount:team-a:app', uid: 'u', groups: [],
    extra: { 'access-gateway.io/route': ['evil'], 'access-gateway.io/caller': ['someone'], 'authentication.kubernetes.io/credential-id': ['c'] } };
  for (const r of t.routes) {
    const h: OutgoingHttpHeaders = {};
    t.impersonate(h, id, r);
    assert.deepEqual(h, {
      // a service-account name without its groups: system:authenticated alone, so the apiserver adds none
      'impersonate-user': 'system:serviceaccount:team-a:app', 'impersonate-group': ['system:authenticated'], 'impersonate-uid': 'u',
      'impersonate-extra-authentication.kubernetes.io%2Fcredential-id': ['c'],
      'impersonate-extra-access-gateway.io%2Fgateway': 'team-a/gw',
      'impersonate-extra-access-gateway.io%2Froute': r.plan.name,
      'impersonate-extra-access-gateway.io%2Fcaller': 'system:serviceaccount:team-a:app',
    });
  }
  const kept = callerImpersonation(id); // kept once per caller (headers.ts), whatever the table
  assert.equal(callerImpersonation(id), kept, 'made once per caller, not per call');
  assert.equal(remoteHeaders(id), remoteHeaders(id));
  assert.equal(kept['impersonate-extra-access-gateway.io%2Fgateway'], undefined, 'the caller\'s own headers hold nothing of a route');
});

test('--audit-extras none: no audit extras on any route; a service account with its own groups by its name alone; an authenticator\'s extra of a gateway key is never sent', async () => {
  const t = table({ access: [{ serviceAccounts: [{ namespace: 'team-a', name: 'app' }] }],
    routes: [
      { name: 'as-reader', pathPrefix: '/r', rewritePrefix: '/', apiserver: { identity: 'ServiceAccount', serviceAccountName: 'reader' } },
      { name: 'as-caller', pathPrefix: '/', apiserver: {} },
    ] }, {}, { auditExtras: false });
  const headers = (id: CallerIdentity, route: CompiledRoute) => {
    const h: OutgoingHttpHeaders = {};
    t.impersonate(h, id, route);
    return h;
  };
  const [reader, caller] = t.routes as [CompiledRoute, CompiledRoute];
  const app = { username: 'system:serviceaccount:team-a:app', uid: 'u', groups: ['system:serviceaccounts', 'system:serviceaccounts:team-a', 'system:authenticated'],
    extra: { 'authentication.kubernetes.io/credential-id': ['c'] } };
  assert.deepEqual(headers(app, reader), { 'impersonate-user': 'system:serviceaccount:team-a:reader' });
  assert.deepEqual(headers(app, caller), { 'impersonate-user': 'system:serviceaccount:team-a:app' });
  // anyone else as with all, less the gateway's extras; an authenticator's answer naming them is dropped
  const person = { username: 'corp:alice', uid: 'p1', groups: ['system:authenticated'],
    extra: { 'corp/team': ['a'], 'access-gateway.io/gateway': ['team-b/prod'], 'access-gateway.io/route': ['r'], 'Access-Gateway.io/Caller': ['corp:bob'] } };
  assert.deepEqual(headers(person, caller), { 'impersonate-user': 'corp:alice', 'impersonate-uid': 'p1', 'impersonate-extra-corp%2Fteam': ['a'] });
  assert.deepEqual(t.impersonationAs(app, { user: 'bob', uid: '', groups: ['dev'], extra: {} }, caller), { 'impersonate-user': 'bob', 'impersonate-group': ['dev'] });
});

test('translate refuses a stored identity Gateway, and a serviceAccountName that is not a plain name', () => {
  const gw = (apiserver: Record<string, unknown>) => applyDefaults({ apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway',
    metadata: { name: 'gw', namespace: 'team-a' },
    spec: { authentication: { audiences: ['gw'] }, routes: [{ name: 'r', pathPrefix: '/', apiserver }] } } as unknown as AccessGateway);
  for (const a of [{ identity: 'Gateway' }, { identity: 'ServiceAccount', serviceAccountName: 'team-b:x' }, { identity: 'ServiceAccount' },
    { identity: 'Impersonate', serviceAccountName: 'x' }, { identity: 'Root' }]) {
    const t = translate(gw(a), { port: { port: 1 } });
    assert.equal(t.plan, null, JSON.stringify(a));
    const accepted = t.conditions.find((c) => c.type === 'Accepted')!;
    assert.equal(accepted.status, 'False');
    assert.equal(accepted.reason, 'InvalidIdentity');
  }
  assert.match(translate(gw({ identity: 'Gateway' }), { port: { port: 1 } }).conditions[0]!.message, /Gateway was removed.*ServiceAccount/);
});

test('accessEnded: why a held session or stream may not go on under a changed spec (short, for a close frame), or null', () => {
  const app = { username: users.app!, uid: 'u', groups: ['system:serviceaccounts', 'system:serviceaccounts:team-a'], extra: {} };
  const held = { id: app, method: 'GET', url: '/api/v1/namespaces/team-a/pods/p/exec?command=sh', route: 'kube' };
  const routes = (extra: Record<string, unknown> = {}) => [{ name: 'kube', pathPrefix: '/', apiserver: { rejectPaths: [], ...extra } }];
  const sa = { serviceAccounts: [{ namespace: 'team-a', name: 'app' }] };
  assert.equal(accessEnded(table({ access: [sa], routes: routes() }), held), null);
  // a rule whose window closed, a rule that went, a route no longer granted, renamed, gone, or filtered
  const past = new Date(Date.now() - 60_000).toISOString().replace(/\.\d+Z$/, 'Z');
  assert.equal(accessEnded(table({ access: [{ ...sa, notAfter: past }], routes: routes() }), held), `spec.access[0]'s notAfter ${new Date(Date.parse(past)).toISOString()} has passed`);
  assert.equal(accessEnded(table({ access: [{ users: ['bob'] }], routes: routes() }), held), 'no rule of spec.access names the caller now');
  assert.equal(accessEnded(table({ access: [{ ...sa, routes: ['other'] }], routes: [...routes(), { name: 'other', pathPrefix: '/x', apiserver: {} }] }), held),
    'spec.access no longer grants route kube');
  assert.equal(accessEnded(table({ access: [sa], routes: [{ name: 'renamed', pathPrefix: '/', apiserver: { rejectPaths: [] } }] }), held), 'route kube no longer serves it');
  assert.equal(accessEnded(table({ access: [sa], routes: [{ name: 'kube', pathPrefix: '/apis/', apiserver: {} }] }), held), 'no route serves it now');
  assert.equal(accessEnded(table({ access: [sa], routes: [{ name: 'kube', pathPrefix: '/', apiserver: {} }] }), held), 'spec.routes[0].apiserver.rejectPaths[0] refuses it now');
});

// A spec change asks every held stream again on the event loop (a red team: 100 watches under a
// costly filter held it ~100 ms at once): in slices, other work between; a newer table's recheck
// takes over from an older one's.
test('HeldAccess: a recheck goes on in slices of the event loop; each slice checks at least a few; a newer recheck takes over', async () => {
  const app = { username: users.app!, uid: 'u', groups: ['system:serviceaccounts', 'system:serviceaccounts:team-a'], extra: {} };
  const sa = { serviceAccounts: [{ namespace: 'team-a', name: 'app' }] };
  const routes = [{ name: 'kube', pathPrefix: '/', apiserver: { rejectPaths: [] } }];
  let current = table({ access: [sa], routes });
  const h = new HeldAccess(() => current);
  const ended: number[] = [];
  for (let i = 0; i < 20; i++) h.hold({ id: app, method: 'GET', url: `/api/v1/namespaces/team-a/pods?watch=1&i=${i}`, route: 'kube' }, () => ended.push(i), current);
  const was = { ...recheckSlice };
  Object.assign(recheckSlice, { ms: 0, least: 8 }); // every slice as long as it may be
  try {
    current = table({ access: [{ users: ['bob'] }], routes }); // the caller is named no more
    h.recheck();
    assert.equal(ended.length, 8, 'the first slice');
    await new Promise((r) => setImmediate(r));
    assert.equal(ended.length, 16, 'the next, in a later turn');
    // a newer table while the rest wait: its recheck goes on from the start; the older one stops
    current = table({ access: [{ users: ['carol'] }], routes });
    h.recheck();
    assert.equal(ended.length, 20);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual([ended.length, h.size], [20, 0], 'each ended once');
  } finally {
    Object.assign(recheckSlice, was);
    h.stop();
  }
});

// Two reviews: a newer table's recheck started again from the first stream (tables coming faster
// than a recheck ends left the last ones never asked); a window boundary that passed while a
// recheck ran was skipped (its timer armed from the end, not the start).
test('HeldAccess: a recheck taken over asks what the older one had not first; a window boundary passed while it ran is not missed', async () => {
  const app = { username: users.app!, uid: 'u', groups: ['system:serviceaccounts', 'system:serviceaccounts:team-a'], extra: {} };
  const sa = { serviceAccounts: [{ namespace: 'team-a', name: 'app' }] };
  const routes = [{ name: 'kube', pathPrefix: '/', apiserver: { rejectPaths: [] } }];
  const was = { ...recheckSlice };
  Object.assign(recheckSlice, { ms: 0, least: 8 });
  const open = (current: () => RouteTable, n: number) => {
    const h = new HeldAccess(current);
    const ended: number[] = [];
    for (let i = 0; i < n; i++) h.hold({ id: app, method: 'GET', url: `/api/v1/namespaces/team-a/pods?watch=1&i=${i}`, route: 'kube' }, () => ended.push(i), current());
    return { h, ended };
  };
  try {
    let current = table({ access: [sa], routes });
    const a = open(() => current, 20);
    current = table({ access: [sa], routes: [...routes, { name: 'x', pathPrefix: '/x', apiserver: {} }] }); // still admitted
    a.h.recheck(); // 0-7 asked
    current = table({ access: [{ users: ['bob'] }], routes }); // admitted no more
    a.h.recheck();
    assert.deepEqual(a.ended, [8, 9, 10, 11, 12, 13, 14, 15], 'what the older recheck had not asked, first');
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    assert.equal(a.ended.length, 20);
    a.h.stop();
    // a notAfter that passes while the recheck runs (between its slices)
    const edge = Math.ceil((Date.now() + 300) / 1000) * 1000;
    let now = table({ access: [sa], routes });
    const b = open(() => now, 16);
    now = table({ access: [{ ...sa, notAfter: new Date(edge).toISOString().replace(/\.\d+Z$/, 'Z') }], routes });
    b.h.recheck(); // 0-7: in their window
    assert.equal(b.ended.length, 0);
    while (Date.now() < edge + 20); // (the loop held past the boundary before the next slice)
    await new Promise((r) => setImmediate(r)); // 8-15: past it
    assert.equal(b.ended.length, 8);
    for (let i = 0; i < 50 && b.ended.length < 16; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(b.ended.length, 16, 'those asked before the boundary are asked again');
    b.h.stop();
  } finally {
    Object.assign(recheckSlice, was);
  }
});

test('a replaced table\'s rate limiter gives back its buckets, unless the table that took over keeps it', () => {
  const routes = [{ name: 'r', pathPrefix: '/', apiserver: {} }];
  const callers = { tokens: new EntryBudget(3), buckets: new EntryBudget(3) }; // (the namespace's)
  const old = table({ access: [], routes, rateLimit: { requestsPerSecond: 1, burst: 5 } }, {}, {}, callers);
  for (const c of ['a', 'b', 'c']) old.limiter!.take(c);
  assert.equal(old.limiter!.callers, 3);
  const same = table({ access: [], routes, rateLimit: { requestsPerSecond: 1, burst: 5 } }, {}, {}, callers);
  const shared = Object.create(same, { limiter: { value: old.limiter } }) as RouteTable; // (as steps() keeps an unchanged one)
  old.dispose(shared);
  assert.equal(old.limiter!.callers, 3, 'kept by the table that took over');
  assert.ok(same.limiter!.take('d') > 0, 'the namespace\'s budget spent by the older table\'s buckets');
  old.dispose(same);
  assert.equal(old.limiter!.callers, 0, 'given back');
  assert.equal(same.limiter!.take('d'), 0);
});

test('a namespace\'s rate-limit buckets have a budget of their own: apart from its token caches\' (a review: they took what the limiters\' sweeps freed) and from another namespace\'s', () => {
  const budgets = budgetsFor({ ...defaultLimits, cachedCallersPerNamespace: 2 }, silentLogger);
  const a = budgets.callers('team-a');
  assert.equal(budgets.callers('team-a'), a, 'one per namespace, shared by its gateways');
  while (a.tokens.take()); // (the namespace's token caches hold all theirs)
  const spec = { access: [], routes: [{ name: 'r', pathPrefix: '/', apiserver: {} }], rateLimit: { requestsPerSecond: 1, burst: 5 } };
  const limiter = table(spec, {}, {}, a).limiter!;
  assert.equal(limiter.take('e'), 0);
  assert.equal(limiter.take('f'), 0);
  assert.ok(limiter.take('g') > 0, 'past the namespace\'s 2 buckets, a new caller waits');
  const other = table(spec, {}, {}, budgets.callers('team-b')).limiter!;
  assert.equal(other.take('e'), 0, 'team-a\'s buckets spent take nothing of team-b\'s');
  assert.equal(other.take('f'), 0);
});

// A review vouches for its address (its callers then wait in the namespace's first lane) and is
// charged to the namespace's cache budget only when spec.access admits its caller now: a red team's
// ended rule naming every service account (kept until someone cleans it up) had another team's
// tokens fill the first lane and push out the team's cached callers.
test('a review vouches for its address only when spec.access admits its caller now: not by a rule whose window ended or is to come', async () => {
  const told: [string, boolean][] = [];
  const hour = 3_600_000;
  const iso = (ms: number) => new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');
  const routes = [{ name: 'r', pathPrefix: '/', apiserver: {} }];
  const t = table({
    access: [
      { serviceAccounts: [{ namespace: 'team-a', name: 'app' }] },
      { groups: ['system:serviceaccounts'], notAfter: iso(Date.now() - hour) }, // ended
      { serviceAccounts: [{ namespace: 'team-b', name: '*' }], notBefore: iso(Date.now() + hour) }, // to come
    ],
    routes,
  }, {}, {
    reviewer: {
      async review(tok: string) {
        const username = byToken.get(tok)!;
        const ns = username.split(':')[2]!;
        return { authenticated: true as const, user: { username, uid: 'u', groups: ['system:serviceaccounts', `system:serviceaccounts:${ns}`], extra: {} }, audiences: ['gw'] };
      },
      vouch: (_ns: string, address: string, admitted: boolean) => told.push([address, admitted]),
    },
  });
  const ask = async (who: string, address: string) => {
    try {
      await admit(t, req('/api', who), { caller: '-' } as Seen, { remoteAddress: address } as never);
      return 200;
    } catch (err) {
      return (err as { status: number }).status;
    }
  };
  assert.equal(await ask('app', '10.1.0.1'), 200);
  assert.equal(await ask('other', '10.2.0.1'), 403);
  assert.equal(await ask('limited', '10.1.0.2'), 403, 'named by the ended rule only');
  assert.deepEqual(told, [['10.1.0.1', true], ['10.2.0.1', false], ['10.1.0.2', false]]);
});

test('accessEnded: a session ends when its route acts as another identity or reaches another Service', () => {
  const app = { username: users.app!, uid: 'u', groups: ['system:serviceaccounts', 'system:serviceaccounts:team-a'], extra: {} };
  const sa = { serviceAccounts: [{ namespace: 'team-a', name: 'app' }] };
  const kube = (apiserver: Record<string, unknown>) => table({ access: [sa], routes: [{ name: 'kube', pathPrefix: '/', apiserver: { rejectPaths: [], ...apiserver } }] });
  const asAdmin = kube({ identity: 'ServiceAccount', serviceAccountName: 'admin' }).routes[0]!;
  const held = { id: app, method: 'GET', url: '/api/v1/namespaces/team-a/pods/p/exec?command=sh', route: 'kube', filtered: asAdmin.filtered, acts: asAdmin.acts };
  assert.equal(accessEnded(kube({ identity: 'ServiceAccount', serviceAccountName: 'admin' }), held), null);
  assert.equal(accessEnded(kube({ identity: 'Impersonate' }), held), 'route kube now acts as or reaches another; open it again');
  assert.equal(accessEnded(kube({ identity: 'ServiceAccount', serviceAccountName: 'viewer' }), held), 'route kube now acts as or reaches another; open it again');
  const svc = (name: string) => table({ access: [sa], routes: [{ name: 'web', pathPrefix: '/', service: { name, port: 'http' } }] }, {
    services: { [`team-a/${name}`]: { metadata: { name, namespace: 'team-a' }, spec: { ports: [{ name: 'http', port: 80 }] } } },
    endpointSlices: { [`team-a/${name}`]: [{ ports: [{ name: 'http', port: 8080 }], endpoints: [{ addresses: ['198.18.0.2'] }] }] },
  });
  const ws = { id: app, method: 'GET', url: '/socket', route: 'web', acts: svc('ledger').routes[0]!.acts };
  assert.equal(accessEnded(svc('ledger'), ws), null);
  assert.equal(accessEnded(svc('vault'), ws), 'route web now acts as or reaches another; open it again');
});

test('accessEnded: a session ends when spec.authentication changes (its caller is not authenticated again); other changes keep it', () => {
  const app = { username: users.app!, uid: 'u', groups: ['system:serviceaccounts', 'system:serviceaccounts:team-a'], extra: {} };
  const sa = { serviceAccounts: [{ namespace: 'team-a', name: 'app' }] };
  const routes = [{ name: 'kube', pathPrefix: '/', apiserver: {} }];
  const at = (authentication: Record<string, unknown>, extra: Record<string, unknown> = {}) => table({ authentication, access: [sa], routes, ...extra });
  const first = at({ audiences: ['gw'] });
  const held = { id: app, method: 'GET', url: '/api/v1/namespaces/team-a/configmaps?watch=1', route: 'kube', filtered: first.routes[0]!.filtered, acts: first.routes[0]!.acts, authn: first.routes[0]!.authn.token };
  assert.equal(accessEnded(at({ audiences: ['gw'] }), held), null);
  assert.equal(accessEnded(at({ audiences: ['gw'] }, { rateLimit: { requestsPerSecond: 5, burst: 5 } }), held), null);
  const why = 'spec.authentication or the client CA changed; open it again to be authenticated';
  assert.equal(accessEnded(at({ audiences: ['gw2'] }), held), why);
  // the cache's TTL and the audiences' order admit the same callers: kept
  assert.equal(accessEnded(at({ audiences: ['gw'], cacheTTLSeconds: 0 }), held), null);
  assert.equal(accessEnded(at({ audiences: ['gw', 'gw2'] }), { ...held, authn: at({ audiences: ['gw2', 'gw'] }).routes[0]!.authn.token }), null);
  assert.equal(accessEnded(at({ audiences: ['gw', 'gw2'] }), held), why);
  // a client CA renewed: an optional one ends only the sessions of callers it checked (their
  // certificate's); a required one every caller's (each passed it)
  const withCA = (pem: string, required: boolean) => ({ authn: authnKeys({ ...first.plan, tls: { clientCA: { pem, required, prefix: 'x:' } } } as never) }) as never;
  const cert = { ...app, viaCertificate: true } as never;
  assert.equal(authnOf(app, withCA('A', false)), authnOf(app, withCA('B', false)));
  assert.notEqual(authnOf(cert, withCA('A', false)), authnOf(cert, withCA('B', false)));
  assert.notEqual(authnOf(app, withCA('A', true)), authnOf(app, withCA('B', true)));
  assert.notEqual(authnOf(app, withCA('A', false)), authnOf(app, withCA('A', true)), 'a CA made required');
  // and the listener asks again when it changes: a table made from the one before keeps its epoch
  // only when it admits the same
  const next = (before: RouteTable, after: RouteTable) => RouteTable.build(after.plan, (before as unknown as { deps: DataplaneDeps }).deps, before);
  const sameEpoch = (before: RouteTable, after: RouteTable) => next(before, after).epoch === before.epoch;
  assert.equal(sameEpoch(first, at({ audiences: ['gw'] })), true);
  assert.equal(sameEpoch(first, at({ audiences: ['gw2'] })), false);
  assert.equal(sameEpoch(first, table({ authentication: { audiences: ['gw'] }, access: [sa], routes: [{ name: 'kube', pathPrefix: '/', apiserver: { rejectPaths: ['^/x'] } }] })), false);
  assert.equal(sameEpoch(first, table({ authentication: { audiences: ['gw'] }, access: [{ users: ['bob'] }], routes })), false);
  assert.equal(sameEpoch(first, table({ authentication: { audiences: ['gw'] }, access: [sa], routes: [...routes, { name: 'more', pathPrefix: '/more/', apiserver: {} }] })), false);
  // a Service's endpoints aside, over a chain of tables (each made from the one before)
  const svc = (ip: string) => table({ access: [sa], routes: [{ name: 'web', pathPrefix: '/', service: { name: 'ledger', port: 'http' } }] }, {
    services: { 'team-a/ledger': { metadata: { name: 'ledger', namespace: 'team-a' }, spec: { ports: [{ name: 'http', port: 80 }] } } },
    endpointSlices: { 'team-a/ledger': [{ ports: [{ name: 'http', port: 8080 }], endpoints: [{ addresses: [ip] }] }] },
  });
  const s1 = svc('198.18.0.2');
  const s2 = next(s1, svc('198.18.0.3'));
  const s3 = next(s2, svc('198.18.0.4'));
  assert.equal(s3.epoch, s1.epoch);
  assert.notEqual(s3.seq, s1.seq);
});

test('an Impersonate route impersonates only the gateway namespace\'s service accounts: another team\'s token that reached it is refused', async () => {
  const t = table({ access: [{ groups: ['system:serviceaccounts'] }], routes: [
    { name: 'kube', pathPrefix: '/api/', apiserver: {} },
    { name: 'as-reader', pathPrefix: '/apis/', apiserver: { identity: 'ServiceAccount', serviceAccountName: 'reader' } },
    { name: 'own', pathPrefix: '/raw/', apiserver: { identity: 'Passthrough' } },
  ] });
  assert.equal(await status(t, '/api/v1/namespaces/team-a/secrets', 'app'), 'kube /api/v1/namespaces/team-a/secrets');
  await assert.rejects(async () => admit(t, req('/api/v1/namespaces/team-b/secrets', 'other'), { caller: '-' } as Seen),
    (e: any) => e.status === 403 && /only service accounts of namespace team-a are impersonated here \(the caller is system:serviceaccount:team-b:x\)/.test(e.message));
  // acting as the gateway's own account, or presenting its own token, gives team-a nothing of team-b's
  assert.equal(await status(t, '/apis/apps/v1', 'other'), 'as-reader /apis/apps/v1');
  assert.equal(await status(t, '/raw/x', 'other'), 'own /raw/x');
});

test('a Service route to another namespace forwards only the gateway namespace\'s service accounts: another team\'s token that reached it is refused', async () => {
  // team-c grants team-a's gateways its ledger; team-b's token (for team-a's audience) reached team-a
  const snap = {
    services: {
      'team-c/ledger': { metadata: { name: 'ledger', namespace: 'team-c' }, spec: { ports: [{ name: 'http', port: 80 }] } },
      'team-a/own': { metadata: { name: 'own', namespace: 'team-a' }, spec: { ports: [{ name: 'http', port: 80 }] } },
    },
    endpointSlices: {
      'team-c/ledger': [{ ports: [{ name: 'http', port: 8080 }], endpoints: [{ addresses: ['198.18.0.2'] }] }],
      'team-a/own': [{ ports: [{ name: 'http', port: 8080 }], endpoints: [{ addresses: ['198.18.0.3'] }] }],
    },
    referenceGrants: { 'team-c': [{ spec: { from: [{ group: 'access-gateway.io', kind: 'AccessGateway', namespace: 'team-a' }], to: [{ group: '', kind: 'Service' }] } }] },
  };
  const t = table({ access: [{ groups: ['system:serviceaccounts'] }], routes: [
    { name: 'ledger', pathPrefix: '/ledger/', service: { name: 'ledger', namespace: 'team-c', port: 'http' } },
    { name: 'own', pathPrefix: '/own/', service: { name: 'own', port: 'http' } },
  ] }, snap);
  assert.equal(await status(t, '/ledger/x', 'app'), 'ledger /ledger/x');
  await assert.rejects(async () => admit(t, req('/ledger/x', 'other'), { caller: '-' } as Seen),
    (e: any) => e.status === 403 && /forwards to namespace team-c, and only service accounts of namespace team-a are forwarded to another namespace's Service \(the caller is system:serviceaccount:team-b:x\)/.test(e.message));
  // the services-proxy URL form is the same request
  assert.equal(await status(t, '/api/v1/namespaces/team-c/services/ledger:http/proxy/ledger/x', 'app'), 'ledger /ledger/x');
  assert.equal(await status(t, '/api/v1/namespaces/team-c/services/ledger:http/proxy/ledger/x', 'other'), 403);
  // the gateway's own Service: team-b's caller reaches what team-a runs, which gives team-a nothing
  assert.equal(await status(t, '/own/x', 'other'), 'own /own/x');
  // discovery lists only the routes that would take the caller; the refusals are denials of the route
  const listed = (who: string) => discovery(t, { username: users[who]!, uid: '', groups: ['system:serviceaccounts'], extra: {} }).routes.map((r) => r.name);
  assert.deepEqual(listed('other'), ['own']);
  assert.deepEqual(listed('app'), ['ledger', 'own']);
  const deps = (t as unknown as { deps: DataplaneDeps }).deps;
  const e = await deps.metrics.exposition();
  assert.match(e.head + Buffer.concat([...e.chunks]).toString(), /^access_gateway_authorization_denials_total\{namespace="team-a",gateway="gw",reason="route"\} 2$/m);
  t.dispose();
});

test('accessEnded: a held stream\'s filters are not run again while they are those that admitted it; changed, they are run if cheap, else it is ended', (t) => {
  const checks = new FilterChecks();
  t.after(() => checks.close());
  const app = { username: users.app!, uid: 'u', groups: ['system:serviceaccounts', 'system:serviceaccounts:team-a'], extra: {} };
  const sa = { serviceAccounts: [{ namespace: 'team-a', name: 'app' }] };
  // patterns whose check on a long path would cost the event loop (size x length over the bound)
  const hostile = Array.from({ length: 8 }, (_, i) => `[ab/]*a[ab/]{${40 + i}}[0-9]`);
  const long = `/api/v1/namespaces/team-a/configmaps/${'ab'.repeat(1500)}?watch=1`;
  const made = table({ access: [sa], routes: [{ name: 'kube', pathPrefix: '/', apiserver: { rejectPaths: hostile } }] }, {}, { filterChecks: checks });
  const route = made.routes[0]!;
  assert.ok(!checks.cheap(route.filter!, long.split('?')[0]!));
  const held = { id: app, method: 'GET', url: long, route: 'kube', filtered: route.filtered };
  // the same filters (a new table of an unchanged spec): not run at all, so nothing is spent
  const again = table({ access: [sa], routes: [{ name: 'kube', pathPrefix: '/', apiserver: { rejectPaths: hostile } }] }, {}, { filterChecks: checks });
  assert.equal(accessEnded(again, held), null);
  // (a path a filter refuses, held as if that filter had let it through: not run, so not refused)
  const secrets = table({ access: [sa], routes: [{ name: 'kube', pathPrefix: '/', apiserver: { rejectPaths: ['secrets'] } }] }, {}, { filterChecks: checks });
  const refusedIfRun = { ...held, url: '/api/v1/namespaces/team-a/secrets?watch=1', filtered: secrets.routes[0]!.filtered };
  assert.equal(accessEnded(secrets, refusedIfRun), null);
  assert.equal(accessEnded(secrets, { ...refusedIfRun, filtered: undefined }), 'spec.routes[0].apiserver.rejectPaths[0] refuses it now');
  // the filters changed: too costly to run now, so ended (opened again, it is checked on the thread)
  const changed = table({ access: [sa], routes: [{ name: 'kube', pathPrefix: '/', apiserver: { rejectPaths: [...hostile, 'x'] } }] }, {}, { filterChecks: checks });
  assert.equal(accessEnded(changed, held), 'route kube\'s filters changed; open it again to be checked');
  // changed, and cheap to run: run at once
  const short = { ...held, url: '/api/v1/namespaces/team-a/configmaps?watch=1' };
  assert.equal(accessEnded(changed, short), null);
  // what costs is the path the filters see: after a long rewritePrefix, a short request's is long
  const rewritten = table({ access: [sa], routes: [{ name: 'kube', pathPrefix: '/', rewritePrefix: `/${'r'.repeat(1000)}`, apiserver: { rejectPaths: hostile } }] }, {}, { filterChecks: checks });
  assert.equal(accessEnded(rewritten, short), 'route kube\'s filters changed; open it again to be checked');
  // cheap, but the namespace's event-loop time for filters is used up (a spec change asks every
  // held stream at once): ended too
  let now = 0;
  const spent = new FilterChecks(undefined, {}, () => (now += 200));
  t.after(() => spent.close());
  const busy = table({ access: [sa], routes: [{ name: 'kube', pathPrefix: '/', apiserver: { rejectPaths: [...hostile, 'x'] } }] }, {}, { filterChecks: spent });
  assert.equal(accessEnded(busy, short), null, 'the first check runs (100 ms saved), and takes 200 ms of this clock');
  assert.equal(accessEnded(busy, short), 'route kube\'s filters changed; open it again to be checked');
  const refuses = table({ access: [sa], routes: [{ name: 'kube', pathPrefix: '/', apiserver: { rejectPaths: ['configmaps'] } }] }, {}, { filterChecks: checks });
  assert.equal(accessEnded(refuses, short), 'spec.routes[0].apiserver.rejectPaths[0] refuses it now');
  // the same patterns under another rewrite are another verdict: asked again
  assert.notEqual(route.filtered, table({ access: [sa], routes: [{ name: 'kube', pathPrefix: '/k', rewritePrefix: '/', apiserver: { rejectPaths: hostile } }] }).routes[0]!.filtered);
});

test('a table built for the same spec with other endpoints shares what the previous one compiled (its access policy, each route\'s filter and metrics); a changed route or spec.access is compiled anew', () => {
  const pools = new PoolRegistry();
  const deps = { apiserver: {} as DataplaneDeps['apiserver'], log: silentLogger, pools, metrics: testMetrics(), reviewer: {} as DataplaneDeps['reviewer'] };
  const plan = (ips: string[], accept = '^/api/', users = ['alice']) => {
    const gw = { apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: 'gw', namespace: 'team-a', generation: 1 },
      spec: { authentication: { audiences: ['gw'] }, access: [{ users }], routes: [
        { name: 'kube', pathPrefix: '/k', apiserver: { acceptPaths: [accept] } },
        { name: 'web', pathPrefix: '/w', service: { name: 'web', port: 'http' } }] } } as unknown as AccessGateway;
    const t = translate(applyDefaults(gw), { port: { port: 1 }, services: { 'team-a/web': { spec: { ports: [{ name: 'http', port: 80 }] } } },
      endpointSlices: { 'team-a/web': [{ ports: [{ name: 'http', port: 8080 }], endpoints: ips.map((ip) => ({ addresses: [ip] })) }] } } as never);
    assert.ok(t.plan, JSON.stringify(t.conditions));
    return t.plan;
  };
  const first = RouteTable.build(plan(['198.18.0.2']), deps);
  const moved = RouteTable.build(plan(['198.18.0.3']), deps, first);
  assert.equal(moved.policy, first.policy);
  assert.equal(moved.routes[0]!.filter, first.routes[0]!.filter);
  assert.equal(moved.routes[0]!.m, first.routes[0]!.m);
  assert.equal(moved.routes[1]!.m, first.routes[1]!.m);
  assert.deepEqual(moved.routes[1]!.backend!.pools.map((p) => p.host), ['198.18.0.3:8080'], 'its own endpoints');
  assert.deepEqual(first.routes[1]!.backend!.pools.map((p) => p.host), ['198.18.0.2:8080']);
  const filtered = RouteTable.build(plan(['198.18.0.3'], '^/apis/'), deps, moved);
  assert.notEqual(filtered.routes[0]!.filter, moved.routes[0]!.filter);
  assert.equal(filtered.routes[0]!.filter!.check('GET', '/k/apis/x') && 'accepted' in filtered.routes[0]!.filter!.check('GET', '/apis/x'), true);
  assert.equal(filtered.routes[1]!.m, moved.routes[1]!.m, 'an unchanged route is shared still');
  const access = RouteTable.build(plan(['198.18.0.3'], '^/apis/', ['bob']), deps, filtered);
  assert.notEqual(access.policy, filtered.policy);
  for (const t of [first, moved, filtered, access]) t.dispose();
  assert.equal(pools.size, 0);
});

test('a new gateway\'s own series are made before its routes\': a namespace near its series bound spends it on them first', async () => {
  const metrics = createMetrics(new Registry(), { maxSeriesPerNamespace: 200 });
  const routes = Array.from({ length: 30 }, (_, i) => ({ name: `r${i}`, pathPrefix: `/r${i}`, apiserver: {} }));
  const t = table({ access: [{ groups: ['system:serviceaccounts'] }], routes }, {}, { metrics });
  const e = await metrics.exposition();
  const text = e.head + Buffer.concat([...e.chunks]).toString();
  assert.match(text, /^access_gateway_authentications_total\{namespace="team-a",gateway="gw",result="allowed"\} 0$/m);
  assert.match(text, /^access_gateway_responses_total\{namespace="team-a",gateway="gw",route="",code="4xx"\} 0$/m);
  assert.match(text, /route="\(overflow\)"/, 'the bound was reached (by the routes)');
  t.dispose();
});

test('a request admitted again to a route that does not impersonate (a spec change) no longer says in its access line whom it asked to act as', () => {
  const seen: Seen = { caller: 'alice', as: 'bob' }; // from its first admission, by an Impersonate route
  const a = { route: { plan: { target: { kind: 'service' } } } } as unknown as RouteAdmitted;
  assert.equal(checkImpersonation({} as RouteTable, a, {} as RequestHead, seen), a);
  assert.equal(seen.as, undefined);
});

// After a wait for an apiserver slot a request is admitted again (`before`): its admission is kept
// when nothing it depends on has changed, and asked again in full when something has.
test('admitted again after a wait: the same admission is kept while the table, the caller and its access decision are unchanged', async () => {
  const routes = [{ name: 'kube', pathPrefix: '/api/', apiserver: { rejectPaths: [] } }, { name: 'other', pathPrefix: '/', apiserver: { rejectPaths: [] } }];
  const access = [{ serviceAccounts: [{ namespace: 'team-a', name: 'app' }] }, { serviceAccounts: [{ namespace: 'team-a', name: 'limited' }] }];
  const t = table({ access, routes });
  const h = req('/api/v1/namespaces/team-a/pods', 'app');
  const seen = newSeen();
  const a = await admit(t, h, seen) as RouteAdmitted;
  assert.equal(a.kind, 'route');
  assert.equal(admit(t, h, seen, undefined, true, { t, a }), a, 'kept: no new admission');
  // another table (a spec change that keeps the authenticator and the access policy, so the same
  // caller object and decision): asked in full, refused by its route's new filter
  const t2 = table({ access, routes: [{ ...routes[0], apiserver: { rejectPaths: ['^/api/v1/namespaces/team-a/pods'] } }, routes[1]] }, {}, {}, undefined, t);
  assert.throws(() => admit(t2, h, seen, undefined, true, { t, a }), { status: 403 });
  // another caller, allowed every route too (a token's cached answer replaced): asked in full, as itself
  const h2 = req('/api/v1/namespaces/team-a/pods', 'limited');
  await admit(t, h2, newSeen()); // (its review cached)
  const other = admit(t, h2, seen, undefined, true, { t, a }) as RouteAdmitted;
  assert.equal(other.id.username, users.limited);
  // a request that asked to act as someone (kubectl --as): its decision is asked again
  const withAs = { ...a, as: { user: 'bob', groups: [], extra: {} } } as unknown as RouteAdmitted;
  const s3 = newSeen();
  await admit(t, h, s3);
  const fresh = admit(t, h, s3, undefined, true, { t, a: withAs }) as RouteAdmitted;
  assert.notEqual(fresh, withAs);
  assert.equal(fresh.as, undefined);
  t2.dispose();
});

test('admitted again after a wait: a window that closed meanwhile refuses the request (403), though the table and caller are the same', async () => {
  const routes = [{ name: 'kube', pathPrefix: '/', apiserver: { rejectPaths: [] } }];
  const until = Date.now() + 300;
  const t = table({ access: [{ serviceAccounts: [{ namespace: 'team-a', name: 'app' }], notAfter: new Date(until).toISOString() }], routes });
  const h = req('/api/v1/namespaces/team-a/pods', 'app');
  const seen = newSeen();
  const a = await admit(t, h, seen) as RouteAdmitted;
  assert.equal(a.kind, 'route');
  await new Promise((r) => setTimeout(r, until - Date.now() + 20));
  assert.throws(() => admit(t, h, seen, undefined, true, { t, a }), (err: { status: number; message: string }) => err.status === 403 && /notAfter/.test(err.message));
  t.dispose();
});
