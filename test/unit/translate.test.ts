// Golden tests: testdata/translate/NAME.in.yaml ({gateway, snapshot}) -> NAME.out.yaml
// ({plan, conditions}). Regenerate with UPDATE_GOLDEN=1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';
import { applyDefaults } from '../../src/api/defaults.js';
import { translate } from '../../src/translate/translate.js';
import { podAddress } from '../../src/translate/services.js';
import { validateGateway } from '../../src/api/validate.js';
import { equal } from '../../src/translate/plan.js';

const dir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test', 'unit', 'testdata', 'translate');

for (const file of readdirSync(dir).filter((f) => f.endsWith('.in.yaml'))) {
  test(`translate ${file}`, () => {
    const input = parse(readFileSync(join(dir, file), 'utf8'));
    const got = translate(applyDefaults(input.gateway), input.snapshot);
    const outFile = join(dir, file.replace('.in.yaml', '.out.yaml'));
    const text = stringify(got);
    if (process.env.UPDATE_GOLDEN) writeFileSync(outFile, text);
    assert.deepEqual(got, parse(readFileSync(outFile, 'utf8')));
  });
}

test('equal ignores the generation and sees any other change', () => {
  const input = parse(readFileSync(join(dir, 'apiserver-route.in.yaml'), 'utf8'));
  const a = translate(applyDefaults(input.gateway), input.snapshot).plan!;
  const b = { ...a, generation: a.generation + 1 };
  assert.ok(equal(a, b));
  assert.ok(!equal(a, { ...a, port: a.port + 1 }));
  assert.ok(!equal(a, null));
  // walked, not written out: JSON's equality all the same
  const deep = (p: typeof a) => JSON.parse(JSON.stringify(p)) as typeof a;
  assert.ok(equal(a, deep(a)), 'a copy');
  const r0 = a.routes[0]!;
  assert.ok(!equal(a, { ...a, routes: [{ ...r0, methods: ['GET'] }, ...a.routes.slice(1)] }), 'a nested change');
  assert.ok(!equal(a, { ...a, routes: [...a.routes, r0] }), 'one more');
  assert.ok(!equal(a, { ...a, routes: a.routes.slice(1) }), 'one fewer');
  assert.ok(equal(a, { ...a, rateLimit: a.rateLimit, extra: undefined } as typeof a), 'an undefined member is absent, as in JSON');
  assert.ok(!equal(a, { ...a, extra: null } as unknown as typeof a), 'null is not absent');
  assert.ok(!equal(a, { ...a, access: {} as unknown as typeof a.access }), 'an object is not an array');
  const reordered = Object.fromEntries(Object.entries(a).reverse()) as typeof a;
  assert.ok(equal(a, reordered), 'members in another order');
});

test('filters that compile to too many RE2 instructions are InvalidRegex, per route and per gateway; validate says the same', () => {
  const input = parse(readFileSync(join(dir, 'apiserver-route.in.yaml'), 'utf8'));
  // n + 6 instructions; 1,000 is RE2's largest repeat
  const big = (n: number) => `[ab/]*a[ab/]{${n}}[0-9]`;
  const apiRoute = (i: number, rejectPaths: string[]) => ({ name: `api-${i}`, pathPrefix: `/p${i}`, apiserver: { acceptPaths: ['^/'], rejectPaths } });
  const gateway = (routes: object[]) => ({ ...input.gateway, spec: { ...input.gateway.spec, access: [{ groups: ['system:serviceaccounts:team-payments'] }], routes } });
  const accepted = (routes: object[]) => translate(applyDefaults(gateway(routes)), input.snapshot).conditions.find((c) => c.type === 'Accepted')!;
  const problems = (routes: object[]) => validateGateway(gateway(routes)).map((p) => `${p.field}: ${p.message}`);

  const full = [big(1000), big(1000)]; // 2,012 and '^/' : within a route's 2,048
  assert.equal(accepted([apiRoute(0, full)]).status, 'True');
  assert.deepEqual(problems([apiRoute(0, full)]), []);

  const over = accepted([apiRoute(0, [...full, big(100)])]);
  assert.equal(over.status, 'False');
  assert.equal(over.reason, 'InvalidRegex');
  assert.match(over.message, /^spec\.routes\[0\]\.apiserver: its acceptPaths, rejectPaths and rejectMethods compile to more than the 2048 RE2 instructions a route may have/);
  // checking stops there: a pattern after it is not compiled (its problem is not reported)
  assert.match(accepted([apiRoute(0, [...full, big(100), '(?<=x)'])]).message, /more than the 2048/);
  assert.match(problems([apiRoute(0, [...full, big(100)])]).join('\n'), /^spec\.routes\[0\]\.apiserver: its acceptPaths.* more than the 2048/);

  // four such routes fit in a gateway's 8,192; five do not
  const routes = (n: number) => Array.from({ length: n }, (_, i) => apiRoute(i, full));
  assert.equal(accepted(routes(4)).status, 'True');
  const five = accepted(routes(5));
  assert.equal(five.reason, 'InvalidRegex');
  assert.match(five.message, /^spec\.routes: the routes' acceptPaths, rejectPaths and rejectMethods compile to more than the 8192 RE2 instructions a gateway may have \(passed at spec\.routes\[4\]\.apiserver\)/);
  assert.deepEqual(problems(routes(5)), ['spec.routes: the routes\' acceptPaths, rejectPaths and rejectMethods compile to more than the 8192 RE2 instructions a gateway may have (passed at spec.routes[4].apiserver)']);
  // a pattern RE2 cannot compile is still named with its field
  assert.match(accepted([apiRoute(0, ['(?<=x)'])]).message, /^spec\.routes\[0\]\.apiserver\.rejectPaths\[0\] "\(\?<=x\)": .*invalid/);

  // 256 different patterns in a gateway (each compiled one is held: ~4.5 KiB), however small; the
  // same pattern again is not another
  const tiny = (from: number, n: number) => Array.from({ length: n }, (_, k) => `^/x${from + k}$`);
  const many = (n: number) => Array.from({ length: Math.ceil(n / 32) }, (_, i) => apiRoute(i, tiny(i * 32, Math.min(32, n - i * 32))));
  assert.equal(accepted(many(255)).status, 'True', '255 and \'^/\'');
  assert.deepEqual(problems(many(255)), []);
  assert.equal(accepted([...many(255), apiRoute(8, tiny(0, 32))]).status, 'True', 'repeated patterns');
  // character ranges, which building a route's DFA reads all of: \p{L} holds 684
  const letters = (n: number) => `^/\\pL{${n}}`;
  assert.equal(accepted([apiRoute(0, [letters(73)])]).status, 'True', '73 × 684: 49,932 of 50,000');
  assert.deepEqual(problems([apiRoute(0, [letters(73)])]), []);
  const ranges = accepted([apiRoute(0, [letters(40)]), apiRoute(1, [letters(40)])]);
  assert.equal(ranges.reason, 'InvalidRegex');
  assert.equal(ranges.message, 'spec.routes: the routes\' acceptPaths, rejectPaths and rejectMethods hold more than the 50000 character ranges a gateway\'s patterns may hold (compiling them blocks the operator every team shares) (passed at spec.routes[1].apiserver)');
  assert.deepEqual(problems([apiRoute(0, [letters(40)]), apiRoute(1, [letters(40)])]), [ranges.message]);
  // and at most 32 Unicode classes (\p, \P), whatever they compile to: parsing is what costs
  const classes = (n: number) => `(?i)[^${'\\PL'.repeat(n)}]`;
  assert.equal(accepted([apiRoute(0, [classes(16)]), apiRoute(1, [classes(16)])]).status, 'True', '32');
  const named = accepted([apiRoute(0, [classes(16)]), apiRoute(1, [classes(17)])]);
  assert.equal(named.reason, 'InvalidRegex');
  assert.equal(named.message, 'spec.routes: the routes\' acceptPaths, rejectPaths and rejectMethods name more than the 32 Unicode classes (\\p, \\P) a gateway\'s patterns may name (parsing them blocks the operator every team shares) (passed at spec.routes[1].apiserver)');
  assert.deepEqual(problems([apiRoute(0, [classes(16)]), apiRoute(1, [classes(17)])]), [named.message]);
  assert.equal(accepted([apiRoute(0, [classes(16)]), apiRoute(1, [classes(16), '^/a\\\\pL$'])]).status, 'True', 'an escaped backslash before p is no 33rd class');
  // and at most 20,000 code points of case-insensitive class ranges, walked one by one to fold them
  const folding = (hi: string) => `(?i)[B-\\x{${hi}}]`;
  assert.equal(accepted([apiRoute(0, [folding('4E5F')])]).status, 'True', '19,998 (0x42-0x4E5F)');
  const fold = accepted([apiRoute(0, [folding('4E5F')]), apiRoute(1, ['(?i)^/[a-c]'])]);
  assert.equal(fold.reason, 'InvalidRegex');
  assert.equal(fold.message, 'spec.routes: the routes\' acceptPaths, rejectPaths and rejectMethods case-fold more than the 20000 code points of class ranges a gateway\'s patterns may fold (parsing them blocks the operator every team shares) (passed at spec.routes[1].apiserver)');
  assert.deepEqual(problems([apiRoute(0, [folding('4E5F')]), apiRoute(1, ['(?i)^/[a-c]'])]), [fold.message]);
  const more = accepted(many(256));
  assert.equal(more.reason, 'InvalidRegex');
  assert.equal(more.message, 'spec.routes: the routes\' acceptPaths, rejectPaths and rejectMethods hold more than the 256 different patterns a gateway may have (passed at spec.routes[7].apiserver.rejectPaths[31])');
  assert.deepEqual(problems(many(256)), [`spec.routes: ${more.message.slice('spec.routes: '.length)}`]);
  // the default acceptPaths (^.*) counts, in the cluster and in `validate` alike
  const noAccept = Array.from({ length: 8 }, (_, i) => ({ name: `api-${i}`, pathPrefix: `/p${i}`, apiserver: { rejectPaths: tiny(i * 32, 32) } }));
  assert.equal(accepted(noAccept).reason, 'InvalidRegex');
  assert.match(problems(noAccept).join('\n'), /more than the 256 different patterns/);
});

test('an EndpointSlice address that cannot be a pod\'s is left out', () => {
  for (const ip of ['127.0.0.1', '127.9.9.9', '169.254.169.254', '0.0.0.0', '224.0.0.1', '255.255.255.255', '::1', '::', 'fe80::1', 'ff02::1', '::ffff:127.0.0.1',
    '::ffff:169.254.169.254', '0:0:0:0:0:0:0:1', '::ffff:7f00:1', 'FE80::1', 'fd00:ec2::254', 'not-an-ip', '']) {
    assert.equal(podAddress(ip), false, ip);
  }
  for (const ip of ['10.0.0.1', '198.18.0.12', '172.16.0.1', '192.168.1.1', 'fd00::1', '2001:db8::1', '::ffff:10.0.0.1']) {
    assert.equal(podAddress(ip), true, ip);
  }
});

/** team-a's gateway with one route to its Service web, port 80. */
const serviceGateway = () => applyDefaults(parse(`
apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: g, namespace: team-a, generation: 1}
spec:
  authentication: {audiences: [gw]}
  access: [{groups: [system:serviceaccounts:team-a]}]
  routes: [{name: web, pathPrefix: /, service: {name: web, port: 80}}]
`));

test('a route to a port past the first ones read of a Service with more says so', () => {
  const gw = serviceGateway();
  const run = (morePorts?: number) => translate(gw, {
    port: { port: 20000 },
    services: { 'team-a/web': { spec: { ports: [{ port: 81 }], ...(morePorts ? { morePorts } : {}) } } },
    endpointSlices: {},
  }).conditions.find((c) => c.type === 'ResolvedRefs')!;
  assert.equal(run(256).reason, 'BackendNotFound');
  assert.match(run(256).message, /Service team-a\/web has no TCP port 80 among the first 256 of its ports \(the operator reads no more\)/);
  assert.match(run().message, /has no TCP port 80$/);
  // a slice whose port is past the first ones read gives no endpoints, saying why
  const sliced = translate(gw, {
    port: { port: 20000 },
    services: { 'team-a/web': { spec: { ports: [{ port: 80 }] } } },
    endpointSlices: { 'team-a/web': [{ addressType: 'IPv4', ports: [{ name: 'other', port: 1 }], morePorts: 256, endpoints: [{ addresses: ['198.18.0.10'] }] }] },
  }).conditions.find((c) => c.type === 'ResolvedRefs')!;
  assert.match(sliced.message, /has no ready endpoints \(an EndpointSlice of it has more than 256 ports: the operator reads the first 256\)$/);
});

test('with pods checked, an EndpointSlice address is used only when it is an IP of the live pod its endpoint names, in the Service\'s namespace', () => {
  const gw = serviceGateway();
  const pod = (over: Record<string, unknown> = {}) => ({ metadata: { uid: 'u1' }, status: { phase: 'Running', podIPs: [{ ip: '198.18.0.10' }, { ip: 'fd00::10' }] }, ...over });
  const run = (endpoint: Record<string, unknown>, pods: Record<string, unknown> | undefined, ip = '198.18.0.10') => {
    const t = translate(gw, {
      port: { port: 20000 },
      services: { 'team-a/web': { spec: { ports: [{ port: 80 }] } } },
      endpointSlices: { 'team-a/web': [{ addressType: 'IPv4', ports: [{ name: '', port: 8080 }], endpoints: [{ addresses: [ip], ...endpoint }] }] },
      ...(pods ? { pods: pods as any } : {}),
    });
    const target = t.plan?.routes[0]?.target as { endpoints?: { ip: string }[] } | undefined;
    const resolved = t.conditions.find((c) => c.type === 'ResolvedRefs')!;
    return { ips: (target?.endpoints ?? []).map((e) => e.ip), resolved };
  };
  const ref = { kind: 'Pod', name: 'web-1', uid: 'u1' };
  // the pod's own IP (its second one too), with or without the namespace and uid in the ref
  assert.deepEqual(run({ targetRef: ref }, { 'team-a/web-1': pod() }).ips, ['198.18.0.10']);
  assert.deepEqual(run({ targetRef: ref }, { 'team-a/web-1': pod() }, 'fd00::10').ips, ['fd00::10']);
  assert.deepEqual(run({ targetRef: { kind: 'Pod', name: 'web-1', namespace: 'team-a' } }, { 'team-a/web-1': pod() }).ips, ['198.18.0.10']);
  // not checked without pods (--endpoint-addresses any)
  assert.deepEqual(run({}, undefined).ips, ['198.18.0.10']);
  const refused: [string, Record<string, unknown>, Record<string, unknown>][] = [
    ['no targetRef', {}, { 'team-a/web-1': pod() }],
    ['a targetRef that is not a pod', { targetRef: { kind: 'Node', name: 'web-1' } }, { 'team-a/web-1': pod() }],
    ['another namespace\'s pod', { targetRef: { ...ref, namespace: 'team-b' } }, { 'team-a/web-1': pod(), 'team-b/web-1': pod() }],
    ['a pod that is not there', { targetRef: ref }, {}],
    ['another pod of that name (uid)', { targetRef: ref }, { 'team-a/web-1': pod({ metadata: { uid: 'u2' } }) }],
    ['an IP that is not the pod\'s', { targetRef: ref }, { 'team-a/web-1': pod({ status: { phase: 'Running', podIPs: [{ ip: '198.18.0.11' }] } }) }],
    ['a pod with no IP yet', { targetRef: ref }, { 'team-a/web-1': pod({ status: { phase: 'Pending' } }) }],
    ['a deleted pod', { targetRef: ref }, { 'team-a/web-1': pod({ metadata: { uid: 'u1', deletionTimestamp: '2026-12-04T00:00:00Z' } }) }],
    ['a finished pod', { targetRef: ref }, { 'team-a/web-1': pod({ status: { phase: 'Succeeded', podIPs: [{ ip: '198.18.0.10' }] } }) }],
    ['a failed pod', { targetRef: ref }, { 'team-a/web-1': pod({ status: { phase: 'Failed', podIPs: [{ ip: '198.18.0.10' }] } }) }],
    ['a pod whose node is not heard from (Unknown)', { targetRef: ref }, { 'team-a/web-1': pod({ status: { phase: 'Unknown', podIPs: [{ ip: '198.18.0.10' }] } }) }],
    ['a pod without a phase', { targetRef: ref }, { 'team-a/web-1': pod({ status: { podIPs: [{ ip: '198.18.0.10' }] } }) }],
    ['a host-network pod (its node\'s IP)', { targetRef: ref }, { 'team-a/web-1': pod({ spec: { hostNetwork: true } }) }],
  ];
  for (const [why, endpoint, pods] of refused) {
    const r = run(endpoint, pods);
    assert.deepEqual(r.ips, [], why);
    assert.equal(r.resolved.reason, 'NoReadyEndpoints', why);
    assert.match(r.resolved.message, /Service team-a\/web has no ready endpoints \(1 ready address left out: an address must be an IP of the running pod its endpoint's targetRef names in team-a; see --endpoint-addresses\)/, why);
  }
  // a Pending pod that has its IP is used (its init containers may be serving)
  assert.deepEqual(run({ targetRef: ref }, { 'team-a/web-1': pod({ status: { phase: 'Pending', podIPs: [{ ip: '198.18.0.10' }] } }) }).ips, ['198.18.0.10']);
  // one slice, endpoints good and bad: only the good are used; an address named twice, once
  // rightly, is used and not counted as left out
  const mixed = translate(gw, {
    port: { port: 20000 },
    services: { 'team-a/web': { spec: { ports: [{ port: 80 }] } } },
    endpointSlices: { 'team-a/web': [{ addressType: 'IPv4', ports: [{ name: '', port: 8080 }], endpoints: [
      { addresses: ['198.18.0.10'] }, { addresses: ['198.18.0.10'], targetRef: ref }, { addresses: ['198.18.0.99'], targetRef: ref }, { addresses: ['198.18.0.98'] },
    ] }] },
    pods: { 'team-a/web-1': pod() } as any,
  });
  assert.deepEqual((mixed.plan!.routes[0]!.target as { endpoints: { ip: string }[] }).endpoints.map((e) => e.ip), ['198.18.0.10']);
  const noneLeft = translate(gw, {
    port: { port: 20000 },
    services: { 'team-a/web': { spec: { ports: [{ port: 80 }] } } },
    endpointSlices: { 'team-a/web': [{ addressType: 'IPv4', ports: [{ name: '', port: 8080 }], endpoints: [
      { addresses: ['198.18.0.10'] }, { addresses: ['198.18.0.10'], targetRef: { kind: 'Pod', name: 'gone' } }, { addresses: ['198.18.0.11'] },
    ] }] },
    pods: {},
  });
  assert.match(noneLeft.conditions.find((c) => c.type === 'ResolvedRefs')!.message, /\(2 ready addresses left out: /);
  // what is not a pod's address is left out either way, and said so
  assert.match(run({}, undefined, '169.254.169.254').resolved.message, /\(1 ready address left out: loopback, link-local, unspecified or multicast\)/);
});

test('an EndpointSlice port the apiserver took but no socket has (0, -1, 70000, 1.5) is no endpoint (it made the route table\'s build throw)', () => {
  const gw = serviceGateway();
  const slice = (port: number, ip: string) => ({ addressType: 'IPv4', ports: [{ name: '', port }], endpoints: [{ addresses: [ip] }] });
  const out = translate(gw, {
    port: { port: 20000 },
    services: { 'team-a/web': { spec: { ports: [{ port: 80 }] } } },
    endpointSlices: { 'team-a/web': [slice(0, '198.18.0.1'), slice(-1, '198.18.0.2'), slice(70000, '198.18.0.3'), slice(1.5, '198.18.0.4'), slice(65535, '198.18.0.5')] },
  });
  assert.deepEqual((out.plan!.routes[0]!.target as { endpoints: { ip: string; port: number }[] }).endpoints, [{ ip: '198.18.0.5', port: 65535 }]);
});
