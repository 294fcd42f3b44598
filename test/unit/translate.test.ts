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
});
