import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileRegex, programEstimate, regexInfo, foldedSpan } from '../../src/api/regex.js';

test('a pattern\'s program size is estimated from its text at or above what it compiles to', () => {
  const patterns = ['^.*', '^(?:GET|HEAD|OPTIONS)$', '^/api/v1/namespaces/[a-z0-9-]{1,63}/pods/[a-z0-9-]{1,253}$', '(?i)^/apis?/v1/secrets',
    '\\pL{20}\\p{Greek}+', 'x{2,}', 'x{0}', 'x{0,}', 'x{1,}', 'a{0,100}', '(a|b|c){3,5}', '\\Qa.b{9}\\E+', '[]a]{10}', '[[:alpha:]]{5}',
    '(?P<n>ab)+', '(?:(?:(?:ab{2}){3}){4})', '.{1000}', '(?s).{64}x', '(?:a{2,5}){7,9}', '(x{3}|y{4,}){2}', '[ab/]*a[ab/]{1000}[0-9]', 'a{,3}', 'a{x}',
    // what a reviewer found the first estimate missed: an empty \\Q\\E, a [ in a class, flags before a repetition
    `(?:${'a'.repeat(40)})\\Q\\E{100}`, `[!-[:](?:${'a'.repeat(30)}){100}[:]`, 'a*(?i){1000}', '[[:^alpha:][]{5}'];
  for (const p of patterns) {
    const real = compileRegex(p, 'test').size, estimate = programEstimate(p);
    assert.ok(estimate >= real && estimate <= 2.1 * real, `${p}: estimate ${estimate}, compiled ${real}`);
  }
});

test('a pattern whose repetitions expand past a route\'s bound is refused without being compiled', () => {
  // 250 characters (the CRD allows 256) that re2js compiles, under its own limit, to 240,002
  // instructions: ~0.12 s
  const hostile = `(?:${'a'.repeat(240)}){1000}`;
  assert.equal(hostile.length, 250);
  const info = regexInfo(hostile);
  assert.ok('problem' in info);
  assert.match(info.problem, /^its repetitions would compile to about 242002 RE2 instructions, more than the 2048 a route may have$/);
  for (const p of [`(?:${'a'.repeat(240)})\\Q\\E{1000}`, `[!-[:](?:${'a'.repeat(236)}){1000}[:]`]) {
    const i = regexInfo(p);
    assert.ok('problem' in i && /would compile to about/.test(i.problem), `${p}: ${JSON.stringify(i)}`);
  }
  // one just under twice the bound is compiled, and measured
  assert.deepEqual(regexInfo(`(?:${'a'.repeat(240)}){8}`), { size: 1922, ranges: 960 });
});

test('random patterns: the estimate is never below half of what compiles (the check compiles up to twice a route\'s bound)', () => {
  let seed = 42;
  const next = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  const pieces = ['a', 'b', '(', ')', '(?:', '(?i)', '(?i:', '(?P<n>', '|', '*', '+', '?', '*?', '{3}', '{2,5}', '{4,}', '{0,3}', '[', ']', '[:alpha:]',
    '^', '-', '\\Q', '\\E', '\\pL', '\\p{Greek}', '\\x{41}', '\\d', '.', '$', '\\', '{', '}', ':', '[^', '\\b', '{10}', '{7}', '{100}', '{999}', 'abc'];
  let compiled = 0;
  for (let k = 0; k < 40_000; k++) {
    let p = '';
    for (let i = 1 + Math.floor(next() * 14); i > 0; i--) p += pieces[Math.floor(next() * pieces.length)];
    let real: number;
    try {
      real = compileRegex(p, 'fuzz').size;
    } catch {
      continue; // RE2 refuses it: nothing to estimate
    }
    compiled++;
    assert.ok(2 * programEstimate(p) >= real, `${JSON.stringify(p)}: estimate ${programEstimate(p)}, compiled ${real}`);
  }
  assert.ok(compiled > 5_000, `${compiled} patterns compiled`);
});

test('the code points a pattern\'s case-insensitive class ranges make re2js walk are counted from its text, before it is compiled, never fewer', () => {
  const cases: [string, number][] = [
    ['(?i)[a-z]', 26], ['[a-z]', 0], ['(?i)[B-\\x{1E942}]', 125_185], ['(?i)[\\x{0}-\\x{10FFFF}]', 0],
    ['(?i)[^a-zA-Z0-9]', 52], ['(?i)[]a-c]', 3], ['(?i)[\\x41-\\x5a]', 26], ['(?i)[\\101-\\132]', 26], ['(?i)[\\p{Greek}a-c]', 3],
    // read high rather than low: every X-Y is a range, i named anywhere counts, a Perl or POSIX class is 64
    ['(?i)\\Q[A-Z]\\E[a-c]', 29], ['(?i)[a\\-z]', 26], ['(?s-i)[A-Z]', 26], ['(?i)[[:alpha:]a-c]', 67], ['(?i)[\\w]', 64],
    // what a first scan missed (a review): a [: that is no class; \x{} with more than 8 digits
    ['(?i)[[:B-\u{1E942}]', 125_185], ['(?i)[[:B-\\x{1E942}:]]', 125_185], ['(?i)[\\x{000000042}-\\x{1E942}]', 125_185],
  ];
  for (const [p, n] of cases) assert.equal(foldedSpan(p), n, p);
});
