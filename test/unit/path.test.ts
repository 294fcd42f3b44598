import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nonCanonical, PathFilter } from '../../src/dataplane/path.js';

test('canonical paths pass', () => {
  for (const p of ['/', '/api/v1/namespaces/a/configmaps', '/apis/apps/v1/deployments', '/version', '/a%20b', '/a.b/c..d/...']) {
    assert.equal(nonCanonical(p), null, p);
  }
});

test('dot segments, empty segments and their encodings are refused', () => {
  for (const p of ['/api/../secrets', '/api/..', '/./api', '//api', '/api//v1', '/api/%2e%2e/secrets', '/api/%2E%2E/x',
    '/api/.%2e/x', '/api%2f..%2fsecrets', '/api/%252e%252e/x', '/a\\b', '/a%5cb', '/a%00', '/%2f%2fapi', 'api', '/a%zz']) {
    assert.notEqual(nonCanonical(p), null, p);
  }
});

test('kubectl proxy filter semantics: reject paths, then methods, then accept paths (unanchored regex search)', () => {
  const f = new PathFilter({ acceptPaths: ['^/api/.*', '^/apis/.*'], rejectPaths: ['^/api/.*/pods/.*/exec', '^/api/.*/pods/.*/attach'], rejectMethods: ['POST', '^DELETE$'] });
  assert.equal(f.check('GET', '/api/v1/namespaces/a/pods'), null);
  assert.match(f.check('GET', '/api/v1/namespaces/a/pods/p/exec')!, /rejectPaths/);
  assert.match(f.check('GET', '/api/v1/namespaces/a/pods/p/attach')!, /rejectPaths/);
  assert.match(f.check('POST', '/api/v1/namespaces/a/configmaps')!, /rejectMethods/);
  assert.match(f.check('DELETE', '/apis/apps/v1/x')!, /rejectMethods/);
  assert.match(f.check('GET', '/version')!, /acceptPaths/);
  assert.match(f.check('GET', '/healthz')!, /acceptPaths/);
  // unanchored: a pattern without ^ matches anywhere, as Go's regexp.MatchString does
  const g = new PathFilter({ acceptPaths: ['configmaps'], rejectPaths: [], rejectMethods: [] });
  assert.equal(g.check('GET', '/api/v1/namespaces/a/configmaps'), null);
});
