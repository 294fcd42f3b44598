// A caller's own Impersonate-* headers: parsed as the apiserver reads them, checked with exactly
// the apiserver's attributes, decisions cached per caller, errors never cached.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ImpersonationChecker, impersonateAttributes, requestedImpersonation, type ImpersonateAttributes, type Verdict,
} from '../../src/auth/impersonation.js';
import { FakeClock } from '../support/fake-clock.js';
import { NoSlotNowError } from '../../src/auth/review-limiter.js';

const caller = { username: 'system:serviceaccount:team-a:lead', uid: 'u1', groups: ['system:serviceaccounts'], extra: {} };

test('Impersonate-* headers: repeated groups and extras kept apart, keys unescaped; what the apiserver refuses is refused', () => {
  assert.equal(requestedImpersonation(['Authorization', 'Bearer x', 'Accept', '*/*']), null);
  assert.deepEqual(requestedImpersonation(['Impersonate-User', 'alice', 'Impersonate-Group', 'dev, ops', 'impersonate-group', 'qa',
    'Impersonate-Uid', '42', 'Impersonate-Extra-Example.com%2fteam', 'a', 'Impersonate-Extra-example.com%2Fteam', 'b']),
  { user: 'alice', uid: '42', groups: ['dev, ops', 'qa'], extra: Object.assign(Object.create(null), { 'example.com/team': ['a', 'b'] }) });
  assert.throws(() => requestedImpersonation(['Impersonate-Group', 'system:masters']), /need Impersonate-User/);
  assert.throws(() => requestedImpersonation(['Impersonate-User', 'a', 'Impersonate-User', 'b']), /more than one Impersonate-User/);
  assert.throws(() => requestedImpersonation(['Impersonate-User', 'a', 'Impersonate-Extra-access-gateway.io%2Fcaller', 'someone-else']), /sets this extra itself/);
  assert.throws(() => requestedImpersonation(['Impersonate-User', 'a', 'Impersonate-Everything', 'x']), /not an impersonation header/);
});

test('names that are not ASCII: read from their UTF-8 bytes, as the apiserver reads them; bytes that are not UTF-8 are refused', () => {
  // Node gives header values as latin1: the bytes of "élice" arrive as "Ã©lice"
  const bytes = (s: string) => Buffer.from(s, 'utf8').toString('latin1');
  assert.deepEqual(requestedImpersonation(['Impersonate-User', bytes('élice'), 'Impersonate-Group', bytes('Prüfer'), 'Impersonate-Extra-team', bytes('日本')]),
    { user: 'élice', uid: '', groups: ['Prüfer'], extra: Object.assign(Object.create(null), { team: ['日本'] }) });
  assert.equal(requestedImpersonation(['Impersonate-User', bytes('Ã©lice')])!.user, 'Ã©lice', 'what it says, not what its bytes read as latin1 once more');
  assert.throws(() => requestedImpersonation(['Impersonate-User', '\u00e9lice']), /Impersonate-User: not UTF-8/); // the one byte 0xE9
  assert.throws(() => requestedImpersonation(['Impersonate-User', 'alice', 'Impersonate-Group', '\u00ff']), /Impersonate-Group: not UTF-8/);
});

test('what would be checked as one thing and applied as another is refused: service-account lookalikes, case in extra keys, prototype keys, floods', () => {
  const as = (...h: string[]) => requestedImpersonation(['Impersonate-User', 'alice', ...h]);
  // the apiserver treats these as plain users: checked as service accounts they would escape
  for (const u of ['system:serviceaccount:team-a:Admin', 'system:serviceaccount:team-a:lead.', 'system:serviceaccount:Team-A:x',
    'system:serviceaccount:team-a:x:y', 'system:serviceaccount:team-a:', 'system:serviceaccount::x']) {
    assert.throws(() => requestedImpersonation(['Impersonate-User', u]), /not a valid service-account username/, u);
  }
  assert.deepEqual(requestedImpersonation(['Impersonate-User', 'system:serviceaccount:team-a:lead.x'])!.user, 'system:serviceaccount:team-a:lead.x');
  // %43 is an upper-case C after the apiserver lower-cases the header name: still the gateway's key
  assert.throws(() => as('Impersonate-Extra-access-gateway.io%2F%43aller', 'x'), /the gateway sets this extra itself/);
  assert.deepEqual(as('Impersonate-Extra-Example.com%2F%54eam', 'a')!.extra, Object.assign(Object.create(null), { 'example.com/Team': ['a'] }));
  for (const k of ['__proto__', 'constructor', '%76alue%4Ff']) {
    const r = as(`Impersonate-Extra-${k}`, 'v')!;
    assert.deepEqual(Object.values(r.extra), [['v']], k);
  }
  assert.throws(() => as(...Array.from({ length: 33 }, (_, i) => [`Impersonate-Group`, `g${i}`]).flat()), /at most 32/);
  assert.doesNotThrow(() => as(...Array.from({ length: 32 }, (_, i) => [`Impersonate-Group`, `g${i}`]).flat()));
  assert.throws(() => as('Impersonate-Uid', '1', 'Impersonate-Uid', '2'), /more than one Impersonate-Uid/);
});

test('the checks are the apiserver impersonation filter\'s: a service account by its namespace, groups, uid, each extra value', () => {
  assert.deepEqual(impersonateAttributes({ user: 'system:serviceaccount:team-b:deployer', uid: '', groups: [], extra: {} }),
    [{ verb: 'impersonate', group: '', resource: 'serviceaccounts', namespace: 'team-b', name: 'deployer' }]);
  assert.deepEqual(impersonateAttributes({ user: 'alice', uid: '42', groups: ['dev'], extra: { 'example.com/team': ['a', 'b'] } }), [
    { verb: 'impersonate', group: '', resource: 'users', name: 'alice' },
    { verb: 'impersonate', group: '', resource: 'groups', name: 'dev' },
    { verb: 'impersonate', group: 'authentication.k8s.io', resource: 'uids', name: '42' },
    { verb: 'impersonate', group: 'authentication.k8s.io', resource: 'userextras', subresource: 'example.com/team', name: 'a' },
    { verb: 'impersonate', group: 'authentication.k8s.io', resource: 'userextras', subresource: 'example.com/team', name: 'b' },
  ]);
});

function reviewer(allow: (a: ImpersonateAttributes) => boolean | Error) {
  const calls: ImpersonateAttributes[] = [];
  return {
    calls,
    review: async (_c: unknown, a: ImpersonateAttributes): Promise<Verdict> => {
      calls.push(a);
      const r = allow(a);
      if (r instanceof Error) throw r;
      return { allowed: r, reason: r ? '' : 'RBAC: no rule' };
    },
  };
}

test('every attribute must be allowed; the 403 names the first refused one and the apiserver\'s reason', async () => {
  const rv = reviewer((a) => a.resource === 'users' && a.name === 'alice');
  const c = new ImpersonationChecker(rv);
  await c.check(caller, { user: 'alice', uid: '', groups: [], extra: {} }, 'team-a');
  await assert.rejects(c.check(caller, { user: 'alice', uid: '', groups: ['system:masters'], extra: {} }, 'team-a'),
    (e: any) => e.status === 403 && /may not impersonate group "system:masters": RBAC: no rule/.test(e.message));
  await assert.rejects(c.check(caller, { user: 'bob', uid: '', groups: [], extra: {} }, 'team-a'), /may not impersonate user "bob"/);
  // a user it may not impersonate, with 32 groups: one review, not 33
  rv.calls.length = 0;
  await assert.rejects(c.check(caller, { user: 'carol', uid: '', groups: Array.from({ length: 32 }, (_, i) => `g${i}`), extra: {} }, 'team-a'), /may not impersonate user "carol"/);
  assert.deepEqual(rv.calls.map((a) => a.name), ['carol']);
});

test('a caller\'s cached decisions are remembered by a digest: 64 names of a header\'s 16 KiB hold a few KiB, not 1 MiB', async () => {
  const rv = reviewer(() => false);
  const c = new ImpersonationChecker(rv);
  for (let i = 0; i < 64; i++) await assert.rejects(c.check(caller, { user: `${i}${'u'.repeat(16_000)}`, uid: '', groups: [], extra: {} }, 'team-a'));
  const kept = (c as unknown as { cache: WeakMap<object, Map<string, unknown>> }).cache.get(caller)!;
  assert.equal(kept.size, 64);
  for (const k of kept.keys()) assert.ok(k.length <= 64, `a key of ${k.length} characters`);
  await assert.rejects(c.check(caller, { user: `0${'u'.repeat(16_000)}`, uid: '', groups: [], extra: {} }, 'team-a'));
  assert.equal(rv.calls.length, 64, 'the same name again is answered from the cache');
  await assert.rejects(c.check(caller, { user: `0${'u'.repeat(15_999)}v`, uid: '', groups: [], extra: {} }, 'team-a'));
  assert.equal(rv.calls.length, 65, 'a name that differs only at its end is asked');
});

test('decisions are cached per caller for the TTL, shared by concurrent checks; errors are not cached', async () => {
  const clock = new FakeClock(0);
  let fail = true;
  const rv = reviewer(() => (fail ? new Error('down') : true));
  const c = new ImpersonationChecker(rv, 10_000, clock);
  const as = { user: 'alice', uid: '', groups: [], extra: {} };
  await assert.rejects(c.check(caller, as, 'team-a'), /down/);
  fail = false;
  await Promise.all([c.check(caller, as, 'team-a'), c.check(caller, as, 'team-a'), c.check(caller, as, 'team-a')]);
  assert.equal(rv.calls.length, 2, 'the error was cached, or concurrent checks were not shared');
  const other = { ...caller, username: 'system:serviceaccount:team-b:x' };
  await c.check(other, as, 'team-b');
  assert.equal(rv.calls.length, 3, 'another caller shares no decision');
  clock.advance(10_001);
  await c.check(caller, as, 'team-a');
  assert.equal(rv.calls.length, 4, 'asked again after the TTL');
});

test('a decision still in use is asked again in the background after 80% of its TTL: no check waits; the new one replaces it; an error leaves it to expire', async () => {
  const clock = new FakeClock(0);
  const calls: string[] = [];
  let answer: () => Promise<Verdict> = async () => ({ allowed: true, reason: '' });
  const backgrounds: boolean[] = [];
  const c = new ImpersonationChecker({ review: (_c: unknown, a: ImpersonateAttributes, _ns: string, background = false) => { calls.push(a.name); backgrounds.push(background); return answer(); } }, 10_000, clock);
  const as = { user: 'alice', uid: '', groups: [], extra: {} };
  const served = (p: Promise<void>) => Promise.race([p.then(() => 'served', (e: Error) => e.message), new Promise((res) => setTimeout(() => res('waited'), 100))]);
  await c.check(caller, as, 'team-a');
  clock.advance(7_999);
  assert.equal(await served(c.check(caller, as, 'team-a')), 'served');
  assert.equal(calls.length, 1);
  let decide: (v: Verdict) => void = () => {};
  answer = () => new Promise((res) => { decide = res; });
  clock.advance(2);
  assert.equal(await served(c.check(caller, as, 'team-a')), 'served', 'the old decision serves while the new one is asked');
  assert.equal(await served(c.check(caller, as, 'team-a')), 'served');
  assert.equal(calls.length, 2, 'asked again once');
  assert.deepEqual(backgrounds, [false, true], 'in the background: never queued in the limiter');
  decide({ allowed: false, reason: 'RBAC: no rule' });
  await new Promise((res) => setImmediate(res));
  assert.match(String(await served(c.check(caller, as, 'team-a'))), /may not impersonate user "alice": RBAC: no rule/);
  assert.equal(calls.length, 2);

  const bob = { user: 'bob', uid: '', groups: [], extra: {} };
  answer = async () => ({ allowed: true, reason: '' });
  await c.check(caller, bob, 'team-a');
  answer = async () => { throw new Error('down'); };
  clock.advance(8_001);
  assert.equal(await served(c.check(caller, bob, 'team-a')), 'served');
  await new Promise((res) => setImmediate(res));
  clock.advance(1_000);
  assert.equal(await served(c.check(caller, bob, 'team-a')), 'served', 'the error left the decision in place');
  assert.equal(calls.length, 4, 'asked again once a decision');
  clock.advance(1_000);
  assert.equal(await served(c.check(caller, bob, 'team-a')), 'down', 'expired: asked again, and the error is the answer');
  assert.equal(calls.length, 5);
});

test('a decision still being asked is not asked again, however long it takes', async () => {
  const clock = new FakeClock(0);
  let calls = 0;
  let decide: (v: Verdict) => void = () => {};
  const c = new ImpersonationChecker({ review: () => { calls++; return new Promise<Verdict>((res) => { decide = res; }); } }, 10_000, clock);
  const as = { user: 'alice', uid: '', groups: [], extra: {} };
  const first = c.check(caller, as, 'team-a');
  clock.advance(9_000);
  const second = c.check(caller, as, 'team-a');
  assert.equal(calls, 1);
  decide({ allowed: true, reason: '' });
  await Promise.all([first, second]);
});

test('a renewal the limiter had no slot for is tried again 250 ms later; a renewed decision lasts 10 s from its own ask; a late renewal never overwrites a newer decision', async () => {
  const clock = new FakeClock(0);
  const asked: ((v: Verdict) => void)[] = [];
  const kinds: string[] = [];
  let busy = false;
  const c = new ImpersonationChecker({
    review: (_c: unknown, _a: ImpersonateAttributes, _ns: string, background = false) => {
      kinds.push(background ? 'background' : 'foreground');
      if (busy) return Promise.reject(new NoSlotNowError('no slot free now'));
      return new Promise<Verdict>((res) => asked.push(res));
    },
  }, 10_000, clock);
  const as = { user: 'alice', uid: '', groups: [], extra: {} };
  const p0 = c.check(caller, as, 'team-a');
  asked[0]!({ allowed: true, reason: '' });
  await p0;
  busy = true;
  clock.advance(8_001);
  await c.check(caller, as, 'team-a');
  await new Promise((res) => setImmediate(res));
  clock.advance(249);
  await c.check(caller, as, 'team-a');
  assert.deepEqual(kinds, ['foreground', 'background'], 'not before 250 ms');
  busy = false;
  clock.advance(1); // 8,251 ms: asked again in the background
  await c.check(caller, as, 'team-a');
  assert.deepEqual(kinds, ['foreground', 'background', 'background']);
  asked[1]!({ allowed: true, reason: '' });
  await new Promise((res) => setImmediate(res));
  clock.advance(10_000); // 18,251: the renewal asked at 8,251 expired at 18,251
  const p3 = c.check(caller, as, 'team-a').then(() => 'allowed', (e: Error) => e.message);
  assert.equal(kinds.at(-1), 'foreground', 'expired 10 s after its own ask');
  asked[2]!({ allowed: false, reason: 'revoked' });
  assert.match(await p3, /revoked/);

  // a renewal asked before a newer foreground decision lands after it: ignored
  const bob = { user: 'bob', uid: '', groups: [], extra: {} };
  const b0 = c.check(caller, bob, 'team-a');
  asked[3]!({ allowed: true, reason: '' });
  await b0;
  clock.advance(8_001);
  await c.check(caller, bob, 'team-a'); // renewal asked: asked[4], slow
  clock.advance(2_000); // the first decision expired
  const b2 = c.check(caller, bob, 'team-a').then(() => 'allowed', (e: Error) => e.message);
  asked[5]!({ allowed: false, reason: 'revoked' });
  assert.match(await b2, /revoked/);
  asked[4]!({ allowed: true, reason: '' });
  await new Promise((res) => setImmediate(res));
  assert.match(await c.check(caller, bob, 'team-a').then(() => 'allowed', (e: Error) => e.message), /revoked/);
});
