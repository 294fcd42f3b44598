// Client certificates: the CA reference resolved by translate, the subject read as the apiserver's
// x509 authenticator reads it (prefixed), and each connection's verdict (real certificates made
// with openssl; the TLS socket is a stand-in that reports what a handshake found).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { applyDefaults } from '../../src/api/defaults.js';
import { certificateIdentity, ClientCertAuthenticator, maxSignatureChecks } from '../../src/auth/client-cert.js';
import { listenerTLS, translate } from '../../src/translate/translate.js';
import { certificateBlocks, maxBundleCertificates, maxKeyBits, parseBundle, textKey } from '../../src/api/pem.js';
import { makeCA, makeLeaf, makeOddCA, type CertPair } from '../support/certs.js';

const dir = mkdtempSync(join(tmpdir(), 'agw-client-cert-'));
const ca = makeCA(dir, 'ca');
const otherCA = makeCA(dir, 'other-ca');
const server = makeLeaf(dir, ca, 'server', { cn: 'gw', dnsNames: ['localhost'] });
const alice = makeLeaf(dir, ca, 'alice', { cn: 'alice', orgs: ['devs', 'ops', 'devs'], client: true });
const b64 = (s: string) => Buffer.from(s).toString('base64');

function gateway(clientCA: { kind: 'ConfigMap' | 'Secret'; name: string; key: string; mode?: 'Optional' | 'Required' }) {
  return applyDefaults({
    apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: 'people', namespace: 'team-a', generation: 1 },
    spec: {
      listener: { tls: { secretName: 'tls', clientCA } }, authentication: { audiences: ['gw'] },
      routes: [{ name: 'kube-api', pathPrefix: '/', apiserver: {} }],
    },
  });
}
const secrets = { 'team-a/tls': { type: 'kubernetes.io/tls', data: { 'tls.crt': b64(server.cert), 'tls.key': b64(server.key) } } };

/** A CA certificate with an RSA-8200 key (openssl req -x509 -newkey rsa:8200; its key was not kept). */
const rsa8200 = readFileSync(new URL('../../../test/fixtures/rsa-8200-ca.crt', import.meta.url), 'utf8');

test('translate: a team client CA becomes the plan with the team:NS: prefix; default mode Optional', () => {
  const t = translate(gateway({ kind: 'ConfigMap', name: 'cas', key: 'ca.crt' }), {
    port: { port: 1 }, secrets, caBundles: { 'ConfigMap/team-a/cas': { 'ca.crt': ca.cert } },
  });
  assert.deepEqual(t.plan?.tls?.clientCA, { ref: 'ConfigMap team-a/cas key ca.crt', pem: ca.cert, required: false, prefix: 'team:team-a:', notAfter: new X509Certificate(ca.cert).validToDate.getTime() });
  const req = translate(gateway({ kind: 'Secret', name: 'cas', key: 'ca.crt', mode: 'Required' }), {
    port: { port: 1 }, secrets, caBundles: { 'Secret/team-a/cas': { 'ca.crt': ca.cert + otherCA.cert } },
  });
  assert.equal(req.plan?.tls?.clientCA?.required, true);
});

test('translate: a listener Secret is decoded and checked once per version of it: every plan holds the same pair', () => {
  const first = listenerTLS('team-a', 'tls', secrets);
  assert.ok('cert' in first, JSON.stringify(first));
  assert.equal(listenerTLS('team-a', 'tls', secrets), first, 'decoded again for the same object');
  // a new version (a new object as cached, the same data) is read again
  const again = listenerTLS('team-a', 'tls', { 'team-a/tls': { ...secrets['team-a/tls'] } });
  assert.notEqual(again, first);
  assert.deepEqual(again, first);
});

test('translate: a listener key over 4096 RSA bits or under 2048, and a CA bundle over 256 certificates are refused; a bundle is parsed once', () => {
  // a handshake signs with the key on the shared event loop (RSA-8192: ~40 ms each); the size is
  // checked before the key is matched to the certificate
  /** The listener with this certificate (chain) and key: its plan and ResolvedRefs message. */
  const withPair = (crt: string, key: string) => {
    const t = translate(gateway({ kind: 'ConfigMap', name: 'cas', key: 'ca.crt' }), {
      port: { port: 1 }, secrets: { 'team-a/tls': { type: 'kubernetes.io/tls', data: { 'tls.crt': b64(crt), 'tls.key': b64(key) } } },
      caBundles: { 'ConfigMap/team-a/cas': { 'ca.crt': ca.cert } },
    });
    return { plan: t.plan, message: t.conditions.find((c) => c.type === 'ResolvedRefs')!.message };
  };
  const rsa = (bits: number) => generateKeyPairSync('rsa', { modulusLength: bits }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  const t = withPair(server.cert, rsa(4160));
  assert.equal(t.plan, null);
  assert.match(t.message, /tls\.key is a 4160-bit rsa key; at most 4096 bits/);
  // one OpenSSL refuses (after the listener's filters were compiled: a reconcile that throws, and
  // no condition) is refused here, with one
  const s = withPair(server.cert, rsa(1024));
  assert.equal(s.plan, null);
  assert.match(s.message, /tls\.key is a 1024-bit rsa key; at least 2048 bits/);
  // a chain OpenSSL refuses (an intermediate of 1024 bits) is said here too
  const weak = makeOddCA(dir, 'weak-intermediate', ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024']);
  const under = makeLeaf(dir, weak, 'under-weak', { cn: 'gw', dnsNames: ['localhost'] });
  const chain = withPair(under.cert + weak.cert, under.key);
  assert.equal(chain.plan, null);
  assert.match(chain.message, /OpenSSL refuses tls\.crt\/tls\.key: .*ca key too small/);
  const many = ca.cert.repeat(maxBundleCertificates + 1);
  const over = translate(gateway({ kind: 'ConfigMap', name: 'cas', key: 'ca.crt' }), { port: { port: 1 }, secrets, caBundles: { 'ConfigMap/team-a/cas': { 'ca.crt': many } } });
  assert.match(over.conditions.find((c) => c.type === 'ResolvedRefs')!.message, /it holds more than the 256 certificates a bundle may hold/);
  const full = ca.cert.repeat(maxBundleCertificates);
  const first = parseBundle('team-a', full);
  assert.ok(!('problem' in first) && first.certificates.length === maxBundleCertificates);
  assert.equal(parseBundle('team-a', `${full}`), first, 'the same bundle again: not parsed again');
  // kept by use, not by age: a bundle asked for on every reconcile stays while 100 others come and go
  for (let i = 0; i < 100; i++) {
    parseBundle('team-a', `${ca.cert}\n# ${i}`);
    assert.equal(parseBundle('team-a', full), first);
  }
  // and another team's bundles cannot push it out: team-b's 100 variants leave team-a's parsed
  for (let i = 0; i < 100; i++) parseBundle('team-b', `${ca.cert}\n# b${i}`);
  assert.equal(parseBundle('team-a', full), first, "team-b's bundles pushed out team-a's");
});

/** A listener chain as checkPair counts it: its blocks, and one more for a certificate never ended. */
function chainSize(text: string): { certificates: number; bytes: number; pem: string } {
  const c = certificateBlocks(text);
  return { certificates: c.blocks.length + (c.unended ? 1 : 0), bytes: c.bytes, pem: c.blocks.join('') };
}

test('translate: a listener tls.crt of more than 10 certificates or 32 KiB of them is refused: each handshake sends it, each connection in its handshake holds it', () => {
  const withChain = (crt: string) => {
    const t = translate(gateway(undefined as never), { port: { port: 1 }, secrets: { 'team-a/tls': { type: 'kubernetes.io/tls', data: { 'tls.crt': b64(crt), 'tls.key': b64(server.key) } } } });
    return t.plan ? 'served' : t.conditions.find((c) => c.type === 'ResolvedRefs')!.message;
  };
  // the leaf and 9 more (a chain with its root, padded): served; one more certificate: refused
  assert.equal(withChain(server.cert + ca.cert.repeat(9)), 'served');
  assert.match(withChain(server.cert + ca.cert.repeat(10)), /^Secret team-a\/tls: tls\.crt holds 11 certificates; at most 10 \(each TLS handshake sends them\)/);
  // also under the old labels OpenSSL reads and sends
  const old = ca.cert.replace(/CERTIFICATE/g, 'X509 CERTIFICATE');
  assert.equal(chainSize(server.cert + old.repeat(3) + ca.cert.replace(/CERTIFICATE/g, 'TRUSTED CERTIFICATE')).certificates, 5);
  assert.match(withChain(server.cert + old.repeat(10)), /holds 11 certificates/);
  // text beside them (openssl x509 -text) is not counted; their DER bytes are
  assert.equal(withChain(`${'# '.repeat(20_000)}\n${server.cert}${'Certificate:\n    Data: ...\n'.repeat(2_000)}${ca.cert}`), 'served');
  const der = (pem: string) => new X509Certificate(pem).raw.length;
  const two = chainSize(server.cert + ca.cert);
  assert.deepEqual([two.certificates, two.bytes], [2, der(server.cert) + der(ca.cert)]);
  // what is served is those blocks written anew: the same certificates
  assert.deepEqual(certificateBlocks(two.pem).blocks.map((b) => new X509Certificate(b).raw.length), [der(server.cert), der(ca.cert)]);
  assert.ok(chainSize(server.cert + ca.cert).bytes < 2 * 1024);
  // a certificate with 400 long names: 2 of them are over 32 KiB
  const big = makeLeaf(dir, ca, 'many-names', { cn: 'gw', dnsNames: Array.from({ length: 400 }, (_, i) => `${'n'.repeat(40)}${i}.example`) });
  assert.ok(der(big.cert) > 16 * 1024 && der(big.cert) < 32 * 1024, String(der(big.cert)));
  assert.equal(withChain(server.cert + big.cert), 'served');
  assert.match(withChain(server.cert + big.cert + big.cert), /^Secret team-a\/tls: tls\.crt's certificates are \d+ KiB; at most 32 KiB/);
  // BEGIN and END count only where a line begins, as OpenSSL reads them (a review: a comment line
  // holding a BEGIN without END stopped the count; a fake block around the certificates hid them)
  const chain41 = server.cert + ca.cert.repeat(40);
  assert.equal(chainSize(chain41).certificates, 41);
  assert.equal(chainSize(`#-----BEGIN X-----\n${chain41}`).certificates, 41);
  assert.equal(chainSize(`# -----BEGIN X-----\n${chain41}# -----END X-----\n`).certificates, 41);
  assert.match(withChain(`#-----BEGIN X-----\n${chain41}`), /holds 41 certificates/);
  // a block never ended counts the rest of the text
  const open = chainSize(`${server.cert}-----BEGIN X-----\n${'A'.repeat(40_000)}`);
  assert.deepEqual([open.certificates, open.bytes], [1, der(server.cert) + 18 + 40_000]);
  assert.match(withChain(`${server.cert}-----BEGIN X-----\n${'A'.repeat(40_000)}`), /at most 32 KiB/);
  // what OpenSSL's own reading would find beside them (after a BOM, past 254 bytes of a line: a
  // review's 13 certificates counted as 1, 201 sent) is not served: the listener serves the blocks
  // counted, written anew
  const served = (crt: string) => {
    const t = translate(gateway(undefined as never), { port: { port: 1 }, secrets: { 'team-a/tls': { type: 'kubernetes.io/tls', data: { 'tls.crt': b64(crt), 'tls.key': b64(server.key) } } } });
    return t.plan?.tls?.cert;
  };
  for (const hidden of [server.cert + `\uFEFF${ca.cert}`.repeat(12), server.cert + `${'#'.repeat(254)}${ca.cert}`.repeat(12), server.cert + `${'#'.repeat(508)}${ca.cert}`.repeat(12)]) {
    const cert = served(hidden);
    assert.ok(cert, 'served');
    assert.equal(chainSize(hidden).certificates, 1);
    assert.equal(cert.split('-----BEGIN ').length - 1, 1, 'only the certificate counted is served');
    assert.equal(cert, chainSize(server.cert).pem);
  }
  // `=`s after a `-` (where OpenSSL stops decoding) no longer lower the count (a review: 58 KiB of
  // certificates counted as 32,752 bytes); nor do they reach what is served
  const padded2 = server.cert + big.cert.replace('\n-----END CERTIFICATE-----', `-${'='.repeat(60_000)}\n-----END CERTIFICATE-----`) + big.cert;
  assert.ok(chainSize(padded2).bytes >= der(server.cert) + 2 * der(big.cert), String(chainSize(padded2).bytes));
  assert.match(withChain(padded2), /at most 32 KiB/);
  assert.equal(chainSize(padded2).pem, chainSize(server.cert + big.cert + big.cert).pem);
  // a byte-order mark at the start (some editors write one) is skipped, as OpenSSL skips it
  assert.equal(withChain(`\uFEFF${server.cert}${ca.cert}`), 'served');
  // and the text as a whole is bounded whatever it holds
  assert.match(withChain(`${'#'.repeat(256 * 1024)}\n${server.cert}`), /tls\.crt is 257 KiB of text; at most 256 KiB/);
});

test('translate: a listener key is judged as a CA key: an RSA exponent over 2^31-1 and an EC key on another curve are refused', () => {
  // a huge exponent makes each signature cost more than the share charges (it is measured per key, but every
  // handshake of the team's then waits longer for nothing a client needs); no TLS client takes the others
  const odd = (name: string, args: string[]) => {
    const k = makeOddCA(dir, name, args);
    const t = translate(gateway(undefined as never), { port: { port: 1 }, secrets: { 'team-a/tls': { type: 'kubernetes.io/tls', data: { 'tls.crt': b64(k.cert), 'tls.key': b64(k.key) } } } });
    return t.plan ? 'served' : t.conditions.find((c) => c.type === 'ResolvedRefs')!.message;
  };
  assert.match(odd('listener-e', ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-pkeyopt', 'rsa_keygen_pubexp:4294967297']), /tls\.key has an RSA public exponent over 2\^31-1/);
  assert.match(odd('listener-k1', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:secp256k1']), /tls\.key has an EC key on the curve secp256k1; P-256, P-384 or P-521 only/);
  assert.equal(odd('listener-rsa', ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048']), 'served');
  assert.equal(odd('listener-ed', ['-algorithm', 'ED25519']), 'served');
  assert.equal(odd('listener-p256', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256']), 'served');
  assert.equal(odd('listener-p384', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384']), 'served');
});

// One pass: 2 MiB of BEGIN lines without END took the lazy pattern this replaced ~78 s on this
// machine (it grew with the square of the text; 512 KiB, a gateway's bundles' bound, ~4.7 s on the
// event loop every team shares). Checked as a ratio to an anchor from the same run (scanning the
// text once for a string it lacks), not as a time: a pass costs a few anchors, the old way ~10^4.
test('certificateBlocks: BEGIN to its END where lines begin, at most max, in one pass: a text of BEGIN lines without END holds none', () => {
  const pem = ca.cert;
  assert.deepEqual(certificateBlocks(`junk\n${pem}between\n${pem}`, 10).blocks.map((b) => new X509Certificate(b).subject), [new X509Certificate(pem).subject, new X509Certificate(pem).subject]);
  assert.equal(certificateBlocks(pem.repeat(5), 3).blocks.length, 3);
  assert.deepEqual(certificateBlocks('-----BEGIN CERTIFICATE----------END CERTIFICATE-----', 5).blocks, [], 'END not where a line begins: no block');
  const hostile = '-----BEGIN CERTIFICATE-----\n'.repeat(512 * 1024 / 28);
  const best = (f: () => unknown) => Math.min(...Array.from({ length: 5 }, () => { const t = performance.now(); f(); return performance.now() - t; }));
  const anchor = best(() => hostile.indexOf('-----END CERTIFICATE-----'));
  assert.deepEqual(certificateBlocks(hostile, maxBundleCertificates + 1).blocks, []);
  // (parseBundle, what a reconcile calls: each text its own, as a parsed one is remembered)
  let n = 0;
  const scan = best(() => assert.deepEqual(parseBundle('team-a', `${hostile}${n++}`), { problem: 'no PEM certificate in it' }));
  assert.ok(scan < 100 * anchor + 5, `one pass: ${scan.toFixed(2)} ms against ${anchor.toFixed(2)} ms for one scan of the text`);
});

// OpenSSL trusts what it reads in a bundle's text: blocks under the old labels too (and after a
// byte-order mark, past 254 bytes of a line). Given the text, a bundle counted and checked as one
// certificate had OpenSSL trust a second one whose key was never checked.
test('CA bundles: the old labels are counted and checked too; what is trusted is the blocks checked, written anew', async () => {
  const other = makeCA(dir, 'second-root');
  const old = other.cert.replace(/CERTIFICATE/g, 'X509 CERTIFICATE');
  const both = parseBundle('team-a', ca.cert + old);
  assert.ok(!('problem' in both));
  assert.deepEqual(both.certificates.map((c) => c.subject), [new X509Certificate(ca.cert).subject, new X509Certificate(other.cert).subject]);
  // the old label's key is judged as any other's
  const big = rsa8200.replace(/CERTIFICATE/g, 'X509 CERTIFICATE');
  assert.deepEqual(parseBundle('team-a', ca.cert + big), { problem: `certificate 2 has a 8200-bit key, more than the ${maxKeyBits} bits a CA key may have` });
  // and counted: 256 and one more under the old label are too many
  assert.match((parseBundle('team-a', ca.cert.repeat(maxBundleCertificates) + old) as { problem: string }).problem, /more than the 256 certificates/);
  // what a route's backend is trusted with is the blocks counted, not the text: comments, a
  // byte-order mark before a block and a long line before one are gone
  const hidden = `# comment\n${ca.cert}\uFEFF${other.cert}${'#'.repeat(300)}${other.cert}`;
  const parsed = parseBundle('team-a', hidden);
  assert.ok(!('problem' in parsed));
  const fresh = parseBundle('team-a', `# a comment\n${makeCA(dir, 'fresh-root').cert}`);
  assert.ok(!('problem' in fresh));
  assert.equal(parseBundle('team-a', fresh.pem), fresh, 'the blocks written anew: the same, not parsed again');
  assert.equal(parsed.certificates.length, 1);
  assert.equal(parsed.pem, certificateBlocks(ca.cert).blocks[0]);
  const gw = applyDefaults({
    apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: 'svc', namespace: 'team-a', generation: 1 },
    spec: { authentication: { audiences: ['gw'] }, routes: [{ name: 'w', pathPrefix: '/', service: { name: 'w', port: 443, scheme: 'https' as const, caRef: { kind: 'ConfigMap' as const, name: 'cas', key: 'ca.crt' } } }] },
  });
  const t = translate(gw, { port: { port: 1 }, services: { 'team-a/w': { spec: { ports: [{ port: 443 }] } } }, caBundles: { 'ConfigMap/team-a/cas': { 'ca.crt': hidden } } });
  const target = t.plan?.routes[0]?.target;
  assert.equal(target?.kind === 'service' && target.ca, parsed.pem);
  // and a listener's client CA
  const listener = translate(gateway({ kind: 'ConfigMap', name: 'cas', key: 'ca.crt' }), { port: { port: 1 }, secrets, caBundles: { 'ConfigMap/team-a/cas': { 'ca.crt': hidden } } });
  assert.equal(listener.plan?.tls?.clientCA?.pem, parsed.pem);
});

test('translate: a gateway\'s distinct CA bundles together may hold 512 KiB; a bundle named by many routes counts once', () => {
  // 200 KiB each: one certificate and a comment (text outside the PEM blocks is allowed)
  const padded = (c: string) => `${c.repeat(200 * 1024 - ca.cert.length)}\n${ca.cert}`;
  const https = (name: string, cm: string) => ({ name, pathPrefix: `/${name}`, service: { name, port: 443, scheme: 'https' as const, caRef: { kind: 'ConfigMap' as const, name: cm, key: 'ca.crt' } } });
  const gw = (routes: ReturnType<typeof https>[]) => applyDefaults({
    apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: 'svc', namespace: 'team-a', generation: 1 },
    spec: { authentication: { audiences: ['gw'] }, routes },
  });
  const snap = {
    port: { port: 1 },
    services: Object.fromEntries(['w1', 'w2', 'w3', 'w4'].map((n) => [`team-a/${n}`, { spec: { ports: [{ port: 443 }] } }])),
    caBundles: Object.fromEntries(['a', 'b', 'c'].map((c) => [`ConfigMap/team-a/${c}`, { 'ca.crt': padded(c) }])),
  };
  const problems = (t: ReturnType<typeof translate>) => t.conditions.find((c) => c.type === 'ResolvedRefs')!.message;
  // a and b: 400 KiB; c would make 600
  const three = translate(gw([https('w1', 'a'), https('w2', 'b'), https('w3', 'c')]), snap);
  assert.match(problems(three), /route w3: ConfigMap team-a\/c key ca\.crt: the gateway's distinct CA bundles together are over 512 KiB \(60[01] KiB with this one\)/);
  assert.doesNotMatch(problems(three), /route w[12]: ConfigMap/);
  // the same bundle for every route: 200 KiB
  const same = translate(gw([https('w1', 'a'), https('w2', 'a'), https('w3', 'a'), https('w4', 'a')]), snap);
  assert.doesNotMatch(problems(same), /512 KiB/);
  // counted in the spec's order, whatever the cluster holds: w1's Service gone changes nothing
  const { 'team-a/w1': _gone, ...fewer } = snap.services;
  const missing = translate(gw([https('w1', 'a'), https('w2', 'b'), https('w3', 'c')]), { ...snap, services: fewer });
  assert.match(problems(missing), /route w3: ConfigMap team-a\/c key ca\.crt: the gateway's distinct CA bundles together are over 512 KiB/);
  assert.doesNotMatch(problems(missing), /route w2: ConfigMap/);
  // the listener's client CA is counted first: a route's bundle never costs the whole listener
  const withCA = applyDefaults({ ...gw([https('w1', 'a'), https('w2', 'b'), https('w3', 'c')]), spec: { ...gw([https('w1', 'a'), https('w2', 'b'), https('w3', 'c')]).spec,
    listener: { tls: { secretName: 'tls', clientCA: { kind: 'ConfigMap', name: 'c', key: 'ca.crt' } } } } });
  const listener = translate(withCA, { ...snap, secrets });
  assert.ok(listener.plan?.tls?.clientCA, problems(listener));
  assert.match(problems(listener), /route w2: ConfigMap team-a\/b key ca\.crt: the gateway's distinct CA bundles together are over 512 KiB/);
  assert.doesNotMatch(problems(listener), /route w[13]: ConfigMap/);
});

test('translate: a missing or unreadable client CA is InvalidCertificateRef and no listener', () => {
  const cases: [Record<string, Record<string, string>>, RegExp][] = [
    [{}, /client CA ConfigMap team-a\/cas key ca.crt: not found \(the object must exist and be labelled access-gateway.io\/ca-bundle=true\)/],
    [{ 'ConfigMap/team-a/cas': { 'other.crt': ca.cert } }, /client CA ConfigMap team-a\/cas key ca.crt: the object is there but has no key ca.crt;/],
    [{ 'ConfigMap/team-a/cas': {} }, /: the object is there but has no key ca.crt;/],
    [{ 'ConfigMap/team-a/cas': { 'ca.crt': 'hello' } }, /client CA ConfigMap team-a\/cas key ca.crt: no PEM certificate in it/],
    [{ 'ConfigMap/team-a/cas': { 'ca.crt': '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----' } }, /not a valid PEM certificate/],
  ];
  for (const [caBundles, why] of cases) {
    const t = translate(gateway({ kind: 'ConfigMap', name: 'cas', key: 'ca.crt' }), { port: { port: 1 }, secrets, caBundles });
    assert.equal(t.plan, null);
    const resolved = t.conditions.find((c) => c.type === 'ResolvedRefs')!;
    assert.equal(resolved.status, 'False');
    assert.equal(resolved.reason, 'InvalidCertificateRef');
    assert.match(resolved.message, why);
  }
  // a key named as an object's inherited function is a key the object lacks, not that function
  for (const key of ['constructor', 'toString', '__proto__']) {
    const t = translate(gateway({ kind: 'ConfigMap', name: 'cas', key }), { port: { port: 1 }, secrets, caBundles: { 'ConfigMap/team-a/cas': { 'ca.crt': ca.cert } } });
    assert.match(t.conditions.find((c) => c.type === 'ResolvedRefs')!.message, new RegExp(`client CA ConfigMap team-a/cas key ${key}: the object is there but has no key ${key};`));
  }
});

test('translate: a route\'s caRef key named as an object\'s inherited function is a key the bundle lacks', () => {
  for (const key of ['constructor', 'toString', '__proto__']) {
    const gw = applyDefaults({
      apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: 'svc', namespace: 'team-a', generation: 1 },
      spec: { authentication: { audiences: ['gw'] }, routes: [{ name: 'w', pathPrefix: '/', service: { name: 'w', port: 443, scheme: 'https' as const, caRef: { kind: 'ConfigMap' as const, name: 'cas', key } } }] },
    });
    const t = translate(gw, { port: { port: 1 }, services: { 'team-a/w': { spec: { ports: [{ port: 443 }] } } }, caBundles: { 'ConfigMap/team-a/cas': { 'ca.crt': ca.cert } } });
    const resolved = t.conditions.find((c) => c.type === 'ResolvedRefs')!;
    assert.equal(resolved.reason, 'InvalidCertificateRef');
    assert.match(resolved.message, new RegExp(`route w: ConfigMap team-a/cas key ${key}: the object is there but has no key ${key}$`));
  }
  // a route naming an object that is not there (or not labelled), or a key holding no PEM, says so
  const gw = (key: string) => applyDefaults({
    apiVersion: 'access-gateway.io/v1alpha1', kind: 'AccessGateway', metadata: { name: 'svc', namespace: 'team-a', generation: 1 },
    spec: { authentication: { audiences: ['gw'] }, routes: [{ name: 'w', pathPrefix: '/', service: { name: 'w', port: 443, scheme: 'https' as const, caRef: { kind: 'ConfigMap' as const, name: 'cas', key } } }] },
  });
  const message = (caBundles: Record<string, Record<string, string>>) => translate(gw('ca.crt'), { port: { port: 1 }, services: { 'team-a/w': { spec: { ports: [{ port: 443 }] } } }, caBundles })
    .conditions.find((c) => c.type === 'ResolvedRefs')!.message;
  assert.match(message({}), /route w: ConfigMap team-a\/cas key ca.crt: not found \(the object must exist and be labelled access-gateway.io\/ca-bundle=true\)$/);
  assert.match(message({ 'ConfigMap/team-a/cas': { 'ca.crt': 'hello' } }), /route w: ConfigMap team-a\/cas key ca.crt: no PEM certificate in it$/);
  assert.match(message({ 'ConfigMap/team-a/cas': { 'ca.crt': '' } }), /route w: ConfigMap team-a\/cas key ca.crt: no PEM certificate in it$/);
});

test('certificateIdentity: CN and each O, prefixed, groups once; subjects it cannot forward are refused', () => {
  assert.deepEqual(certificateIdentity({ CN: 'system:admin', O: ['system:masters', 'devs', 'devs'] } as never, 'team:a:'),
    { username: 'team:a:system:admin', uid: '', groups: ['team:a:system:masters', 'team:a:devs'], extra: {}, viaCertificate: true });
  assert.deepEqual(certificateIdentity({ CN: 'bob', O: 'ops' } as never, 'team:a:').groups, ['team:a:ops']);
  assert.deepEqual(certificateIdentity({ CN: 'bob' } as never, 'team:a:').groups, []);
  for (const subject of [{}, { CN: ['a', 'b'] }, { CN: '' }, { CN: 'bob\r\nImpersonate-User: x' }, { CN: 'bob', O: ['ok', 'é'] },
    // a backend splitting X-Remote-Group on commas would read another team's group; the apiserver trims spaces
    { CN: 'bob', O: 'x,team:other:admins' }, { CN: ' bob' }, { CN: 'bob', O: 'ops ' },
    { CN: 'x'.repeat(257) }, { CN: 'bob', O: Array.from({ length: 33 }, (_, i) => `g${i}`) }]) {
    assert.throws(() => certificateIdentity(subject as never, 'team:a:'), { name: 'UnauthenticatedError' }, JSON.stringify(subject).slice(0, 60));
  }
});

/** What a TLS server socket reports after its handshake. */
function socket(cert: CertPair | null, authorized: boolean, chain: CertPair[] = []): TLSSocket {
  const peer = (c: CertPair, rest: CertPair[]): Record<string, unknown> => {
    const x = new X509Certificate(c.cert);
    // as node:tls reports it: a field that occurs more than once is an array
    const subject: Record<string, string | string[]> = {};
    for (const [k, v] of x.subject.split('\n').map((l) => l.split('=') as [string, string])) {
      const had = subject[k];
      subject[k] = had === undefined ? v : [...[had].flat(), v];
    }
    return { raw: x.raw, subject, ...(rest.length ? { issuerCertificate: peer(rest[0]!, rest.slice(1)) } : {}) };
  };
  return {
    authorized, authorizationError: authorized ? null : 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', // node:tls gives OpenSSL's code
    getPeerCertificate: () => (cert ? peer(cert, chain) : {}),
  } as unknown as TLSSocket;
}

test('identify: verified, missing and refused certificates, by mode and by whether a token was sent', () => {
  const plan = { ref: 'ConfigMap team-a/cas key ca.crt', pem: ca.cert, required: false, prefix: 'team:team-a:', notAfter: 0 };
  const optional = new ClientCertAuthenticator(plan, 'team-a');
  const required = new ClientCertAuthenticator({ ...plan, required: true }, 'team-a');
  const ok = socket(alice, true);
  const id = optional.identify(ok, false)!;
  assert.equal(id.username, 'team:team-a:alice');
  assert.deepEqual(id.groups, ['team:team-a:devs', 'team:team-a:ops']);
  assert.equal(optional.identify(ok, true), id, 'one identity per connection (the access memo keys on it)');
  assert.equal(optional.identify(socket(null, false), true), null);
  assert.equal(optional.identify(socket(null, false), false), null, 'no certificate: the bearer step answers');
  assert.throws(() => required.identify(socket(null, false), true), /gateway requires a client certificate signed by its client CA \(spec.listener.tls.clientCA\)/);
  const refused = socket(alice, false);
  assert.equal(optional.identify(refused, true), null, 'a token beside an unverified certificate decides');
  assert.throws(() => optional.identify(refused, false), /client certificate refused: UNABLE_TO_GET_ISSUER_CERT_LOCALLY/);
  assert.throws(() => required.identify(refused, true), /client certificate refused/);
});

test('identify: an expired certificate on an open connection is refused; so is one the current bundle did not sign', () => {
  const plan = { ref: 'ConfigMap team-a/cas key ca.crt', pem: ca.cert, required: false, prefix: 'team:team-a:', notAfter: 0 };
  const later = Date.now() + 3 * 86_400_000; // the test certificates live 2 days
  const sock = socket(alice, true);
  assert.ok(new ClientCertAuthenticator(plan, 'team-a').identify(sock, false));
  assert.throws(() => new ClientCertAuthenticator(plan, 'team-a', () => later).identify(sock, false), /client certificate refused: it has expired/);
  // the bundle was rotated after the handshake: checked against the new one
  const rotated = new ClientCertAuthenticator({ ...plan, pem: otherCA.cert }, 'team-a');
  assert.throws(() => rotated.identify(sock, false), /not signed by the current client CA/);
  const both = new ClientCertAuthenticator({ ...plan, pem: otherCA.cert + ca.cert }, 'team-a');
  assert.equal(both.identify(sock, false)?.username, 'team:team-a:alice');
  // through an intermediate the client sent (root -> intermediate -> leaf)
  const root = makeCA(dir, 'root');
  const inter = makeLeaf(dir, root, 'intermediate', { cn: 'intermediate', intermediate: true });
  const carol = makeLeaf(dir, inter, 'carol', { cn: 'carol', client: true });
  const chained = socket(carol, true, [inter, root]);
  assert.throws(() => rotated.identify(chained, false), /not signed by the current client CA/);
  assert.equal(new ClientCertAuthenticator({ ...plan, pem: root.cert }, 'team-a').identify(chained, false)?.username, 'team:team-a:carol');
  assert.equal(new ClientCertAuthenticator({ ...plan, pem: inter.cert }, 'team-a').identify(chained, false)?.username, 'team:team-a:carol');
});

test('identify: one connection\'s chain check verifies at most 8 signatures, whatever roots share the signer\'s name', () => {
  // roots with the name and key identifier of the one that signs, before it: each would cost a
  // signature check (RSA-8192: 0.25 ms) on every connection, on the event loop every team shares
  const skid = '0123456789abcdef0123456789abcdef01234567';
  const real = makeCA(dir, 'twin-real', { cn: 'twin', skid });
  const decoys = Array.from({ length: maxSignatureChecks + 1 }, (_, i) => makeCA(dir, `twin-decoy-${i}`, { cn: 'twin', skid }));
  const dave = makeLeaf(dir, real, 'dave', { cn: 'dave', client: true });
  const plan = { ref: 'ConfigMap team-a/cas key ca.crt', pem: real.cert, required: false, prefix: 'team:team-a:', notAfter: 0 };
  const verify = X509Certificate.prototype.verify;
  let checks = 0;
  X509Certificate.prototype.verify = function (this: X509Certificate, key) { checks++; return verify.call(this, key); };
  try {
    // a rotation (two roots of one name, the old first) is within the bound
    assert.equal(new ClientCertAuthenticator({ ...plan, pem: decoys[0]!.cert + real.cert }, 'team-a').identify(socket(dave, true), false)?.username, 'team:team-a:dave');
    assert.equal(checks, 2);
    checks = 0;
    const flooded = new ClientCertAuthenticator({ ...plan, pem: decoys.map((d) => d.cert).join('') + real.cert }, 'team-a');
    assert.throws(() => flooded.identify(socket(dave, true), false), /not signed by the current client CA/);
    assert.equal(checks, maxSignatureChecks);
    // an intermediate the client sends with a key over 8192 bits is not checked at all (the leaf
    // names it as its issuer: same name, key identifier and key type as the RSA-8200 fixture)
    checks = 0;
    const big = { cert: rsa8200 } as CertPair;
    const namesBig = makeCA(dir, 'names-big', { cn: 'big-ca', skid: 'C0041DA10B201548199FD5EE12817CBCDE7D4670', rsa: true });
    const erin = makeLeaf(dir, namesBig, 'erin', { cn: 'erin', client: true });
    assert.ok(new X509Certificate(erin.cert).checkIssued(new X509Certificate(big.cert)), 'the leaf names the big intermediate as its issuer');
    assert.throws(() => new ClientCertAuthenticator(plan, 'team-a').identify(socket(erin, true, [big]), false), /not signed by the current client CA/);
    assert.equal(checks, 0);
  } finally {
    X509Certificate.prototype.verify = verify;
  }
});

test('a CA bundle with a key over 8192 bits, a DSA key or an RSA exponent over 2^31-1 is refused (checks that cost ~1 ms or more)', () => {
  const big = rsa8200;
  // keys whose checks cost more than their size says: refused whatever their size
  const dsaParams = join(dir, 'dsa.params');
  execFileSync('openssl', ['genpkey', '-genparam', '-algorithm', 'DSA', '-pkeyopt', 'dsa_paramgen_bits:2048', '-out', dsaParams], { stdio: 'ignore' });
  const odd: [string, string[], RegExp][] = [
    ['dsa', ['-paramfile', dsaParams], /certificate 2 has a dsa key; RSA, ECDSA/],
    ['rsa-e', ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-pkeyopt', 'rsa_keygen_pubexp:4294967297'], /certificate 2 has an RSA public exponent over 2\^31-1/],
  ];
  for (const [name, args, why] of odd) {
    const p = parseBundle('team-a', ca.cert + makeOddCA(dir, name, args).cert);
    assert.ok('problem' in p && why.test(p.problem), `${name}: ${JSON.stringify(p)}`);
  }
  assert.ok(!('problem' in parseBundle('team-a', ca.cert + makeOddCA(dir, 'ed', ['-algorithm', 'ED25519']).cert)), 'Ed25519 is fine');
  assert.ok(!('problem' in parseBundle('team-a', ca.cert + makeCA(dir, 'rsa-ok', { rsa: true }).cert)), 'RSA-2048, e = 65537 is fine');
  assert.deepEqual(parseBundle('team-a', ca.cert + big), { problem: `certificate 2 has a 8200-bit key, more than the ${maxKeyBits} bits a CA key may have` });
  assert.ok(!('problem' in parseBundle('team-a', ca.cert)));
});

test('a bundle is looked up by its text when short, by its sha256 when long (V8 hashes long strings by length only: same-length bundles would share a bucket); a text never passes for a digest', () => {
  assert.equal(textKey('short'), 't:short');
  const long = (end: string) => `${'A'.repeat(20_000)}${end}`;
  const a = textKey(long('1'));
  assert.match(a, /^h:[\w-]{43}$/);
  assert.notEqual(textKey(long('2')), a, 'same length, another text');
  assert.equal(textKey(long('1')), a, 'the same text (another string of it)');
  for (let i = 3; i < 9; i++) textKey(long(String(i))); // past the ones remembered
  assert.equal(textKey(long('1')), a);
  assert.notEqual(textKey(a), a, 'a short text that reads like a digest');
  assert.notEqual(textKey(a.slice(2)), a);
});
