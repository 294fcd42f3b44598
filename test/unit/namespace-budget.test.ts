import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addressGroup, PausedAnswers, TurnShare, UnadmittedConnections, type Unadmitted } from '../../src/dataplane/namespace-budget.js';

/** Connections that record their own eviction, and a way to add them. */
function setup(limit: number, total = 0) {
  const u = new UnadmittedConnections(limit, total);
  const evicted: string[] = [];
  const add = (namespace: string, source: string, name: string): Unadmitted => {
    const c: Unadmitted = { source, evict: () => { evicted.push(name); u.remove(namespace, c); } };
    u.add(namespace, c);
    return c;
  };
  return { u, evicted, add };
}

test('connections not admitted yet: past the limit the oldest of the address holding the most is closed', () => {
  const { evicted, add } = setup(3);
  add('team-a', '10.0.0.9', 'caller');
  for (let i = 0; i < 50; i++) add('team-a', '10.0.0.66', `flood${i}`);
  assert.deepEqual(evicted, Array.from({ length: 48 }, (_, i) => `flood${i}`), 'the flood closes only its own, oldest first');
  // a second connection of the caller: the flood still holds the most
  add('team-a', '10.0.0.9', 'caller2');
  assert.equal(evicted.at(-1), 'flood48');
});

test('connections not admitted yet: a flood spread over many addresses closes the oldest of all, not a caller\'s second connection', () => {
  const { evicted, add } = setup(32); // an address holds "the most" from 4 on
  for (let i = 0; i < 30; i++) add('team-a', `10.1.0.${i}`, `stranger${i}`);
  add('team-a', '10.0.0.9', 'caller1');
  add('team-a', '10.0.0.9', 'caller2');
  add('team-a', '10.1.1.0', 'stranger30');
  assert.deepEqual(evicted, ['stranger0']);
  add('team-a', '10.0.0.9', 'caller3');
  add('team-a', '10.0.0.9', 'caller4'); // 4: the most, and a share
  assert.deepEqual(evicted, ['stranger0', 'stranger1', 'caller1']);
});

test('connections not admitted yet: the address holding the most is known also after the one that held more gave some back', () => {
  const { u, evicted, add } = setup(16);
  const a = Array.from({ length: 6 }, (_, i) => add('team-a', '10.0.0.1', `a${i}`));
  for (let i = 0; i < 5; i++) add('team-a', '10.0.0.2', `b${i}`);
  for (const c of a.slice(0, 5)) u.remove('team-a', c); // admitted: 10.0.0.1 holds 1, 10.0.0.2 holds 5
  for (let i = 0; i < 11; i++) add('team-a', `10.1.0.${i}`, `s${i}`);
  assert.deepEqual(evicted, ['b0'], 'the oldest of 10.0.0.2, not 10.0.0.1\'s older one');
});

test('connections not admitted yet over all namespaces: one address filling many namespaces, each within its own limit, closes its own past the total; a caller elsewhere keeps its connection', () => {
  const { u, evicted, add } = setup(100, 64); // an address holds "the most" over all from 8 on
  const caller = add('team-b', '10.0.0.9', 'caller');
  for (let ns = 0; ns < 8; ns++) for (let i = 0; i < 20; i++) add(`ns-${ns}`, '10.0.0.66', `flood${ns}.${i}`);
  assert.equal(evicted.length, 160 + 1 - 64, 'held at the total');
  assert.ok(evicted.every((e) => e.startsWith('flood')), evicted.join());
  assert.deepEqual(evicted.slice(0, 3), ['flood0.0', 'flood1.0', 'flood2.0'], 'the oldest of the namespace holding the most (first of those tied)');
  // what was closed was given back to its namespace; the namespaces holding the most gave first
  const held = (u as unknown as { open: Map<string, { all: Set<unknown> }> }).open;
  const counts = Array.from({ length: 8 }, (_, ns) => held.get(`ns-${ns}`)?.all.size ?? 0);
  assert.equal(counts.reduce((a, b) => a + b), 63);
  assert.ok(Math.max(...counts) - Math.min(...counts) <= 1, `even: ${counts.join()}`);
  assert.equal(held.get('team-b')?.all.size, 1);
  // admitted: no longer counted over all
  u.remove('team-b', caller);
  add('team-c', '10.0.0.10', 'late');
  assert.equal(evicted.length, 97, 'room for one more after the caller was admitted');
  // a flood spread over many addresses, aimed at other teams: closes theirs (the namespace holding
  // the most), never the quiet team's older ones
  const { evicted: spread, add: addSpread } = setup(100, 16);
  addSpread('team-b', '10.0.0.9', 'b1');
  addSpread('team-b', '10.0.0.9', 'b2');
  for (let i = 0; i < 200; i++) addSpread(`ns-${i % 4}`, `10.1.${i >> 8}.${i & 255}`, `s${i}`);
  assert.equal(spread.length, 202 - 16);
  assert.ok(!spread.includes('b1') && !spread.includes('b2'), spread.slice(0, 5).join());
  assert.deepEqual(spread.slice(0, 2), ['s0', 's1'], 'the oldest of the namespace holding the most');
  const { evicted: none, add: addNone } = setup(100, 0);
  for (let i = 0; i < 500; i++) addNone(`ns-${i % 10}`, '10.0.0.1', `n${i}`);
  assert.deepEqual(none, [], '0: no total, each namespace within its limit');
});

test('one client address: IPv4 also written in IPv6; an IPv6 address whole (pods on one node share a /64)', () => {
  assert.equal(addressGroup('10.0.0.1'), '10.0.0.1');
  assert.equal(addressGroup('::ffff:10.0.0.1'), '10.0.0.1');
  assert.equal(addressGroup('::FFFF:10.0.0.1'), '10.0.0.1');
  assert.equal(addressGroup('64:ff9b::10.0.0.1'), '10.0.0.1');
  assert.equal(addressGroup('2001:db8:1:2::99'), '2001:db8:1:2::99');
  assert.notEqual(addressGroup('2001:db8:1:2::98'), addressGroup('2001:db8:1:2::99'));
  assert.equal(addressGroup('FE80::1%eth0'), 'fe80::1');
});

test('connections not admitted yet: with one each, the oldest is closed; other namespaces are apart', () => {
  const { evicted, add } = setup(2);
  add('team-a', '10.0.0.1', 'a1');
  add('team-b', '10.0.0.1', 'b1');
  add('team-a', '10.0.0.2', 'a2');
  add('team-b', '10.0.0.2', 'b2');
  assert.deepEqual(evicted, []);
  add('team-a', '10.0.0.3', 'a3');
  assert.deepEqual(evicted, ['a1']);
});

test('connections not admitted yet: one admitted or closed gives its place and its address\'s share back', () => {
  const { u, evicted, add } = setup(2);
  const a = add('team-a', '10.0.0.1', 'a');
  add('team-a', '10.0.0.1', 'b');
  u.remove('team-a', a);
  u.remove('team-a', a); // closed after it was admitted: counted once
  add('team-a', '10.0.0.2', 'c');
  assert.deepEqual(evicted, []);
  // 10.0.0.1 holds 1 (b), 10.0.0.2 holds 1 (c): a third from 10.0.0.2 closes c, not b
  add('team-a', '10.0.0.2', 'd');
  assert.deepEqual(evicted, ['c']);
});

test('connections not admitted yet: limit 0 closes none', () => {
  const { evicted, add } = setup(0);
  for (let i = 0; i < 100; i++) add('team-a', '10.0.0.1', `c${i}`);
  assert.deepEqual(evicted, []);
});

const nextTurn = () => new Promise((r) => setImmediate(r));

/** A TurnShare where another namespace's connection came, and counts for good (`aloneMs`
 * Infinity): no namespace is alone. */
function shared(perTurn: number, onError: (err: unknown) => void = (err) => { throw err; }): TurnShare {
  const s = new TurnShare(perTurn, onError, Infinity);
  s.arrived('team-z');
  return s;
}

/** A TurnShare as the listener uses it: `go` now, or once the namespace's turn comes (`shared`,
 * unless `aloneMs` is given). */
function turns(perTurn: number, aloneMs?: number) {
  const errors: unknown[] = [];
  const s = aloneMs === undefined ? shared(perTurn, (err) => errors.push(err)) : new TurnShare(perTurn, (err) => errors.push(err), aloneMs);
  const run = (ns: string, go: () => void) => {
    if (s.tryStart(ns)) {
      go();
    } else {
      s.wait(ns, () => { s.start(ns); go(); });
    }
  };
  return { s, run, errors };
}

test('requests per turn: a namespace beside another starts that many per turn of the event loop, in order', async () => {
  const { run } = turns(2);
  const ran: string[] = [];
  for (let i = 1; i <= 5; i++) run('team-a', () => ran.push(`a${i}`));
  assert.deepEqual(ran, ['a1', 'a2']);
  await nextTurn();
  assert.deepEqual(ran.slice(2), ['a3', 'a4']);
  run('team-a', () => ran.push('a6')); // behind the one still waiting
  assert.equal(ran.length, 4);
  await nextTurn();
  assert.deepEqual(ran.slice(4), ['a5', 'a6']);
  await nextTurn();
  run('team-a', () => ran.push('a7')); // nothing waiting, a new turn: at once
  assert.equal(ran.at(-1), 'a7');
});

/** Teams with 1,000 requests each waiting (`floods`), 2 more of theirs each turn, and teams with
 * none waiting starting `light[ns](turn)` between turns: what each flood started in each turn (in
 * order), and the light teams' requests that waited. */
async function beside(perTurn: number, turnsRun: number, light: Record<string, (turn: number) => number>, floods = ['team-a'], lightPiece?: number): Promise<{ a: number[]; perFlood: number[][]; lightWaited: number }> {
  const { s, run } = turns(perTurn);
  const ran = new Map(floods.map((f) => [f, [] as number[]]));
  const sent = new Map(floods.map((f) => [f, 0]));
  const send = (f: string) => {
    const i = sent.get(f)!;
    sent.set(f, i + 1);
    run(f, () => ran.get(f)!.push(i));
  };
  for (const f of floods) for (let i = 0; i < 1000; i++) send(f);
  const perFlood: number[][] = floods.map(() => []);
  let lightWaited = 0;
  for (let turn = 0; turn < turnsRun; turn++) {
    for (const [ns, starts] of Object.entries(light)) {
      for (let i = starts(turn); i > 0; i--) {
        if (s.tryStart(ns, lightPiece)) continue;
        lightWaited++;
        s.wait(ns, () => s.start(ns, lightPiece));
      }
    }
    const before = floods.map((f) => ran.get(f)!.length);
    for (const f of floods) for (let i = 0; i < 2; i++) send(f); // behind those waiting
    await nextTurn();
    floods.forEach((f, i) => perFlood[i]!.push(ran.get(f)!.length - before[i]!));
  }
  for (const [f, order] of ran) assert.ok(order.every((x, i) => x === i), `${f}'s requests started in order`);
  return { a: perFlood[0]!, perFlood, lightWaited };
}

test('requests per turn: a namespace alone (nothing of another\'s came in the last second) starts 4 times its share a turn; another\'s first request holds it to its share at once', async () => {
  const { run } = turns(4, TurnShare.aloneMs);
  const ran: string[] = [];
  for (let i = 0; i < 100; i++) run('team-a', () => ran.push('a'));
  assert.equal(ran.length, 16);
  await nextTurn();
  assert.equal(ran.length, 32, 'alone in the next turn too');
  run('team-b', () => ran.push('b1'));
  assert.equal(ran.at(-1), 'b1', 'the other namespace starts at once');
  await nextTurn();
  assert.equal(ran.filter((x) => x === 'a').length, 36, 'team-a back to its share (4) in the turn after');
  await nextTurn();
  assert.equal(ran.filter((x) => x === 'a').length, 40, 'and in the next: team-b came less than a second ago');
  // within a turn: another's start holds it at once
  const t = new TurnShare(2, (err) => { throw err; });
  assert.deepEqual(Array.from({ length: 5 }, () => t.tryStart('team-a')), Array(5).fill(true), 'alone: 8 a turn');
  assert.ok(t.tryStart('team-b'));
  assert.equal(t.tryStart('team-a'), false, 'past its share (2) once another has started');
  const u = new TurnShare(2, (err) => { throw err; });
  assert.deepEqual(Array.from({ length: 9 }, () => u.tryStart('team-a')), [...Array(8).fill(true), false], 'alone: 8 a turn, no more');
});

test('requests per turn: another namespace\'s connection or request that came (its handshake, headers and token check before any start) holds a namespace alone to its share at once', async () => {
  const { s, run } = turns(4, TurnShare.aloneMs);
  const ran: string[] = [];
  for (let i = 0; i < 10; i++) run('team-a', () => ran.push('a'));
  assert.equal(ran.length, 10, 'alone');
  s.arrived('team-b');
  for (let i = 0; i < 100; i++) run('team-a', () => ran.push('a'));
  assert.equal(ran.length, 10, 'held: it started past its share (4) in this turn');
  await nextTurn();
  assert.equal(ran.length, 14, 'its share in the next turn, team-b having started nothing');
  await nextTurn();
  assert.equal(ran.length, 18);
  // an arrival counts for `aloneMs` (here 50 ms), then team-a is alone again
  const { s: s2, run: run2 } = turns(4, 50);
  const ran2: string[] = [];
  s2.arrived('team-b');
  for (let i = 0; i < 6; i++) run2('team-a', () => ran2.push('a'));
  assert.equal(ran2.length, 4, 'held by team-b\'s arrival');
  await nextTurn();
  assert.equal(ran2.length, 6);
  await new Promise((r) => setTimeout(r, 100));
  for (let i = 0; i < 100; i++) run2('team-a', () => ran2.push('a'));
  await nextTurn();
  assert.equal(ran2.length, 6 + 4 + 16, 'team-b came 100 ms ago, nothing since: team-a alone again from the next turn');
});

test('requests per turn: alone again once nothing of the other namespace\'s came or started for `aloneMs`', async () => {
  const { s, run } = turns(4, 50);
  const ran: string[] = [];
  run('team-b', () => ran.push('b'));
  await nextTurn(); // team-b seen
  await new Promise((r) => setTimeout(r, 100));
  for (let i = 0; i < 100; i++) run('team-a', () => ran.push('a'));
  assert.equal(ran.length, 5, 'until a turn has run, team-b counts as seen: team-a starts its share (4)');
  await nextTurn();
  assert.equal(ran.length, 21, 'team-b started nothing for 50 ms: team-a alone again (16)');
  assert.ok(s.tryStart('team-b'), 'team-b starts at once');
});

test('requests per turn: another namespace starts at once, not behind one whose requests wait', async () => {
  const { run } = turns(4);
  const ran: string[] = [];
  for (let i = 1; i <= 40; i++) run('team-a', () => ran.push('a'));
  run('team-b', () => ran.push('b1'));
  assert.deepEqual(ran, ['a', 'a', 'a', 'a', 'b1']);
});

test('requests per turn: beside a team with few callers (none waiting, less than one a turn), a team with requests waiting starts one; alone again, its whole share', async () => {
  // team-b starts one every other turn for 40 turns, then none
  const { a, lightWaited } = await beside(4, 80, { 'team-b': (turn) => turn < 40 && turn % 2 === 0 ? 1 : 0 });
  assert.deepEqual(a.slice(0, 2), [4, 4], 'team-b\'s first one is not yet a rate');
  assert.deepEqual(a.slice(10, 40), Array(30).fill(1), `held to one while team-b starts ~0.5 a turn: ${a.join(' ')}`);
  assert.deepEqual(a.slice(60), Array(20).fill(4), `alone again: ${a.join(' ')}`);
  assert.equal(lightWaited, 0);
});

test('requests per turn: beside one starting 4, 2 or 1.25 a turn, about as many; a trickle holds no one back', async () => {
  const four = (await beside(4, 60, { 'team-b': () => 4 })).a;
  assert.deepEqual(four.slice(30), Array(30).fill(4), `beside 4 a turn: ${four.join(' ')}`);
  const middle = (await beside(4, 60, { 'team-b': () => 2 })).a;
  assert.deepEqual(middle.slice(30), Array(30).fill(2), `beside 2 a turn: ${middle.join(' ')}`);
  const little = (await beside(4, 60, { 'team-b': (turn) => turn % 4 === 0 ? 2 : 1 })).a; // 1.25 a turn: rounded, not up
  assert.deepEqual(little.slice(30), Array(30).fill(1), `beside 1.25 a turn: ${little.join(' ')}`);
  const trickle = (await beside(4, 60, { 'team-b': (turn) => turn % 8 === 0 ? 1 : 0 })).a;
  assert.deepEqual(trickle, Array(60).fill(4), `one start every 8 turns: ${trickle.join(' ')}`);
});

test('requests per turn: pieces of a body or session take starts but never make a team one with few callers: beside a trickle of them, a flood keeps its whole share', async () => {
  // the same starts as the team with few callers above, but pieces (a slow download, a chatty session)
  const { a, lightWaited } = await beside(4, 80, { 'team-b': (turn) => turn % 2 === 0 ? 1 : 0 }, ['team-a'], 100);
  assert.deepEqual(a, Array(80).fill(4), `beside team-b's pieces: ${a.join(' ')}`);
  assert.equal(lightWaited, 0);
  // and pieces are bounded like requests: 6 a turn past a share of 4 wait
  const { s } = turns(4);
  let waited = 0;
  for (let i = 0; i < 6; i++) if (!s.tryStart('team-b', 100)) waited++;
  assert.equal(waited, 2);
});

/** team-a with 1,000 pieces of `bytes` waiting (beside team-b's one request every other turn
 * when `few`): how many it started in each of 40 turns. */
async function pieceTurns(bytes: number, few: boolean): Promise<number[]> {
  const s = shared(4);
  let started = 0;
  const go = () => { s.start('team-a', bytes); started++; };
  for (let i = 0; i < 1000; i++) {
    if (s.tryStart('team-a', bytes)) started++;
    else s.wait('team-a', go);
  }
  const per: number[] = [];
  for (let turn = 0; turn < 40; turn++) {
    if (few && turn % 2 === 0) assert.ok(s.tryStart('team-b'), 'team-b never waits');
    const before = started;
    await nextTurn();
    per.push(started - before);
  }
  return per;
}

test('requests per turn: a piece costs a start per 16 KiB; what it costs past its namespace\'s share is paid from its next turns', async () => {
  // the whole share (4): four 16 KiB pieces a turn, or one of 64 KiB
  assert.deepEqual((await pieceTurns(16 << 10, false)).slice(1), Array(39).fill(4));
  assert.deepEqual((await pieceTurns(64 << 10, false)).slice(1), Array(39).fill(1));
  // held to one a turn beside a team with few callers: a 64 KiB piece every fourth turn
  assert.deepEqual((await pieceTurns(16 << 10, true)).slice(20), Array(20).fill(1));
  const big = (await pieceTurns(64 << 10, true)).slice(20);
  assert.equal(big.reduce((a, b) => a + b, 0), 5, `one in four turns: ${big.join(' ')}`);
  assert.ok(big.every((n) => n <= 1), big.join(' '));
  // what a piece owes is paid whether or not more wait: one of 1 MiB (64 starts) with a share of 4
  // leaves 60 owed, 15 turns; the namespace starts again in the turn after
  const s = shared(4);
  assert.ok(s.tryStart('team-a', 1 << 20));
  let turns = 0;
  while (!s.tryStart('team-a') && turns < 100) {
    // meanwhile another namespace starts its whole share every turn: what team-a owes is its own
    assert.deepEqual([1, 2, 3, 4, 5].map(() => s.tryStart('team-b')), [true, true, true, true, false], `turn ${turns}`);
    await nextTurn();
    turns++;
  }
  assert.equal(turns, 16);
  assert.ok(s.tryStart('team-b'), 'another namespace owes nothing');
});

test('requests per turn: a request whose one piece is long is charged what that costs past its start; past the share it is owed', async () => {
  const s = shared(4);
  assert.ok(s.tryStart('team-a'));
  s.charge('team-a', 1024); // a small answer: nothing more
  assert.ok(s.tryStart('team-a'));
  s.charge('team-a', 64 << 10); // three more starts: 5, one past the share of 4
  assert.equal(s.tryStart('team-a'), false);
  assert.ok(s.tryStart('team-b'), 'another namespace is not charged');
  await nextTurn(); // the one owed is paid first: three more
  assert.deepEqual([1, 2, 3, 4].map(() => s.tryStart('team-a')), [true, true, true, false]);
});

test('requests per turn: teams with requests waiting start their whole share beside each other, and are each held beside a team with few callers; that team never waits', async () => {
  const two = await beside(4, 40, {}, ['team-a', 'team-c']);
  for (const f of two.perFlood) assert.deepEqual(f, Array(40).fill(4), `two floods alone: ${two.perFlood.join(' | ')}`);
  const three = await beside(4, 40, { 'team-b': (turn) => turn % 2 === 0 ? 1 : 0 }, ['team-a', 'team-c']);
  for (const f of three.perFlood) assert.deepEqual(f.slice(10), Array(30).fill(1), `two floods beside team-b: ${three.perFlood.join(' | ')}`);
  assert.equal(three.lightWaited, 0);
  // a team with none waiting starts its whole share beside one with few callers: team-b's 4 a turn, beside team-c's 1
  const { s } = turns(4);
  let waited = 0;
  for (let turn = 0; turn < 30; turn++) {
    if (!s.tryStart('team-c')) waited++;
    for (let i = 0; i < 4; i++) if (!s.tryStart('team-b')) waited++;
    await nextTurn();
  }
  assert.equal(waited, 0);
});

test('requests per turn: a busier namespace with none waiting (the flood\'s own second namespace, say) does not lift the hold', async () => {
  const { a, lightWaited } = await beside(4, 40, { 'team-b': (turn) => turn % 2 === 0 ? 1 : 0, 'team-d': () => 4 });
  assert.deepEqual(a.slice(10), Array(30).fill(1), `held to team-b's, not team-d's: ${a.join(' ')}`);
  assert.equal(lightWaited, 0);
});

test('requests per turn: a request whose client left takes no place in its turn', async () => {
  const { s, run } = turns(2);
  const ran: string[] = [];
  run('team-a', () => ran.push('a1'));
  run('team-a', () => ran.push('a2'));
  for (let i = 0; i < 5; i++) s.wait('team-a', () => false); // their clients left
  for (let i = 3; i <= 6; i++) run('team-a', () => ran.push(`a${i}`));
  await nextTurn();
  assert.deepEqual(ran, ['a1', 'a2', 'a3', 'a4']);
  await nextTurn();
  assert.deepEqual(ran.slice(4), ['a5', 'a6']);
});

test('requests per turn: what one throws is reported and the others still run; one that waits again runs in a later turn', async () => {
  const { s, run, errors } = turns(1);
  const ran: string[] = [];
  run('team-a', () => ran.push('a1'));
  run('team-a', () => { throw new Error('boom'); });
  run('team-b', () => ran.push('b1'));
  run('team-b', () => { ran.push('b2'); s.wait('team-b', () => { ran.push('b3'); }); });
  await nextTurn();
  assert.deepEqual(ran, ['a1', 'b1', 'b2']);
  assert.equal((errors[0] as Error).message, 'boom');
  await nextTurn();
  assert.deepEqual(ran, ['a1', 'b1', 'b2', 'b3']);
});

test('requests per turn: 0 is no limit', async () => {
  const { run } = turns(0);
  const ran: number[] = [];
  for (let i = 0; i < 100; i++) run('team-a', () => ran.push(i));
  assert.equal(ran.length, 100);
});

test('requests per turn: a piece counted outside a turn (a drain\'s flush) owes only what is past its own namespace\'s share, not past the hold of namespaces with requests waiting', async () => {
  const s = shared(4);
  // team-b, one request a turn and none waiting: the hold is one a turn
  for (let turn = 0; turn < 20; turn++) {
    assert.ok(s.tryStart('team-b'));
    await nextTurn();
  }
  assert.ok(s.tryStart('team-b'));
  s.start('team-a', 64 << 10); // team-a has none waiting: its share is the bound, 4: nothing owed
  await nextTurn();
  assert.deepEqual([1, 2, 3, 4, 5].map(() => s.tryStart('team-a')), [true, true, true, true, false]);
});

test('requests per turn: starts charged for work without a piece (an answer\'s header lines) are owed, paid from the namespace\'s next turns', async () => {
  const { s, run } = turns(4);
  const ran: string[] = [];
  s.chargeStarts('team-a', 10); // 4 in this turn, 6 owed: paid by the next two turns
  s.chargeStarts('team-a', 0);
  for (let i = 0; i < 8; i++) run('team-a', () => ran.push('a'));
  run('team-b', () => ran.push('b'));
  assert.deepEqual(ran, ['b'], 'team-a has used its share; team-b starts at once');
  await nextTurn();
  assert.equal(ran.length, 1, 'the next turn pays 4 of what team-a owes');
  await nextTurn();
  assert.equal(ran.length, 3, 'then the last 2, and 2 of its requests');
  await nextTurn();
  assert.equal(ran.length, 7);
});

test('answers waiting for their clients: past a namespace\'s bound its longest waiting is cut; past the total, that of the namespace holding the most; a release gives the place back', () => {
  const paused = new PausedAnswers(2); // total 6
  const cut: string[] = [];
  const pause = (ns: string, id: string) => paused.pause(ns, () => cut.push(id));
  const a1 = pause('team-a', 'a1');
  pause('team-a', 'a2');
  pause('team-a', 'a3');
  assert.deepEqual(cut, ['a1'], 'team-a\'s own longest waiting');
  a1(); // (released after its cut: nothing)
  assert.equal(paused.waiting('team-a'), 2);
  pause('team-b', 'b1');
  pause('team-b', 'b2');
  const c1 = pause('team-c', 'c1');
  pause('team-c', 'c2');
  assert.deepEqual(cut, ['a1']);
  pause('team-d', 'd1'); // 7 of 6: team-a holds the most (first of the ties)
  assert.deepEqual(cut, ['a1', 'a2']);
  c1(); // a release makes room
  pause('team-d', 'd2');
  assert.deepEqual(cut, ['a1', 'a2']);
  assert.deepEqual(['team-a', 'team-b', 'team-c', 'team-d'].map((n) => paused.waiting(n)), [1, 2, 1, 2]);
});
