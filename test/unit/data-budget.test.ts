import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DataBudget, dataBytes } from '../../src/controller/data-budget.js';

test('a namespace is over its byte bound only while its objects hold more; each crossing is reported once; other namespaces count apart', () => {
  const b = new DataBudget(100);
  assert.equal(b.set('a', 'x', 60), false);
  assert.equal(b.set('b', 'x', 90), false);
  assert.equal(b.set('a', 'y', 40), false, '100: not more than the bound');
  assert.equal(b.over('a'), false);
  assert.equal(b.set('a', 'y', 41), true, 'crossed');
  assert.equal(b.over('a'), true);
  assert.equal(b.over('b'), false);
  assert.equal(b.set('a', 'z', 10), false, 'still over: nothing to report');
  assert.equal(b.total('a'), 111);
  assert.equal(b.set('a', 'y', undefined), true, 'gone: back under');
  assert.equal(b.total('a'), 70);
  assert.equal(b.set('a', 'x', undefined), false);
  assert.equal(b.set('a', 'z', undefined), false);
  assert.equal(b.total('a'), 0);
  assert.equal((b as unknown as { objects: Map<string, unknown> }).objects.has('a'), false, 'an empty namespace is forgotten');
  assert.equal(b.set('a', 'gone', undefined), false, 'an object never seen');
  const none = new DataBudget(0);
  assert.equal(none.set('a', 'x', 1e9), false);
  assert.equal(none.over('a'), false, '0: no bound');
});

test('bytes are counted as UTF-8, keys and values: never fewer than V8 holds', () => {
  assert.equal(dataBytes(undefined), 0);
  assert.equal(dataBytes({ ab: 'cde' }), 5);
  assert.equal(dataBytes({ k: 'é' }), 3);
  assert.equal(dataBytes({ k: '漢' }), 4);
});
