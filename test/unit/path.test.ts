import { test } from 'node:test';
import { compileRegex, dfaKept, dfaKeptBy, dfaKeptPerOwner } from '../../src/api/regex.js';
import assert from 'node:assert/strict';
import { canonicalPath, encodePath, normalizePrefix, PathFilter, replacePrefix, underPrefix, type FilterPass, type FilterRefusal } from '../../src/dataplane/path.js';

const ok = (raw: string) => {
  const c = canonicalPath(raw);
  assert.ok('path' in c, `${raw}: ${'problem' in c ? c.problem : ''}`);
  return c;
};

test('canonical paths pass unchanged', () => {
  for (const p of ['/', '/api/v1/namespaces/a/configmaps', '/apis/apps/v1/deployments', '/version', '/a.b/c..d/...', "/a:b@c!$&'()*+,;=~_-"]) {
    assert.deepEqual(ok(p), { path: p, encoded: p });
  }
});

test('a path is decoded once, and forwarded as the canonical encoding of exactly that', () => {
  assert.deepEqual(ok('/api/v1/namespaces/a/%73ecrets'), { path: '/api/v1/namespaces/a/secrets', encoded: '/api/v1/namespaces/a/secrets' });
  assert.deepEqual(ok('/a%20b'), { path: '/a b', encoded: '/a%20b' });
  assert.deepEqual(ok('/%E2%82%AC/%3F%23'), { path: '/€/?#', encoded: '/%E2%82%AC/%3F%23' });
  assert.deepEqual(ok('/%7Bx%7D'), { path: '/{x}', encoded: '/%7Bx%7D' });
  // what the apiserver decodes from the forwarded form is the path the gateway checked
  for (const raw of ['/a%20b', '/%E2%82%AC/%3F%23', '/x/%73ecrets', '/%7e%41']) {
    const c = ok(raw);
    assert.equal(decodeURIComponent(c.encoded), c.path, raw);
    assert.equal(encodePath(c.path), c.encoded, raw);
  }
});

test('dot segments, empty segments, slashes, backslashes, NUL, double encoding: refused, also encoded', () => {
  for (const p of ['/api/../secrets', '/api/..', '/./api', '//api', '/api//v1', '/api/%2e%2e/secrets', '/api/%2E%2E/x',
    '/api/.%2e/x', '/api%2f..%2fsecrets', '/api/%252e%252e/x', '/a/%2573ecrets', '/a%25', '/a\\b', '/a%5cb', '/a%00', '/a%0a', '/%2f%2fapi',
    '/ledger/read/..;/admin', '/ledger/..;x/admin', '/;x/admin', '/a/;/b', '/a/%3Bx/b', '/a;x/;y/b', '/a/.;/b', '/a/..;', '/ledger/read/..%3B/admin', '/ledger/read/%2e%2e;/admin',
    'api', '*', 'http://evil/x', '/a%zz', '/a%', '/%ff', '/%c0%ae%c0%ae/x', '/a b', '/é']) {
    assert.ok('problem' in canonicalPath(p), p);
  }
  const long = canonicalPath('/' + 'a'.repeat(5000));
  assert.ok('problem' in long && long.tooLong);
});

test('prefixes match whole path elements (Gateway API PathPrefix)', () => {
  const p = normalizePrefix('/api/v1/namespaces/team-a');
  assert.ok(underPrefix('/api/v1/namespaces/team-a', p));
  assert.ok(underPrefix('/api/v1/namespaces/team-a/configmaps', p));
  assert.ok(!underPrefix('/api/v1/namespaces/team-a-prod/configmaps', p));
  assert.ok(!underPrefix('/api/v1/namespaces/team', p));
  assert.equal(normalizePrefix('/ledger/'), '/ledger');
  assert.ok(underPrefix('/ledger', normalizePrefix('/ledger/')));
  assert.ok(!underPrefix('/ledgers', normalizePrefix('/ledger/')));
  assert.equal(normalizePrefix('/'), '');
  assert.ok(underPrefix('/anything', ''));
});

test('rewrites replace the prefix element-wise', () => {
  assert.equal(replacePrefix('/ledger/v1/x', '/ledger', ''), '/v1/x');
  assert.equal(replacePrefix('/ledger', '/ledger', ''), '/');
  assert.equal(replacePrefix('/ledger/v1/accounts', '/ledger/v1', '/v1'), '/v1/accounts');
  assert.equal(replacePrefix('/a', '', '/x'), '/x/a');
});

/** A filter's refusal (fails the test when it let the request pass). */
function why(v: FilterRefusal | FilterPass): FilterRefusal {
  assert.ok('why' in v, `refused, not passed: ${JSON.stringify(v)}`);
  return v;
}

test('kubectl proxy filter semantics: reject paths, then methods, then accept paths (unanchored RE2 search)', () => {
  const f = new PathFilter({ acceptPaths: ['^/api/.*', '^/apis/.*'], rejectPaths: ['^/api/.*/pods/.*/exec', '^/api/.*/pods/.*/attach'], rejectMethods: ['POST', '^DELETE$'] }, 'team-a',
    'spec.routes[2].apiserver');
  assert.deepEqual(f.check('GET', '/api/v1/namespaces/a/pods'), { accepted: { field: 'spec.routes[2].apiserver.acceptPaths[0]', pattern: '^/api/.*' } });
  assert.deepEqual(f.check('GET', '/apis/apps/v1'), { accepted: { field: 'spec.routes[2].apiserver.acceptPaths[1]', pattern: '^/apis/.*' } });
  assert.deepEqual(f.check('GET', '/api/v1/namespaces/a/pods/p/exec'), {
    why: 'path /api/v1/namespaces/a/pods/p/exec is rejected by spec.routes[2].apiserver.rejectPaths[0] "^/api/.*/pods/.*/exec"',
    field: 'spec.routes[2].apiserver.rejectPaths[0]',
  });
  assert.equal(why(f.check('GET', '/api/v1/namespaces/a/pods/p/attach')).field, 'spec.routes[2].apiserver.rejectPaths[1]');
  assert.equal(why(f.check('POST', '/api/v1/namespaces/a/configmaps')).field, 'spec.routes[2].apiserver.rejectMethods[0]');
  assert.equal(why(f.check('DELETE', '/apis/apps/v1/x')).why, 'method DELETE is rejected by spec.routes[2].apiserver.rejectMethods[1] "^DELETE$"');
  assert.deepEqual(f.check('GET', '/version'), { why: 'path /version is not accepted by any of spec.routes[2].apiserver.acceptPaths', field: 'spec.routes[2].apiserver.acceptPaths' });
  assert.match(why(f.check('GET', '/healthz')).why, /acceptPaths/);
  const g = new PathFilter({ acceptPaths: ['configmaps'], rejectPaths: [], rejectMethods: [] }, 'team-a');
  assert.ok('accepted' in g.check('GET', '/api/v1/namespaces/a/configmaps'));
});

test('rejectMethods in lower case match: "delete" rejects DELETE (Node gives methods in upper case); a pattern naming upper-case letters is taken as written', () => {
  const f = new PathFilter({ acceptPaths: ['^/api/'], rejectPaths: [], rejectMethods: ['^delete$', 'pat', '^PO[A-Z]+$'] }, 'team-a', 'spec.routes[0].apiserver');
  assert.equal(why(f.check('DELETE', '/api/v1/x')).why, 'method DELETE is rejected by spec.routes[0].apiserver.rejectMethods[0] "^delete$"');
  assert.equal(why(f.check('PATCH', '/api/v1/x')).field, 'spec.routes[0].apiserver.rejectMethods[1]');
  assert.equal(why(f.check('POST', '/api/v1/x')).field, 'spec.routes[0].apiserver.rejectMethods[2]');
  assert.equal(why(f.check('delete', '/api/v1/x')).field, 'spec.routes[0].apiserver.rejectMethods[0]');
  // the verdict is remembered per method, and the same on every request
  assert.equal(why(f.check('DELETE', '/api/v1/y')).field, 'spec.routes[0].apiserver.rejectMethods[0]');
  assert.ok('accepted' in f.check('GET', '/api/v1/x'));
  assert.ok('accepted' in f.check('GET', '/api/v1/x'));
  assert.ok('accepted' in f.check('DELETEX', '/api/v1/x'));
  // rejectPaths still come first, and a path the method filter passes is still checked against acceptPaths
  assert.match(why(f.check('GET', '/version')).why, /acceptPaths/);
  // a pattern that names upper-case letters is taken as written: "all but GET" still lets GET through
  const allBut = new PathFilter({ acceptPaths: ['^/api/'], rejectPaths: [], rejectMethods: ['^[^GH]', '[^A-Z]'] }, 'team-a', 'spec.routes[0].apiserver');
  for (const m of ['GET', 'HEAD']) assert.ok('accepted' in allBut.check(m, '/api/v1/x'), m);
  for (const m of ['POST', 'DELETE', 'PATCH']) assert.equal(why(allBut.check(m, '/api/v1/x')).field, 'spec.routes[0].apiserver.rejectMethods[0]', m);
  // escapes are no letters of the pattern's own: all lower case still
  for (const p of ['\\Adelete\\z', '\\Qdelete\\E', '^dele\\Se$', '^\\p{L}elete$']) {
    const f = new PathFilter({ acceptPaths: ['.*'], rejectPaths: [], rejectMethods: [p] }, 'team-a', 'spec.routes[0].apiserver');
    assert.equal(why(f.check('DELETE', '/x')).field, 'spec.routes[0].apiserver.rejectMethods[0]', p);
    assert.ok('accepted' in f.check('GET', '/x'), p);
  }
});

test('filters run in linear time: a catastrophic pattern for backtracking engines answers at once', () => {
  const f = new PathFilter({ acceptPaths: ['^/(a+)+$'], rejectPaths: [], rejectMethods: [] }, 'team-a');
  // with a backtracking engine this is ~2^4000 steps; the test would never end
  assert.match(why(f.check('GET', '/' + 'a'.repeat(4000) + '!')).why, /acceptPaths/);
  assert.ok('accepted' in f.check('GET', '/aaaa'));
});

test('RE2 syntax: what Go accepts compiles, lookarounds and backreferences do not', () => {
  assert.doesNotThrow(() => new PathFilter({ acceptPaths: ['(?i)^/API/', '\\pL+', '^/a{2,3}$'], rejectPaths: [], rejectMethods: [] }, 'team-a'));
  for (const bad of ['(?<=x)y', '(?=x)', '(a)\\1', 'a(b']) {
    assert.throws(() => new PathFilter({ acceptPaths: [bad], rejectPaths: [], rejectMethods: [] }, 'team-a'), /error parsing regexp/, bad);
  }
});

test('a compiled program is shared by one team\'s routes, never between teams (its match cache is mutable state)', () => {
  const a = compileRegex('^/api/.*/pods/.*/exec', 'team-a');
  const a2 = compileRegex('^/api/.*/pods/.*/exec', 'team-a');
  const b = compileRegex('^/api/.*/pods/.*/exec', 'team-b');
  assert.equal(a, a2, 'the same team compiles a pattern once');
  assert.notEqual(a, b, 'another team gets its own program');
  assert.notEqual(compileRegex('^/api/.*/pods/.*/attach', 'team-a'), a);
  assert.ok(a.test('/api/v1/namespaces/x/pods/p/exec') && b.test('/api/v1/namespaces/x/pods/p/exec'));
});

test('a hostile pattern\'s DFA keeps a bounded number of states between matches, and still matches what it should', () => {
  // its DFA builds a state per character of a random path of a, b and /
  const re = compileRegex('[ab/]*a[ab/]{30}[0-9]', 'team-hostile');
  assert.equal(re.size, 36);
  let seed = 3;
  for (let i = 0; i < 5; i++) {
    const path = '/' + Array.from({ length: 4000 }, () => 'ab/'[(seed = (seed * 1103515245 + 12345) & 0x7fffffff) % 3]).join('');
    assert.equal(re.test(path), false);
    assert.ok(re.states <= dfaKept, `${re.states} states kept`);
  }
  assert.equal(re.test('/b' + 'a'.repeat(31) + '7'), true);
  assert.equal(re.test('/b' + 'a'.repeat(30) + '7'), false);
  // a filter a team means keeps its few states (its matches stay fast)
  const kind = compileRegex('^/api/v1/namespaces/[^/]+/pods', 'team-hostile');
  for (let i = 0; i < 50; i++) kind.test(`/api/v1/namespaces/n${i}/pods/p${i}`);
  assert.ok(kind.states <= dfaKept);
  assert.ok(kind.size > 0 && kind.size < 100, String(kind.size));
});

test('the DFA states one team\'s patterns keep between matches are bounded in bytes for the team, not taken from another team', () => {
  // each pattern's class of 180 separate characters makes ~360 character classes: a state's table
  // is ~3 KiB, and one match keeps ~29 KiB of states (10 states: under dfaKept)
  const chars = Array.from({ length: 180 }, (_, k) => String.fromCodePoint(0x400 + 2 * k)).join('');
  const wide = (i: number) => compileRegex(`x${i}[${chars}]|[ab]*a[ab]{4}/`, 'team-wide');
  const calm = compileRegex('^/apis/apps/v1/namespaces/[^/]+/deployments', 'team-calm');
  for (let i = 0; i < 20; i++) calm.test(`/apis/apps/v1/namespaces/n${i}/deployments/d${i}`);
  const calmKept = calm.keptBytes;
  assert.ok(calmKept > 4096 && calmKept === dfaKeptBy('team-calm'), `team-calm keeps ${calmKept} bytes`);
  const kept: number[] = [];
  for (let i = 0; i < 300; i++) {
    const re = wide(i);
    assert.equal(re.test('/abbabaabbbabaabab/'), true, 'a match still finds what it should');
    assert.equal(re.test('/bbbbbbbb/'), false);
    kept.push(re.keptBytes);
  }
  assert.ok(kept[0]! > 20_000, `a wide pattern keeps ${kept[0]} bytes while its team has room`);
  const total = kept.reduce((a, b) => a + b, 0);
  assert.equal(total, dfaKeptBy('team-wide'), 'what each keeps is what the team is charged');
  assert.ok(total <= dfaKeptPerOwner && total > dfaKeptPerOwner - 64 * 1024, `team-wide keeps ${total} bytes`);
  assert.ok(kept.filter((k) => k === 0).length > 100, 'past the bound a pattern drops its states after its match');
  // the other team's states are its own: still kept, and its next match keeps them
  assert.equal(calm.keptBytes, calmKept);
  calm.test('/apis/apps/v1/namespaces/n1/deployments/d1');
  assert.equal(calm.keptBytes, calmKept);
  // a pattern that drops its states gives its bytes back
  const first = wide(0);
  first.forget();
  assert.equal(first.keptBytes, 0);
  assert.equal(dfaKeptBy('team-wide'), total - kept[0]!);
});
