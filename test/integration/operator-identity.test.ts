// The operator running on a service-account token (no admin credentials), scoped to one
// namespace: a client's own Authorization never reaches the apiserver, even when that token
// would be accepted there and carries more rights than the gateway's own identity.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startControlPlane, type ControlPlane } from '../support/control-plane.js';
import { startOperator, type OperatorProc } from '../support/operator.js';
import { applyYaml, bearer, curl, gatewayPort, installCRD, namespaceYaml, tokenKubeconfig } from '../support/cluster.js';

let cp: ControlPlane;
let op: OperatorProc;
const ns = 'team-tok';

// What the operator needs for the core scenarios, and nothing to read cluster roles with.
const operatorRBAC = `
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: agw-operator}
rules:
  - {apiGroups: [access-gateway.io], resources: [accessgateways], verbs: [get, list, watch]}
  - {apiGroups: [access-gateway.io], resources: [accessgateways/status], verbs: [patch]}
  - {apiGroups: [""], resources: [secrets, configmaps, services, pods], verbs: [list, watch]}
  - {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
  - {apiGroups: [gateway.networking.k8s.io], resources: [referencegrants], verbs: [list, watch]}
  - {apiGroups: [authentication.k8s.io], resources: [tokenreviews], verbs: [create]}
  - {apiGroups: [""], resources: [users, groups, serviceaccounts], verbs: [impersonate]}
  # extras are checked per key: userextras/<key>
  - apiGroups: [authentication.k8s.io]
    verbs: [impersonate]
    resources: [uids, userextras/access-gateway.io/gateway, userextras/access-gateway.io/route,
      userextras/access-gateway.io/caller, userextras/authentication.kubernetes.io/credential-id, userextras/authentication.kubernetes.io/pod-name,
      userextras/authentication.kubernetes.io/pod-uid, userextras/authentication.kubernetes.io/node-name,
      userextras/authentication.kubernetes.io/node-uid]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: agw-operator}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: agw-operator}
subjects: [{kind: ServiceAccount, name: agw-operator, namespace: ${ns}}]
`;

before(async () => {
  cp = await startControlPlane();
  await installCRD(cp);
  await applyYaml(cp, namespaceYaml(ns, ['agw-operator', 'root']));
  await applyYaml(cp, operatorRBAC);
  await cp.kubectl(['create', 'clusterrolebinding', 'root-admin', '--clusterrole=cluster-admin', `--serviceaccount=${ns}:root`]);
  const token = await cp.token(ns, 'agw-operator', [cp.issuer]);
  const kubeconfig = tokenKubeconfig(join(cp.dir, 'operator-token.kubeconfig'), cp.url, token, { ca: cp.ca.cert });
  op = await startOperator({ ...cp, kubeconfig }, { args: ['--namespace', ns] });
}, { timeout: 180_000 });

after(async () => {
  await op?.stop();
  await cp?.stop();
});

test('a client token valid at the apiserver is stripped: ServiceAccount routes act as that account, Impersonate as the caller', async () => {
  await applyYaml(cp, `
apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: gw, namespace: ${ns}}
spec:
  authentication: {audiences: [access-gateway]}
  access: [{serviceAccounts: [{namespace: ${ns}, name: root}]}]
  routes:
    - {name: as-account, pathPrefix: /sa/, rewritePrefix: /, apiserver: {identity: ServiceAccount, serviceAccountName: nobody}}
    - {name: as-caller, pathPrefix: /, apiserver: {identity: Impersonate}}
`);
  const port = await gatewayPort(cp, ns, 'gw');
  // root is cluster-admin, and this token is accepted by the apiserver as well as by the gateway
  const rootToken = await cp.token(ns, 'root', ['access-gateway', cp.issuer]);
  const path = '/apis/rbac.authorization.k8s.io/v1/clusterroles';
  // sanity: the token alone gets through to the apiserver
  const direct = await curl(cp.url + path, ['--cacert', cp.ca.certFile, ...bearer(rootToken)]);
  assert.equal(direct.status, 200, direct.body);
  // Impersonate: the apiserver sees root -> allowed
  const asCaller = await curl(`http://127.0.0.1:${port}${path}`, bearer(rootToken));
  assert.equal(asCaller.status, 200, asCaller.body);
  // ServiceAccount: the apiserver sees the route's account (no rights), not root's Authorization,
  // not the client's Impersonate-* headers, and never the operator's own identity
  const r = await curl(`http://127.0.0.1:${port}/sa${path}`, [...bearer(rootToken), '-H', 'Impersonate-User: system:admin', '-H', 'Impersonate-Group: system:masters']);
  assert.equal(r.status, 403, r.body);
  const message = JSON.parse(r.body).message;
  assert.match(message, new RegExp(`system:serviceaccount:${ns}:nobody`));
  assert.doesNotMatch(message, /agw-operator/);
});
