// The Helm chart (charts/access-gateway): lint, rendering of the defaults and of every ci/ values
// file, the RBAC it grants, the CRD copy, the Grafana dashboard ConfigMap, the rendered
// deploy/install.yaml, the generated values table and the values schema. Shells out to helm
// (scripts/build-helm.sh, cached); no cluster.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isDeepStrictEqual } from 'node:util';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, parseAllDocuments } from 'yaml';
import { OidcIssuers } from '../../src/auth/oidc.js';
import { readAuthenticationConfig } from '../../src/cli/runtime.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const chart = join(root, 'charts', 'access-gateway');
const ciDir = join(chart, 'ci');
const ciFiles = readdirSync(ciDir).filter((f) => f.endsWith('.yaml')).sort();
// The chart's kubeVersion floor: the result must not depend on what helm was built with.
const kubeVersion = ['--kube-version', '1.30.0'];

let helmPath: string | undefined;
function helm(): string {
  helmPath ??= execFileSync(join(root, 'scripts', 'build-helm.sh'), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  return helmPath;
}

function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: env ? { ...process.env, ...env } : process.env, maxBuffer: 64 << 20 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> }; [k: string]: any };

function template(args: string[] = [], release = 'agw-test', ns = 'agw-system'): Obj[] {
  const r = run(helm(), ['template', release, chart, '--namespace', ns, ...kubeVersion, ...args]);
  assert.equal(r.status, 0, `helm template ${args.join(' ')} failed:\n${r.stderr}`);
  return parseAllDocuments(r.stdout).map((d) => d.toJS()).filter(Boolean);
}

const find = (objs: Obj[], kind: string, name?: string, namespace?: string) =>
  objs.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name) && (namespace === undefined || o.metadata.namespace === namespace));
const one = (objs: Obj[], kind: string, name?: string, namespace?: string): Obj => {
  const found = find(objs, kind, name, namespace);
  assert.equal(found.length, 1, `expected one ${kind} ${namespace ?? ''}/${name ?? '*'}, got ${found.length}`);
  return found[0]!;
};

/** Rules flattened to "group|resource|verb" (and "url|PATH|verb"), resourceNames appended. */
function grants(rules: any[]): string[] {
  const out: string[] = [];
  for (const r of rules) {
    const names = r.resourceNames ? `@${[...r.resourceNames].sort().join(',')}` : '';
    for (const v of r.verbs) {
      for (const u of r.nonResourceURLs ?? []) out.push(`url|${u}|${v}`);
      for (const g of r.apiGroups ?? []) for (const res of r.resources ?? []) out.push(`${g}|${res}|${v}${names}`);
    }
  }
  return out.sort();
}
const expand = (group: string, resources: string[], verbs: string[]) => resources.flatMap((r) => verbs.map((v) => `${group}|${r}|${v}`));

// What the operator does in a watched namespace (src/controller/cluster-state.ts, manager.ts, src/kube/).
const namespaced = [
  ...expand('access-gateway.io', ['accessgateways'], ['list', 'watch']),
  ...expand('access-gateway.io', ['accessgateways/status'], ['patch']),
  ...expand('access-gateway.io', ['accessgateways/finalizers'], ['update']),
  ...expand('', ['services'], ['list', 'watch', 'create', 'patch']),
  ...expand('discovery.k8s.io', ['endpointslices'], ['list', 'watch', 'create', 'patch']),
  ...expand('', ['pods'], ['list', 'watch']),
  ...expand('', ['secrets', 'configmaps'], ['list', 'watch']),
  ...expand('gateway.networking.k8s.io', ['referencegrants'], ['list', 'watch']),
  ...expand('', ['events'], ['create', 'patch']),
];
const extras = ['access-gateway.io/gateway', 'access-gateway.io/route', 'access-gateway.io/caller', 'authentication.kubernetes.io/credential-id',
  'authentication.kubernetes.io/pod-name', 'authentication.kubernetes.io/pod-uid', 'authentication.kubernetes.io/node-name',
  'authentication.kubernetes.io/node-uid'];
const clusterScoped = [
  ...expand('authentication.k8s.io', ['tokenreviews'], ['create']),
  ...expand('authorization.k8s.io', ['subjectaccessreviews'], ['create']), // admin.metricsAuth: kubernetes
  ...expand('', ['users', 'groups', 'serviceaccounts'], ['impersonate']),
  ...expand('authentication.k8s.io', ['uids', ...extras.map((e) => `userextras/${e}`)], ['impersonate']),
  'url|/.well-known/openid-configuration|get', 'url|/openid/v1/jwks|get',
];
const revocation = (withSecrets: boolean) => expand('', ['serviceaccounts', 'pods', 'nodes', ...(withSecrets ? ['secrets'] : [])], ['list', 'watch']);

test('helm lint is clean, also with --strict, for the defaults and every ci/ values file', () => {
  for (const values of [undefined, ...ciFiles]) {
    for (const strict of [[], ['--strict']]) {
      const r = run(helm(), ['lint', chart, ...strict, ...kubeVersion, ...(values ? ['-f', join(ciDir, values)] : [])]);
      const what = `helm lint ${strict.join(' ')} ${values ?? '(defaults)'}`;
      assert.equal(r.status, 0, `${what}:\n${r.stdout}${r.stderr}`);
      assert.match(r.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/, what);
      assert.doesNotMatch(r.stdout, /\[(WARNING|ERROR)\]/, `${what}:\n${r.stdout}`);
    }
  }
});

test('there are at least three ci/ values files, and each renders', () => {
  assert.ok(ciFiles.length >= 3, `ci/ has ${ciFiles.length} values files`);
  for (const f of ciFiles) {
    const objs = template(['-f', join(ciDir, f)]);
    assert.ok(find(objs, 'Deployment').length === 1, f);
  }
});

test('defaults: a hardened Deployment that runs the operator with the chart flags', () => {
  const objs = template();
  const d = one(objs, 'Deployment', 'agw-test-access-gateway', 'agw-system');
  const pod = d.spec.template.spec;
  const c = pod.containers[0];
  assert.equal(d.spec.replicas, 2);
  assert.equal(c.image, 'ghcr.io/kube-access-gateway/access-gateway:0.1.0');
  assert.equal(c.imagePullPolicy, 'IfNotPresent');
  assert.deepEqual(c.args, [
    'operator', '--admin-address=0.0.0.0:8080', '--metrics-auth=kubernetes', '--port-range=20000-20999', '--requestable-ports=1-65535', '--drain-seconds=10', '--log-level=info',
    '--log-format=json', '--endpoint-addresses=pods', '--min-access-log=none', '--audit-extras=all', '--max-apiserver-requests-per-namespace=0', '--leader-elect', '--leader-election-namespace=agw-system', '--leader-election-id=agw-test-access-gateway',
    '--replica-selector=app.kubernetes.io/instance=agw-test,app.kubernetes.io/name=access-gateway',
    '--expose-types=ClusterIP',
    '--default-expose-type=ClusterIP',
  ]);
  // the replica selector is the Deployment's selector
  assert.deepEqual(d.spec.selector.matchLabels, { 'app.kubernetes.io/name': 'access-gateway', 'app.kubernetes.io/instance': 'agw-test' });
  assert.deepEqual(c.env.map((e: any) => [e.name, e.value ?? e.valueFrom.fieldRef.fieldPath]), [
    ['NODE_OPTIONS', '--max-old-space-size-percentage=70 --max-semi-space-size=16'],
    ['POD_NAME', 'metadata.name'], ['POD_NAMESPACE', 'metadata.namespace'], ['POD_IP', 'status.podIP']]);
  // operator.nodeOptions "" leaves the heap to Node
  const own = one(template(['--set', 'operator.nodeOptions=']), 'Deployment').spec.template.spec.containers[0];
  assert.deepEqual(own.env.map((e: any) => e.name), ['POD_NAME', 'POD_NAMESPACE', 'POD_IP']);
  assert.deepEqual(c.ports, [{ name: 'admin', containerPort: 8080, protocol: 'TCP' }]);
  assert.equal(c.livenessProbe.httpGet.path, '/healthz');
  assert.equal(c.readinessProbe.httpGet.path, '/readyz');
  assert.equal(c.livenessProbe.httpGet.port, 'admin');
  // secure defaults
  assert.deepEqual(pod.securityContext, { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, fsGroup: 65532, seccompProfile: { type: 'RuntimeDefault' } });
  assert.deepEqual(c.securityContext, { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
  assert.deepEqual(c.resources, { requests: { cpu: '100m', memory: '512Mi' }, limits: { memory: '512Mi' } });
  assert.equal(pod.priorityClassName, undefined, 'the cluster\'s default unless set');
  assert.equal(one(template(['--set', 'priorityClassName=system-cluster-critical']), 'Deployment').spec.template.spec.priorityClassName, 'system-cluster-critical');
  assert.ok(pod.terminationGracePeriodSeconds > 10);
  // the token: not automounted, an explicit projected volume at the standard path
  assert.equal(pod.automountServiceAccountToken, false);
  const api = pod.volumes.find((v: any) => v.projected);
  assert.deepEqual(api.projected.sources, [
    // 3600, not 3607: the apiserver extends a pod's token of 3607 s to a year (--service-account-extend-token-expiration)
    { serviceAccountToken: { path: 'token', expirationSeconds: 3600 } },
    { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
    { downwardAPI: { items: [{ path: 'namespace', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } }] } },
  ]);
  const mounts = Object.fromEntries(c.volumeMounts.map((m: any) => [m.mountPath, m]));
  assert.deepEqual(mounts['/var/run/secrets/kubernetes.io/serviceaccount'], { name: api.name, mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', readOnly: true });
  assert.ok(pod.volumes.find((v: any) => v.name === mounts['/tmp'].name).emptyDir, 'a writable /tmp');
  assert.equal(pod.serviceAccountName, 'agw-test-access-gateway');
  assert.equal(one(objs, 'ServiceAccount', 'agw-test-access-gateway').automountServiceAccountToken, false);
  // spread over nodes by default, with the selector labels filled in
  assert.deepEqual(pod.topologySpreadConstraints, [{
    maxSkew: 1, topologyKey: 'kubernetes.io/hostname', whenUnsatisfiable: 'ScheduleAnyway', matchLabelKeys: ['pod-template-hash'],
    labelSelector: { matchLabels: d.spec.selector.matchLabels },
  }]);
  // admin Service, PDB; optional objects off
  const svc = one(objs, 'Service', 'agw-test-access-gateway');
  assert.deepEqual(svc.spec.ports, [{ name: 'admin', port: 8080, targetPort: 'admin', protocol: 'TCP' }]);
  assert.equal(one(objs, 'PodDisruptionBudget').spec.minAvailable, 1);
  // the Lease requests in the apiserver's leader-election priority level, the operator's alone
  const fs = one(objs, 'FlowSchema', 'agw-test-access-gateway-leader-election');
  assert.deepEqual(fs.spec, {
    priorityLevelConfiguration: { name: 'leader-election' }, matchingPrecedence: 200, distinguisherMethod: { type: 'ByUser' },
    rules: [{
      subjects: [{ kind: 'ServiceAccount', serviceAccount: { name: 'agw-test-access-gateway', namespace: 'agw-system' } }],
      resourceRules: [{ apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['get', 'create', 'update'], namespaces: ['agw-system'] }],
    }],
  });
  assert.equal(find(template(['--set', 'leaderElection.flowSchema=false']), 'FlowSchema').length, 0);
  assert.deepEqual(one(template(['--set', 'leaderElection.namespace=leases']), 'FlowSchema').spec.rules[0].resourceRules[0].namespaces, ['leases']);
  for (const k of ['ServiceMonitor', 'PrometheusRule', 'NetworkPolicy', 'CustomResourceDefinition', 'ConfigMap']) assert.equal(find(objs, k).length, 0, k);
  // every object carries the app.kubernetes.io labels
  for (const o of objs) assert.equal(o.metadata.labels?.['app.kubernetes.io/instance'], 'agw-test', `${o.kind} ${o.metadata.name}`);
});

test('defaults: least-privilege RBAC, cluster-wide, exactly the verbs the operator uses', () => {
  const objs = template();
  const cr = one(objs, 'ClusterRole', 'agw-test-access-gateway');
  assert.deepEqual(grants(cr.rules), [...namespaced, ...clusterScoped, ...revocation(false)].sort());
  // operator.endpointAddresses any: no pods rule of its own (the revocation watches still list pods)
  const any = template(['--set', 'operator.endpointAddresses=any']);
  const podRules = (o: any) => o.rules.filter((r: any) => (r.resources ?? []).includes('pods')).length;
  assert.deepEqual([podRules(cr), podRules(one(any, 'ClusterRole', 'agw-test-access-gateway'))], [2, 1]);
  assert.ok(one(any, 'Deployment').spec.template.spec.containers[0].args.includes('--endpoint-addresses=any'));
  const crb = one(objs, 'ClusterRoleBinding', 'agw-test-access-gateway');
  assert.deepEqual(crb.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'agw-test-access-gateway' });
  assert.deepEqual(crb.subjects, [{ kind: 'ServiceAccount', name: 'agw-test-access-gateway', namespace: 'agw-system' }]);
  const lease = one(objs, 'Role', 'agw-test-access-gateway-leader-election', 'agw-system');
  assert.deepEqual(grants(lease.rules), ['coordination.k8s.io|leases|create', 'coordination.k8s.io|leases|get@agw-test-access-gateway',
    'coordination.k8s.io|leases|update@agw-test-access-gateway']);
  one(objs, 'RoleBinding', 'agw-test-access-gateway-leader-election', 'agw-system');
  assert.deepEqual(grants(one(objs, 'Role', 'agw-test-access-gateway-replicas', 'agw-system').rules), ['|pods|list', '|pods|watch']);
  // nothing anywhere may delete, escalate, bind or read single objects it only watches
  for (const o of [...find(objs, 'ClusterRole'), ...find(objs, 'Role')]) {
    for (const g of grants(o.rules)) assert.doesNotMatch(g, /\|(delete|deletecollection|escalate|bind|\*)(@|$)|\|\*\|/, `${o.kind} ${o.metadata.name}: ${g}`);
  }
  // the admission policies that hold Service/EndpointSlice and Event writes match this ServiceAccount's requests
  for (const [name, resources] of [['writes', [['', 'services'], ['discovery.k8s.io', 'endpointslices']]], ['events', [['', 'events']]]] as const) {
    const vap = one(objs, 'ValidatingAdmissionPolicy', `agw-test-access-gateway-${name}`);
    assert.deepEqual(vap.spec.matchConditions, [{ name: 'the-operator', expression: "request.userInfo.username == 'system:serviceaccount:agw-system:agw-test-access-gateway'" }]);
    assert.equal(vap.spec.failurePolicy, 'Fail');
    assert.deepEqual(vap.spec.matchConstraints.resourceRules.map((r: any) => [r.apiGroups, r.resources, r.operations]),
      resources.map(([g, r]) => [[g], [r], ['CREATE', 'UPDATE']]));
    assert.ok(vap.spec.validations.length >= 2, name);
    assert.deepEqual(one(objs, 'ValidatingAdmissionPolicyBinding', vap.metadata.name).spec, { policyName: vap.metadata.name, validationActions: ['Deny'] });
  }
  // AccessGateway status: anyone but this ServiceAccount is refused
  const status = one(objs, 'ValidatingAdmissionPolicy', 'agw-test-access-gateway-status');
  assert.deepEqual(status.spec.matchConditions, [{ name: 'not-the-operator', expression: "!(request.userInfo.username == 'system:serviceaccount:agw-system:agw-test-access-gateway')" }]);
  assert.deepEqual(status.spec.matchConstraints.resourceRules.map((r: any) => [r.apiGroups, r.resources, r.operations]), [[['access-gateway.io'], ['accessgateways/status'], ['UPDATE']]]);
  assert.deepEqual(status.spec.validations.map((v: any) => v.expression), ['false']);
  assert.deepEqual(one(objs, 'ValidatingAdmissionPolicyBinding', status.metadata.name).spec, { policyName: status.metadata.name, validationActions: ['Deny'] });
  // scrapers: a metrics-reader ClusterRole (get /metrics, nothing else), not bound by default
  assert.deepEqual(grants(one(objs, 'ClusterRole', 'agw-test-access-gateway-metrics-reader').rules), ['url|/metrics|get']);
  assert.equal(find(objs, 'ClusterRoleBinding', 'agw-test-access-gateway-metrics-reader').length, 0);
});

test('metrics: the reader role bound to metrics.reader.subjects; admin.metricsAuth=none drops the SubjectAccessReview right', () => {
  const subjects = [{ kind: 'ServiceAccount', name: 'prometheus-k8s', namespace: 'monitoring' }, { kind: 'Group', name: 'scrapers', apiGroup: 'rbac.authorization.k8s.io' }];
  const dir = mkdtempSync(join(tmpdir(), 'agw-chart-values-'));
  try {
    const file = join(dir, 'v.yaml');
    writeFileSync(file, JSON.stringify({ metrics: { reader: { subjects } } }));
    const objs = template(['-f', file]);
    const crb = one(objs, 'ClusterRoleBinding', 'agw-test-access-gateway-metrics-reader');
    assert.deepEqual(crb.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'agw-test-access-gateway-metrics-reader' });
    assert.deepEqual(crb.subjects, subjects);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  // SubjectAccessReviews stay while callers' kubectl --as is checked (rbac.impersonate)
  const none = template(['--set', 'admin.metricsAuth=none']);
  assert.ok(one(none, 'Deployment').spec.template.spec.containers[0].args.includes('--metrics-auth=none'));
  assert.ok(grants(one(none, 'ClusterRole', 'agw-test-access-gateway').rules).includes('authorization.k8s.io|subjectaccessreviews|create'));
  const neither = template(['--set', 'admin.metricsAuth=none', '--set', 'rbac.impersonate=false']);
  const g = grants(one(neither, 'ClusterRole', 'agw-test-access-gateway').rules);
  assert.ok(!g.some((x) => x.includes('subjectaccessreviews')), g.join(' '));
  assert.ok(g.includes('authentication.k8s.io|tokenreviews|create'), 'callers are still authenticated');
  // no RBAC at all: neither role; the admission policies stay (roles made by hand need them as much)
  const handmade = template(['--set', 'rbac.create=false']);
  assert.equal(find(handmade, 'ClusterRole').length, 0);
  assert.equal(find(handmade, 'ValidatingAdmissionPolicy').length, find(template([]), 'ValidatingAdmissionPolicy').length);
  assert.ok(find(handmade, 'ValidatingAdmissionPolicy').length >= 5);
  assert.equal(find(template(['--set', 'rbac.create=false', '--set', 'rbac.validatingAdmissionPolicy=false']), 'ValidatingAdmissionPolicy').length, 0);
});

test('every RBAC rule in the rendered manifests carries a comment saying why', () => {
  for (const values of [[], ['--set', 'rbac.watchNamespaces={a,b}', '--set', 'rbac.jwksRevocationWatches=true']]) {
    const r = run(helm(), ['template', 't', chart, '-n', 'ns', ...kubeVersion, '--show-only', 'templates/rbac.yaml', ...values]);
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.split('\n');
    let rules = 0;
    lines.forEach((l, i) => {
      if (!/^\s*- (apiGroups|nonResourceURLs):/.test(l)) return;
      rules++;
      assert.match(lines[i - 1] ?? '', /^\s*#/, `rule without a comment above it: ${l}\n${lines.slice(Math.max(0, i - 3), i + 3).join('\n')}`);
    });
    assert.ok(rules >= 10);
  }
});

test('ci/watch-namespaces: a Role per namespace, a ClusterRole only for cluster-scoped rights', () => {
  const objs = template(['-f', join(ciDir, 'watch-namespaces-values.yaml')]);
  const d = one(objs, 'Deployment', 'agw');
  const args: string[] = d.spec.template.spec.containers[0].args;
  assert.ok(args.includes('--namespace=team-a') && args.includes('--namespace=team-b'), args.join(' '));
  assert.ok(args.includes('--leader-election-namespace=kube-system'));
  const cr = one(objs, 'ClusterRole', 'agw');
  assert.deepEqual(grants(cr.rules), [...clusterScoped, ...expand('authentication.k8s.io', ['userextras/example.com/tenant'], ['impersonate'])].sort());
  for (const ns of ['team-a', 'team-b']) {
    assert.deepEqual(grants(one(objs, 'Role', 'agw', ns).rules), [...namespaced].sort());
    const rb = one(objs, 'RoleBinding', 'agw', ns);
    assert.deepEqual(rb.subjects, [{ kind: 'ServiceAccount', name: 'agw', namespace: 'agw-system' }]);
  }
  one(objs, 'Role', 'agw-leader-election', 'kube-system');
  one(objs, 'Role', 'agw-replicas', 'agw-system');
  // JWKS revocation watches are cluster-wide: opting in brings them back, with secrets
  const jwks = template(['-f', join(ciDir, 'watch-namespaces-values.yaml'), '--set', 'rbac.jwksRevocationWatches=true']);
  assert.deepEqual(grants(one(jwks, 'ClusterRole', 'agw').rules),
    [...clusterScoped, ...expand('authentication.k8s.io', ['userextras/example.com/tenant'], ['impersonate']), ...revocation(true)].sort());
});

test('ci/single-replica: no leader election, no Lease Role, no PodDisruptionBudget', () => {
  const objs = template(['-f', join(ciDir, 'single-replica-values.yaml')]);
  const d = one(objs, 'Deployment');
  const args: string[] = d.spec.template.spec.containers[0].args;
  assert.equal(d.spec.replicas, 1);
  assert.ok(!args.some((a) => a.startsWith('--leader-elect')), args.join(' '));
  assert.equal(args.at(-1), '--no-expose', 'extraArgs come last');
  assert.ok(args.includes('--log-format=pretty'));
  assert.equal(find(objs, 'Role', 'agw-test-access-gateway-leader-election').length, 0);
  assert.equal(find(objs, 'PodDisruptionBudget').length, 0);
  assert.equal(find(objs, 'FlowSchema').length, 0);
});

test('ci/people: the OIDC issuers become a mounted AuthenticationConfiguration the operator reads; expose types reach flags and the admission policy', () => {
  const objs = template(['-f', join(ciDir, 'people-values.yaml')]);
  const d = one(objs, 'Deployment');
  const c = d.spec.template.spec.containers[0];
  assert.ok(c.args.includes('--authentication-config=/etc/access-gateway/authentication.yaml'));
  assert.ok(c.args.includes('--expose-types=ClusterIP,LoadBalancer'));
  assert.ok(c.args.includes('--expose-annotations=service.beta.kubernetes.io/aws-load-balancer-internal'));
  assert.deepEqual(c.volumeMounts.find((m: Obj) => m.name === 'authentication'), { name: 'authentication', mountPath: '/etc/access-gateway', readOnly: true });
  assert.match(d.spec.template.metadata.annotations['checksum/authentication'], /^[0-9a-f]{64}$/);
  const cm = find(objs, 'ConfigMap', 'agw-test-access-gateway-authentication')[0]!;
  const file = join(mkdtempSync(join(tmpdir(), 'agw-auth-')), 'authentication.yaml');
  writeFileSync(file, cm.data['authentication.yaml']);
  const issuers = new OidcIssuers(readAuthenticationConfig(file));
  assert.deepEqual(issuers.states(), { 'https://idp.example.com': null }, 'the operator compiles what the chart mounts');
  const vap = find(objs, 'ValidatingAdmissionPolicy', 'agw-test-access-gateway-writes')[0]!;
  assert.ok(vap.spec.validations.some((v: Obj) => /object.spec.type in \["ClusterIP","LoadBalancer"\]/.test(v.expression)));
  // without issuers: no ConfigMap, no flag
  const plain = template();
  assert.equal(find(plain, 'ConfigMap', 'agw-test-access-gateway-authentication').length, 0);
  assert.ok(!one(plain, 'Deployment').spec.template.spec.containers[0].args.some((a: string) => a.startsWith('--authentication-config')));
});

test('ci/monitoring: ServiceMonitor, PrometheusRule with the six alerts, NetworkPolicy over the port range', () => {
  const objs = template(['-f', join(ciDir, 'monitoring-values.yaml')]);
  assert.deepEqual(one(objs, 'ClusterRoleBinding', 'agw-test-access-gateway-metrics-reader').subjects,
    [{ kind: 'ServiceAccount', name: 'prometheus-k8s', namespace: 'monitoring' }]);
  const sm = one(objs, 'ServiceMonitor');
  assert.equal(sm.metadata.labels?.release, 'kube-prometheus-stack');
  assert.deepEqual(sm.spec.endpoints, [{ port: 'admin', path: '/metrics', interval: '15s', honorLabels: true,
    bearerTokenFile: '/var/run/secrets/kubernetes.io/serviceaccount/token' }]);
  // the scraper's token from a Secret instead; none only where /metrics is open
  const secret = template(['-f', join(ciDir, 'monitoring-values.yaml'), '--set', 'metrics.serviceMonitor.bearerToken.source=secret',
    '--set', 'metrics.serviceMonitor.bearerToken.secret.name=prometheus-token']);
  assert.deepEqual(one(secret, 'ServiceMonitor').spec.endpoints[0].authorization, { type: 'Bearer', credentials: { name: 'prometheus-token', key: 'token' } });
  assert.equal(one(secret, 'ServiceMonitor').spec.endpoints[0].bearerTokenFile, undefined);
  const open = template(['-f', join(ciDir, 'monitoring-values.yaml'), '--set', 'metrics.serviceMonitor.bearerToken.source=none', '--set', 'admin.metricsAuth=none']);
  const ep = one(open, 'ServiceMonitor').spec.endpoints[0];
  assert.equal(ep.bearerTokenFile ?? ep.authorization, undefined);
  const rules = one(objs, 'PrometheusRule').spec.groups[0].rules;
  const byName = Object.fromEntries(rules.map((r: any) => [r.alert, r.expr]));
  assert.deepEqual(Object.keys(byName).sort(), ['AccessGatewayAuthenticationFailures', 'AccessGatewayCertificateExpiresSoon', 'AccessGatewayHighErrorRatio', 'AccessGatewayInformerStale', 'AccessGatewayNoLeader', 'AccessGatewayReconcileErrors']);
  assert.match(byName.AccessGatewayCertificateExpiresSoon, /access_gateway_certificate_expiry_timestamp_seconds\{job="agw-test-access-gateway"\}\) - time\(\)\s+< 1209600/);
  // the threshold is a value
  const week = one(template(['-f', join(ciDir, 'monitoring-values.yaml'), '--set', 'metrics.prometheusRule.certificateExpiryDays=7']), 'PrometheusRule').spec.groups[0].rules;
  assert.match(week.find((r: any) => r.alert === 'AccessGatewayCertificateExpiresSoon').expr, /< 604800/);
  assert.match(byName.AccessGatewayHighErrorRatio, /access_gateway_responses_total\{job="agw-test-access-gateway",code="5xx"\}/);
  assert.match(byName.AccessGatewayHighErrorRatio, /sum by \(namespace, gateway\)/);
  assert.match(byName.AccessGatewayAuthenticationFailures, /access_gateway_authentications_total\{job="agw-test-access-gateway",result="unauthenticated"\}/);
  assert.match(byName.AccessGatewayReconcileErrors, /access_gateway_reconcile_total\{job="agw-test-access-gateway",result="error"\}/);
  assert.match(byName.AccessGatewayInformerStale, /time\(\) - access_gateway_informer_last_sync_timestamp_seconds\{job="agw-test-access-gateway"\} > 1200(?!\d)/);
  assert.match(byName.AccessGatewayNoLeader, /sum\(access_gateway_leader\{[^}]*\}\) != 1\s+or\s+absent\(access_gateway_leader/);
  // every alert template reaches Prometheus unexpanded by Helm
  for (const r of rules) assert.doesNotMatch(JSON.stringify(r.annotations), /<no value>/);
  assert.match(rules[0].annotations.summary, /\{\{ \$labels\.namespace \}\}/);
  const np = one(objs, 'NetworkPolicy');
  assert.deepEqual(np.spec.ingress, [{ ports: [{ port: 9090, protocol: 'TCP' }, { port: 30000, endPort: 30099, protocol: 'TCP' }] }]);
  assert.deepEqual(np.spec.policyTypes, ['Ingress']);
  // the ports gateways may ask for are admitted too (a gateway given one is Ready: it must be reachable)
  const asked = (v: string) => one(template(['-f', join(ciDir, 'monitoring-values.yaml'), '--set', `operator.requestablePorts=${v}`]), 'NetworkPolicy').spec.ingress[0].ports;
  assert.deepEqual(asked('8443-8443'), [{ port: 9090, protocol: 'TCP' }, { port: 30000, endPort: 30099, protocol: 'TCP' }, { port: 8443, protocol: 'TCP' }]);
  assert.deepEqual(asked('1-65535').at(-1), { port: 1, endPort: 65535, protocol: 'TCP' });
  const d = one(objs, 'Deployment');
  assert.equal(d.spec.template.metadata.labels.team, 'platform');
  assert.equal(d.spec.template.metadata.annotations['example.com/owner'], 'platform');
});

test('combinations that cannot work are refused at render time', () => {
  const bad: [string[], RegExp][] = [
    [['--set', 'leaderElection.enabled=false'], /replicaCount > 1 needs leaderElection\.enabled=true/],
    [['--set', 'terminationGracePeriodSeconds=10'], /terminationGracePeriodSeconds \(10\) must exceed operator\.drainSeconds \(10\)/],
    [['--set', 'admin.port=20001'], /admin\.port 20001 lies inside operator\.portRange/],
    [['--set', 'operator.portRange=300-200'], /operator\.portRange "300-200": expected LOW-HIGH/],
    [['--set', 'metrics.serviceMonitor.enabled=true', '--set', 'metrics.serviceMonitor.bearerToken.source=none'], /bearerToken\.source=none cannot scrape: admin\.metricsAuth=kubernetes answers 401/],
    [['--set', 'metrics.serviceMonitor.enabled=true', '--set', 'metrics.serviceMonitor.bearerToken.source=secret'], /bearerToken\.source=secret needs metrics\.serviceMonitor\.bearerToken\.secret\.name/],
  ];
  for (const [args, want] of bad) {
    const r = run(helm(), ['template', 't', chart, ...kubeVersion, ...args]);
    assert.notEqual(r.status, 0, `helm template ${args.join(' ')} rendered`);
    assert.match(r.stderr, want);
  }
});

test('the values schema refuses wrong types and unknown keys', () => {
  const dir = mkdtempSync(join(tmpdir(), 'agw-chart-values-'));
  try {
    const bad: Record<string, string> = {
      'replicas-string': 'replicaCount: "two"\n',
      'unknown-top-level': 'replicas: 2\n',
      'unknown-nested': 'image:\n  registry: docker.io\n',
      'pull-policy': 'image:\n  pullPolicy: Sometimes\n',
      'leader-election-string': 'leaderElection:\n  enabled: "yes"\n',
      'watch-namespaces-string': 'rbac:\n  watchNamespaces: team-a\n',
      'watch-namespaces-bad-name': 'rbac:\n  watchNamespaces: [Team_A]\n',
      'resources-list': 'resources: [cpu]\n',
      'log-format': 'operator:\n  logFormat: xml\n',
      'port-range': 'operator:\n  portRange: 20000\n',
      'drain-negative': 'operator:\n  drainSeconds: -1\n',
      'apiserver-requests-negative': 'operator:\n  maxApiserverRequestsPerNamespace: -1\n',
      'apiserver-requests-string': 'operator:\n  maxApiserverRequestsPerNamespace: "16"\n',
      'admin-port': 'admin:\n  port: 70000\n',
      'annotations-not-strings': 'podAnnotations:\n  a: {b: c}\n',
      'service-monitor-unknown': 'metrics:\n  serviceMonitor:\n    enable: true\n',
      'jwks-string': 'rbac:\n  jwksRevocationWatches: auto\n',
      'metrics-auth': 'admin:\n  metricsAuth: open\n',
      'bearer-token-source': 'metrics:\n  serviceMonitor:\n    bearerToken:\n      source: header\n',
      'bearer-token-file-relative': 'metrics:\n  serviceMonitor:\n    bearerToken:\n      file: token\n',
      'reader-subject-kind': 'metrics:\n  reader:\n    subjects: [{kind: Robot, name: r}]\n',
      'reader-sa-without-namespace': 'metrics:\n  reader:\n    subjects: [{kind: ServiceAccount, name: prometheus}]\n',
      'reader-subjects-map': 'metrics:\n  reader:\n    subjects: {kind: User, name: u}\n',
      'grafana-dashboard-unknown': 'grafanaDashboard:\n  enable: true\n',
      'grafana-dashboard-label-number': 'grafanaDashboard:\n  labels:\n    grafana_dashboard: 1\n',
      'grafana-dashboard-labels-list': 'grafanaDashboard:\n  labels: [grafana_dashboard]\n',
      'grafana-dashboard-namespace': 'grafanaDashboard:\n  namespace: Monitoring\n',
    };
    for (const [name, text] of Object.entries(bad)) {
      const file = join(dir, `${name}.yaml`);
      writeFileSync(file, text);
      const r = run(helm(), ['template', 't', chart, ...kubeVersion, '-f', file]);
      assert.notEqual(r.status, 0, `${name}: rendered although the schema should refuse it`);
      assert.match(r.stderr, /values don't meet the specifications of the schema/, `${name}: ${r.stderr}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('values.yaml and values.schema.json describe the same keys', () => {
  const values = parse(readFileSync(join(chart, 'values.yaml'), 'utf8'));
  const schema = JSON.parse(readFileSync(join(chart, 'values.schema.json'), 'utf8'));
  assert.equal(schema.$schema, 'http://json-schema.org/draft-07/schema#');
  const problems: string[] = [];
  const walk = (v: any, s: any, path: string) => {
    if (!s) return problems.push(`${path}: in values.yaml, not in the schema`);
    if (s.properties === undefined || v === null || typeof v !== 'object' || Array.isArray(v)) return;
    if (s.additionalProperties !== false) return; // a free-form map (labels, resources, ...)
    for (const k of Object.keys(v)) walk(v[k], s.properties[k], path ? `${path}.${k}` : k);
    for (const k of Object.keys(s.properties)) if (!(k in v) && !(path === '' && k === 'global')) problems.push(`${path ? `${path}.` : ''}${k}: in the schema, not in values.yaml`);
  };
  walk(values, schema, '');
  assert.deepEqual(problems, []);
});

/** Every `datasource` in a Grafana dashboard, with where it is (panels in collapsed rows included). */
function datasources(dashboard: any): { where: string; value: unknown }[] {
  const out: { where: string; value: unknown }[] = [];
  const walk = (v: any, where: string) => {
    if (Array.isArray(v)) return v.forEach((x, i) => walk(x, `${where}[${i}]`));
    if (v === null || typeof v !== 'object') return;
    for (const [k, x] of Object.entries(v)) {
      if (k === 'datasource') out.push({ where: `${where}.${k}`, value: x });
      walk(x, `${where}.${k}`);
    }
  };
  walk(dashboard, '');
  return out;
}

test('grafanaDashboard: off by default; on, a ConfigMap for the Grafana sidecar holding deploy/grafana-dashboard.json', () => {
  const name = 'agw-test-access-gateway-dashboard';
  assert.equal(find(template(), 'ConfigMap').length, 0, 'no ConfigMap by default');
  const source = JSON.parse(readFileSync(join(root, 'deploy', 'grafana-dashboard.json'), 'utf8'));

  // on: one ConfigMap in the release namespace, the chart's labels plus the sidecar's
  const objs = template(['--set', 'grafanaDashboard.enabled=true']);
  assert.equal(find(objs, 'ConfigMap').length, 1);
  const cm = one(objs, 'ConfigMap', name, 'agw-system');
  assert.equal(cm.metadata.labels?.grafana_dashboard, '1', 'the sidecar label (kube-prometheus-stack default)');
  assert.equal(cm.metadata.labels?.['app.kubernetes.io/instance'], 'agw-test');
  assert.equal(cm.metadata.labels?.['app.kubernetes.io/name'], 'access-gateway');
  assert.equal(cm.metadata.annotations, undefined);
  assert.deepEqual(Object.keys(cm.data), ['access-gateway.json']);
  assert.equal(cm.binaryData, undefined);
  const dashboard = JSON.parse(cm.data['access-gateway.json']);
  assert.deepEqual(dashboard, source, 'the ConfigMap holds deploy/grafana-dashboard.json');
  // a ConfigMap holds at most 1 MiB (and the whole object must fit in etcd's request limit)
  const size = Buffer.byteLength(JSON.stringify(cm));
  assert.ok(size < 1 << 20, `the ConfigMap is ${size} bytes`);

  // the data source is the dashboard's variable, never a fixed UID: any Grafana can load it
  const variable = { type: 'prometheus', uid: '${datasource}' };
  const vars: any[] = dashboard.templating?.list ?? [];
  const dsVars = vars.filter((v) => v.type === 'datasource');
  assert.deepEqual(dsVars.map((v) => [v.name, v.query]), [['datasource', 'prometheus']], 'one datasource variable over Prometheus data sources');
  assert.equal(dashboard.__inputs, undefined, '__inputs (an export "for sharing externally" that needs an import step)');
  assert.equal(dashboard.__requires, undefined);
  assert.doesNotMatch(JSON.stringify(dashboard), /\$\{DS_/, 'no ${DS_...} import placeholder');
  const panels: any[] = [];
  const collect = (ps: any[] | undefined) => { for (const p of ps ?? []) { panels.push(p); collect(p.panels); } };
  collect(dashboard.panels);
  let targets = 0;
  for (const p of panels) {
    const what = `panel ${p.id} ${JSON.stringify(p.title)}`;
    if (p.datasource !== undefined) assert.deepEqual(p.datasource, variable, what);
    for (const t of p.targets ?? []) {
      targets++;
      if (t.datasource !== undefined) assert.deepEqual(t.datasource, variable, `${what} target ${t.refId}`);
      else assert.ok(p.datasource !== undefined, `${what} target ${t.refId}: no data source to inherit`);
    }
  }
  assert.ok(panels.filter((p) => p.type !== 'row').length >= 10 && targets >= 10, `${panels.length} panels, ${targets} targets`);
  // and anywhere else (query variables, annotations): the variable, or Grafana's built-in annotations
  const builtin = { type: 'grafana', uid: '-- Grafana --' };
  for (const { where, value } of datasources(dashboard)) {
    if (where.startsWith('.annotations.')) assert.ok(isDeepStrictEqual(value, variable) || isDeepStrictEqual(value, builtin), `${where}: ${JSON.stringify(value)}`);
    else assert.deepEqual(value, variable, where);
  }

  // ci/monitoring: an extra label and the folder annotation
  const ci = one(template(['-f', join(ciDir, 'monitoring-values.yaml')]), 'ConfigMap', name, 'agw-system');
  assert.equal(ci.metadata.labels?.grafana_dashboard, '1');
  assert.equal(ci.metadata.labels?.['example.com/team'], 'platform');
  assert.deepEqual(ci.metadata.annotations, { grafana_folder: 'Kubernetes' });

  // another sidecar label instead of the default (null drops a default key), another namespace
  const dir = mkdtempSync(join(tmpdir(), 'agw-chart-values-'));
  try {
    const file = join(dir, 'v.yaml');
    writeFileSync(file, JSON.stringify({ grafanaDashboard: { enabled: true, namespace: 'monitoring', labels: { grafana_dashboard: null, 'example.com/dashboard': 'access' } } }));
    const custom = template(['-f', file]);
    assert.equal(find(custom, 'ConfigMap').length, 1);
    const c = one(custom, 'ConfigMap', name, 'monitoring');
    assert.equal(c.metadata.labels?.['example.com/dashboard'], 'access');
    assert.equal(c.metadata.labels?.grafana_dashboard, undefined, 'the default label dropped');
    assert.equal(c.metadata.labels?.['app.kubernetes.io/instance'], 'agw-test');
    assert.deepEqual(JSON.parse(c.data['access-gateway.json']), source);
    // the rest stays in the release namespace
    assert.equal(one(custom, 'Deployment').metadata.namespace, 'agw-system');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the chart dashboard is an exact copy of deploy/grafana-dashboard.json', () => {
  const copy = readFileSync(join(chart, 'dashboards', 'access-gateway.json'), 'utf8');
  const source = readFileSync(join(root, 'deploy', 'grafana-dashboard.json'), 'utf8');
  assert.ok(copy === source, 'charts/access-gateway/dashboards/access-gateway.json differs from deploy/grafana-dashboard.json: npm run gen');
});

test('the chart CRD is an exact copy of deploy/crds', () => {
  const file = 'access-gateway.io_accessgateways.yaml';
  assert.deepEqual(readdirSync(join(chart, 'crds')), [file]);
  const copy = readFileSync(join(chart, 'crds', file), 'utf8');
  const source = readFileSync(join(root, 'deploy', 'crds', file), 'utf8');
  assert.ok(copy === source, 'charts/access-gateway/crds/ differs from deploy/crds/: cp deploy/crds/*.yaml charts/access-gateway/crds/');
});

test('deploy/install.yaml is the rendered chart (render-manifests.sh --check), and the check catches a hand edit', () => {
  const script = join(root, 'scripts', 'render-manifests.sh');
  const env = { HELM: helm() };
  const ok = run(script, ['--check'], env);
  assert.equal(ok.status, 0, `deploy/install.yaml is stale:\n${ok.stdout}${ok.stderr}`);
  const installed = readFileSync(join(root, 'deploy', 'install.yaml'), 'utf8');
  assert.match(installed.split('\n')[0]!, /^# Generated by scripts\/render-manifests\.sh .*do not edit/);
  const objs = parseAllDocuments(installed).map((d) => d.toJS()).filter(Boolean) as Obj[];
  assert.equal(objs[0]!.kind, 'Namespace');
  assert.equal(objs[0]!.metadata.name, 'access-gateway');
  one(objs, 'CustomResourceDefinition', 'accessgateways.access-gateway.io');
  for (const o of objs.slice(1)) if (o.kind !== 'CustomResourceDefinition' && o.kind !== 'FlowSchema' && !o.kind.startsWith('Cluster') && !o.kind.startsWith('ValidatingAdmission')) assert.equal(o.metadata.namespace, 'access-gateway', `${o.kind} ${o.metadata.name}`);
  // a hand edit to a copy (the repository's file is never touched)
  const dir = mkdtempSync(join(tmpdir(), 'agw-install-'));
  try {
    const copy = join(dir, 'install.yaml');
    writeFileSync(copy, installed.replace('replicas: 2', 'replicas: 3'));
    const edited = run(script, ['--check'], { ...env, AGW_INSTALL_YAML: copy });
    assert.equal(edited.status, 1, edited.stderr);
    assert.match(edited.stdout, /^-  replicas: 3$/m, 'the diff shows the edit');
    assert.match(edited.stdout, /^\+  replicas: 2$/m);
    assert.match(edited.stderr, /is stale: run scripts\/render-manifests\.sh/);
    const missing = run(script, ['--check'], { ...env, AGW_INSTALL_YAML: join(dir, 'nothing.yaml') });
    assert.notEqual(missing.status, 0);
    // the chart's dashboard copy: --check fails when it differs from deploy/grafana-dashboard.json
    // (on a copy of the chart), the write mode refreshes it
    const chartCopy = join(dir, 'chart');
    cpSync(chart, chartCopy, { recursive: true });
    const dashboardCopy = join(chartCopy, 'dashboards', 'access-gateway.json');
    const source = readFileSync(join(root, 'deploy', 'grafana-dashboard.json'), 'utf8');
    assert.equal(run(script, ['--check'], { ...env, AGW_CHART_DIR: chartCopy }).status, 0);
    writeFileSync(dashboardCopy, source.replace('"title": "Access Gateway"', '"title": "Edited"'));
    const stale = run(script, ['--check'], { ...env, AGW_CHART_DIR: chartCopy });
    assert.equal(stale.status, 1, stale.stderr);
    assert.match(stale.stderr, /access-gateway\.json differs from deploy\/grafana-dashboard\.json/);
    assert.match(stale.stdout, /^-  "title": "Edited",$/m, 'the diff shows the edit');
    assert.equal(readFileSync(dashboardCopy, 'utf8') === source, false, '--check writes nothing');
    const written = run(script, [], { ...env, AGW_CHART_DIR: chartCopy, AGW_INSTALL_YAML: copy });
    assert.equal(written.status, 0, written.stderr);
    assert.ok(readFileSync(dashboardCopy, 'utf8') === source, 'refreshed from deploy/grafana-dashboard.json');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the README values table is generated from values.yaml (gen-chart-readme.ts --check)', () => {
  const script = join(root, 'scripts', 'gen-chart-readme.ts');
  const gen = (env?: NodeJS.ProcessEnv, check = true) => run(process.execPath, ['--experimental-strip-types', '--no-warnings', script, ...(check ? ['--check'] : [])], env);
  const ok = gen();
  assert.equal(ok.status, 0, ok.stderr);
  const readme = readFileSync(join(chart, 'README.md'), 'utf8');
  for (const key of ['replicaCount', 'rbac.watchNamespaces', 'podSecurityContext', 'metrics.prometheusRule.enabled']) {
    assert.match(readme, new RegExp(`^\\| \`${key.replace(/\./g, '\\.')}\` \\|`, 'm'), key);
  }
  // on a copy of the chart: a changed description makes the table stale, an undocumented key is refused
  const dir = mkdtempSync(join(tmpdir(), 'agw-chart-'));
  try {
    cpSync(chart, dir, { recursive: true });
    const values = join(dir, 'values.yaml');
    const original = readFileSync(values, 'utf8');
    writeFileSync(values, original.replace('# -- Operator image repository.', '# -- The operator image repository.'));
    const stale = gen({ AGW_CHART_DIR: dir });
    assert.equal(stale.status, 1);
    assert.match(stale.stderr, /values table is stale/);
    assert.equal(gen({ AGW_CHART_DIR: dir }, false).status, 0);
    assert.equal(gen({ AGW_CHART_DIR: dir }).status, 0, 'regenerated');
    assert.match(readFileSync(join(dir, 'README.md'), 'utf8'), /\| `image\.repository` \| string \| `"ghcr\.io\/kube-access-gateway\/access-gateway"` \| The operator image repository\. \|/);
    writeFileSync(values, `${original}\nundocumented: true\n`);
    const undocumented = gen({ AGW_CHART_DIR: dir });
    assert.equal(undocumented.status, 1);
    assert.match(undocumented.stderr, /undocumented is not documented/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an existing ServiceAccount must be named: the chart never binds its roles to a namespace\'s default account', () => {
  const r = run(helm(), ['template', 'agw-test', chart, '--namespace', 'agw-system', ...kubeVersion, '--set', 'serviceAccount.create=false']);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /serviceAccount\.name: required with serviceAccount\.create=false/);
  const named = template(['--set', 'serviceAccount.create=false', '--set', 'serviceAccount.name=platform-operator']);
  assert.equal(find(named, 'ServiceAccount').length, 0);
  assert.ok(find(named, 'ClusterRoleBinding').every((b) => b.subjects.every((s: any) => s.kind !== 'ServiceAccount' || s.name === 'platform-operator')));
});
