import { test } from 'node:test';
import assert from 'node:assert/strict';
import { check, keptFilters } from '../../src/dataplane/filter-thread.js';
import { compileRegex } from '../../src/api/regex.js';
import type { FilterSpec } from '../../src/dataplane/path.js';

// a pattern whose DFA builds ~10 states of ~3 KiB on a path of a and b
const chars = Array.from({ length: 180 }, (_, k) => String.fromCodePoint(0x400 + 2 * k)).join('');
const spec = (n: number): FilterSpec => ({ acceptPaths: [`q${n}[${chars}]|[ab]*a[ab]{4}/`], rejectPaths: [], rejectMethods: [] });
const keyOf = (s: FilterSpec) => JSON.stringify([s.acceptPaths, s.rejectPaths, s.rejectMethods]); // (as PathFilter.key)
const job = (owner: string, n: number, id = 0) => ({ id, owner, field: 'spec.routes[0].apiserver', key: keyOf(spec(n)), spec: spec(n), method: 'GET', path: '/abbabaabbbabaabab/' });
const bad: FilterSpec = { acceptPaths: ['(?<=a)'], rejectPaths: [], rejectMethods: [] };

test('the filter thread keeps a team\'s filters apart: a team changing its patterns evicts only its own, and no DFA state is kept', () => {
  assert.ok('accepted' in check(job('team-b', 0)));
  assert.ok('accepted' in check(job('team-b', 1)));
  // team-a sends 40 filters in turn
  for (let n = 0; n < 40; n++) assert.ok('accepted' in check(job('team-a', n)));
  assert.deepEqual(keptFilters(), { 'team-b': 2, 'team-a': 8 });
  // what a check built is dropped after it (the thread sees only costly filters)
  assert.equal(compileRegex(spec(39).acceptPaths[0]!, 'team-a').states, 0);
  assert.equal(compileRegex(spec(1).acceptPaths[0]!, 'team-b').keptBytes, 0);
  // a filter that does not compile (the thread is sent what translate admitted; defence only) keeps nothing
  for (let i = 0; i < 5; i++) assert.throws(() => check({ ...job(`bad-${i}`, 0), key: keyOf(bad), spec: bad }));
  assert.deepEqual(keptFilters(), { 'team-b': 2, 'team-a': 8 });
  // 40 namespaces with one filter each: 32 kept in all, the least recently used namespaces' go first
  for (let i = 0; i < 40; i++) check(job(`ns-${i}`, 0));
  const kept = keptFilters();
  assert.equal(Object.values(kept).reduce((a, b) => a + b, 0), 32);
  assert.equal(kept['team-b'], undefined, 'team-b was used least recently');
  assert.equal(kept['ns-7'], undefined);
  assert.equal(kept['ns-8'], 1);
  assert.equal(kept['ns-39'], 1);
});
