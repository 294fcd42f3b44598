import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:tls';
import { directHello, groupsFor, helloLength, listenerGroups } from '../../src/dataplane/client-hello.js';
import { captureHello } from '../support/client-hello.js';

/** A TLS handshake record holding `payload`. */
const record = (payload: Buffer, type = 22) => Buffer.concat([Buffer.from([type, 3, 1, payload.length >> 8, payload.length & 255]), payload]);
/** A ClientHello message with a body of `n` bytes. */
const hello = (n: number) => Buffer.concat([Buffer.from([1, n >> 16, (n >> 8) & 255, n & 255]), Buffer.alloc(n, 7)]);

test('client hello: whole once all of its records are in, whatever follows it', () => {
  const one = record(hello(300));
  assert.equal(helloLength(one), one.length);
  assert.equal(helloLength(Buffer.concat([one, Buffer.from([23, 3, 3, 0, 5])])), one.length, 'what follows is not the hello');
  for (const cut of [1, 4, 5, 8, one.length - 1]) assert.equal(helloLength(one.subarray(0, cut)), undefined, `cut at ${cut}`);
});

test('client hello: one spread over records (its header too) is whole only with the last of them', () => {
  const m = hello(500);
  const parts = [m.subarray(0, 2), m.subarray(2, 200), m.subarray(200)].map((p) => record(p));
  const all = Buffer.concat(parts);
  assert.equal(helloLength(parts[0]!), undefined, 'its header is not all here');
  assert.equal(helloLength(Buffer.concat(parts.slice(0, 2))), undefined);
  assert.equal(helloLength(all.subarray(0, all.length - 1)), undefined);
  assert.equal(helloLength(all), all.length);
});

test('client hello: bytes that are not a hello are handed on as they are (TLS refuses them)', () => {
  const http = Buffer.from('GET / HTTP/1.1\r\n');
  assert.equal(helloLength(http), http.length);
  const notHello = record(Buffer.from([2, 0, 0, 1, 0]));
  assert.equal(helloLength(notHello), notHello.length);
  const first = record(hello(10).subarray(0, 8));
  const alert = record(Buffer.from([2, 40]), 21);
  assert.equal(helloLength(Buffer.concat([first, alert])), first.length, 'a record of another type ends it');
});

test('direct hello: TLS 1.3 with a share the listener takes; not TLS 1.2, another share, or bytes it cannot read', async () => {
  assert.equal(directHello(await captureHello()), true, 'Node.js: X25519MLKEM768 and X25519 shares');
  assert.equal(directHello(await captureHello({ ecdhCurve: 'P-256' })), true);
  assert.equal(directHello(await captureHello({ maxVersion: 'TLSv1.2' })), false);
  assert.equal(directHello(await captureHello({ ecdhCurve: 'P-384:P-256' })), false, 'a share for P-384 only');
  const h = await captureHello();
  assert.equal(directHello(h.subarray(0, 60)), false, 'cut short');
  assert.equal(directHello(Buffer.from('GET / HTTP/1.1\r\n\r\n')), false);
  const other = Buffer.from(h);
  other[5] = 2; // the same bytes as another handshake message
  assert.equal(directHello(other), false);
});

test('key exchange groups: with the hybrid one from OpenSSL 3.5, without it before; this Node.js takes its own', () => {
  assert.deepEqual(groupsFor('3.0.19'), { curves: 'X25519:P-256', codes: new Set([0x1d, 0x17]) });
  assert.deepEqual(groupsFor('3.5.8'), { curves: 'X25519MLKEM768:X25519:P-256', codes: new Set([0x11ec, 0x1d, 0x17]) });
  assert.equal(groupsFor('4.0.0').codes.has(0x11ec), true);
  assert.doesNotThrow(() => createServer({ ecdhCurve: listenerGroups }));
});
