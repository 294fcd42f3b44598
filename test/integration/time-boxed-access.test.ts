// Time-boxed grants: an access rule with notBefore/notAfter matches only inside its window. The
// running gateway follows the clock (no restart, no spec change), status lists expired rules, and
// the apiserver (CRD schema and CEL) and `validate` refuse a window that is not one.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startControlPlane, type ControlPlane } from '../support/control-plane.js';
import { cliPath, startOperator, type OperatorProc } from '../support/operator.js';
import { applyYaml, bearer, curl, gatewayPort, getGateway, installCRD, namespaceYaml } from '../support/cluster.js';
import { waitFor } from '../support/procs.js';

const ns = 'team-t';
let cp: ControlPlane;
let op: OperatorProc;

const gateway = (name: string, rules: string) => `apiVersion: access-gateway.io/v1alpha1
kind: AccessGateway
metadata: {name: ${name}, namespace: ${ns}}
spec:
  authentication: {audiences: [gw]}
  access:
${rules}
  routes:
    - {name: kube-api, pathPrefix: /, apiserver: {acceptPaths: ["^/version$"]}}
`;
const iso = (ms: number) => new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');

before(async () => {
  cp = await startControlPlane();
  await installCRD(cp);
  await applyYaml(cp, namespaceYaml(ns, ['oncall', 'contractor', 'always']));
  op = await startOperator(cp);
}, { timeout: 180_000 });

after(async () => {
  await op?.stop();
  await cp?.stop();
});

test('a grant starts and ends on time in the running gateway; status lists the expired rule', async () => {
  // whole seconds: the apiserver keeps date-times to the second
  const edge = Math.ceil((Date.now() + 12_000) / 1000) * 1000;
  await applyYaml(cp, gateway('g', `    - {serviceAccounts: [{namespace: ${ns}, name: oncall}], notAfter: "${iso(edge)}"}
    - {serviceAccounts: [{namespace: ${ns}, name: contractor}], notBefore: "${iso(edge)}", notAfter: "${iso(edge + 3_600_000)}"}
    - {serviceAccounts: [{namespace: ${ns}, name: always}]}`));
  const port = await gatewayPort(cp, ns, 'g');
  const [oncall, contractor, always] = [await cp.token(ns, 'oncall', ['gw']), await cp.token(ns, 'contractor', ['gw']), await cp.token(ns, 'always', ['gw'])];
  const get = async (token: string) => (await curl(`http://127.0.0.1:${port}/version`, bearer(token))).status;
  const generation = (await getGateway(cp, ns, 'g')).metadata.generation;

  assert.ok(Date.now() < edge - 2000, 'the window opened too late for this test');
  assert.deepEqual([await get(oncall), await get(contractor), await get(always)], [200, 403, 200]);
  // a caller a rule names, outside its window, is told whose gateway it is (as its 403 tells it)
  const early = await curl(`http://127.0.0.1:${port}/.well-known/access-gateway/can-i?method=GET&path=%2Fversion`, bearer(contractor));
  assert.deepEqual(JSON.parse(early.body).gateway, { namespace: ns, name: 'g' }, early.body);
  assert.match(JSON.parse(early.body).steps[0].message, new RegExp(`gateway ${ns}/g: spec.access\\[1\\] names it, but its notBefore`));
  assert.equal((await getGateway(cp, ns, 'g')).status.expiredAccessRules, undefined);
  await waitFor('the edge', async () => Date.now() >= edge + 50, 20_000, 50);
  // the same tokens (cached identities), the same listener: the decisions changed with the clock
  assert.deepEqual([await get(oncall), await get(contractor), await get(always)], [403, 200, 200]);

  const gw = await waitFor('expired rule in status', async () => {
    const g = await getGateway(cp, ns, 'g');
    return g.status.expiredAccessRules ? g : undefined;
  }, 15_000, 200);
  assert.deepEqual(gw.status.expiredAccessRules, [{ index: 0, notAfter: iso(edge) }]);
  assert.equal(gw.metadata.generation, generation, 'no spec change');
  assert.equal(gw.status.conditions.find((c: any) => c.type === 'Ready').status, 'True');
});

test('a window that is not one is refused by the apiserver and by validate, and disturbs no other gateway', async () => {
  const cases: [string, RegExp][] = [
    [`notBefore: "2026-12-02T00:00:00Z", notAfter: "2026-12-01T00:00:00Z"`, /notBefore must be earlier than notAfter/],
    [`notBefore: "2026-12-01T00:00:00Z", notAfter: "2026-12-01T00:00:00Z"`, /notBefore must be earlier than notAfter/],
    [`notAfter: "next tuesday"`, /notAfter.*date-time/],
  ];
  const dir = mkdtempSync(join(tmpdir(), 'agw-window-'));
  for (const [window, why] of cases) {
    const yaml = gateway('bad', `    - {serviceAccounts: [{namespace: ${ns}, name: oncall}], ${window}}`);
    await assert.rejects(applyYaml(cp, yaml), (e: any) => {
      assert.match(String(e.stderr ?? e.message), why, String(e.stderr ?? e.message));
      return true;
    }, window);
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, yaml);
    const r = spawnSync(process.execPath, [cliPath, 'validate', '-f', file], { encoding: 'utf8' });
    assert.equal(r.status, 1, window);
    assert.match(r.stdout, /spec\.access\[0\]\.notAfter: /, r.stdout);
    assert.match(r.stdout, window.includes('tuesday') ? /is not an RFC 3339 date-time/ : why, r.stdout);
  }
  assert.equal(await getGateway(cp, ns, 'bad'), undefined);
  // a time the apiserver's date-time format lets through but that cannot be read: not accepted,
  // never read as "no limit"
  await applyYaml(cp, gateway('odd', `    - {serviceAccounts: [{namespace: ${ns}, name: oncall}], notAfter: "2026-12-01T09:00:00,5Z"}`));
  const odd = await waitFor('odd gateway observed', async () => {
    const g = await getGateway(cp, ns, 'odd');
    return g?.status?.conditions ? g : undefined;
  }, 15_000, 200);
  const accepted = odd.status.conditions.find((c: any) => c.type === 'Accepted');
  assert.equal(accepted.status, 'False');
  assert.equal(accepted.reason, 'InvalidAccessRule');
  assert.match(accepted.message, /spec\.access\[0\]\.notAfter "2026-12-01T09:00:00,5Z"/);
  // the first test's gateway still serves
  const port = await gatewayPort(cp, ns, 'g');
  assert.equal((await curl(`http://127.0.0.1:${port}/version`, bearer(await cp.token(ns, 'always', ['gw'])))).status, 200);
});
