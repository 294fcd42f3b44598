import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, parseAllDocuments } from 'yaml';
import { celRules, validateGateway } from '../../src/api/validate.js';
import { applyDefaults } from '../../src/api/defaults.js';
import { validateFiles } from '../../src/cli/validate.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const crdFile = join(root, 'deploy', 'crds', 'access-gateway.io_accessgateways.yaml');
const invalidDir = join(root, 'test', 'fixtures', 'invalid');

test('the TypeScript types and schema module are generated from the CRD (no drift)', () => {
  execFileSync(process.execPath, ['--experimental-strip-types', '--no-warnings', join(root, 'scripts', 'gen-types.ts'), '--check'], { stdio: 'pipe' });
});

test('every CEL rule in the CRD has a TypeScript twin, and no twin is left over', () => {
  const rules: string[] = [];
  const visit = (v: unknown) => {
    if (Array.isArray(v)) return v.forEach(visit);
    if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if (k === 'x-kubernetes-validations') for (const r of x as { rule: string }[]) rules.push(r.rule);
        else visit(x);
      }
    }
  };
  visit(parse(readFileSync(crdFile, 'utf8')));
  assert.deepEqual([...new Set(rules)].sort(), Object.keys(celRules).sort());
});

test('every field in the CRD schema has a description', () => {
  const missing: string[] = [];
  const visit = (s: any, path: string) => {
    if (!s.description && path && path !== '.metadata') missing.push(path);
    for (const [k, p] of Object.entries(s.properties ?? {})) visit(p, `${path}.${k}`);
    if (s.items?.properties) for (const [k, p] of Object.entries(s.items.properties)) visit(p, `${path}[].${k}`);
  };
  const crd = parse(readFileSync(crdFile, 'utf8'));
  visit(crd.spec.versions[0].schema.openAPIV3Schema, '');
  assert.deepEqual(missing, []);
});

test('the examples are valid', () => {
  const { lines, gateways } = validateFiles([join(root, 'deploy', 'examples'), join(root, 'deploy', 'examples', 'cross-namespace')]);
  assert.deepEqual(lines, []);
  assert.ok(gateways >= 5);
});

for (const file of readdirSync(invalidDir).filter((f) => f.endsWith('.yaml'))) {
  test(`validate refuses ${file}`, () => {
    const docs = parseAllDocuments(readFileSync(join(invalidDir, file), 'utf8'));
    const problems = validateGateway(docs[0]!.toJS()).map((p) => `${p.field}: ${p.message}`);
    const expect = /^# validate: (.*)$/m.exec(readFileSync(join(invalidDir, file), 'utf8'))?.[1];
    assert.ok(expect, `${file} has no "# validate:" line`);
    assert.ok(problems.includes(expect), `${file}: expected ${JSON.stringify(expect)} among ${JSON.stringify(problems)}`);
  });
}

test('defaults fill what the apiserver would', () => {
  const gw = applyDefaults({
    apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: 'a', namespace: 'b' },
    spec: { authentication: { audiences: ['x'] }, routes: [{ name: 'r', pathPrefix: '/', apiserver: {} }] },
  });
  assert.equal(gw.spec.authentication.mode, 'TokenReview');
  assert.equal(gw.spec.authentication.cacheTTLSeconds, 10);
  assert.equal(gw.spec.routes[0]!.apiserver!.identity, 'Impersonate');
});

test('time-window dates: RFC 3339 only, real days only; what the apiserver lets through but cannot be read is refused', async () => {
  const { parseDateTime } = await import('../../src/api/validate.js');
  assert.equal(parseDateTime('2026-12-01T09:00:00Z'), Date.UTC(2026, 11, 1, 9));
  assert.equal(parseDateTime('2026-12-01T10:30:00+01:30'), Date.UTC(2026, 11, 1, 9));
  assert.equal(parseDateTime('2026-12-01t09:00:00.250z'), Date.UTC(2026, 11, 1, 9) + 250);
  for (const bad of ['2026-02-30T00:00:00Z', '2026-12-01T09:00:00,5Z', '2026-12-01T09:00:00ZtX', '2026-12-01', 'next tuesday', '2026-12-01T24:00:00Z']) {
    assert.equal(parseDateTime(bad), null, bad);
  }
});
