// PEM certificate bundles (CA references), parsed the one way everything here reads them.
import { createHash, X509Certificate, type AsymmetricKeyDetails } from 'node:crypto';
import { NamespacedRecent } from '../recent.js';

/** Certificates a bundle may hold (Mozilla's root store has ~150); parsing an RSA-2048 one takes ~0.05 ms. */
export const maxBundleCertificates = 256;

/** What one gateway's distinct CA bundles may hold together (Mozilla's roots are ~220 KiB):
 * bounds what one reconcile parses when the bundles are not remembered (~17 ms). */
export const maxGatewayBundleBytes = 512 * 1024;

/**
 * The certificates of a PEM bundle a namespace names, or why it cannot be one. Remembered for the
 * last 64 bundles used, at most 16 a namespace (one team's bundles cannot push out another's): a
 * team's ConfigMap named by many routes, and asked on every reconcile, is parsed once (a bundle of
 * 1 MiB took ~340 ms, on the event loop every team shares).
 */
export function parseBundle(namespace: string, pem: string): Bundle | { problem: string } {
  const b = parsed.get(namespace, textKey(pem), () => parse(pem));
  // what is trusted (the blocks written anew) is asked for too (a client CA's authenticator)
  if (!('problem' in b) && b.pem !== pem) parsed.get(namespace, textKey(b.pem), () => b);
  return b;
}

/**
 * What a bundle is looked up by: `t:` and its text when under 1 KiB, else `h:` and its sha256 (the
 * prefixes keep a text from passing for a digest). V8 hashes a string of more than 16,383
 * characters by its length alone, so bundles of one length (a team makes as many as it likes)
 * would share a bucket and every lookup compare them whole: a reconcile of 64 routes took seconds;
 * and a key is never a copy of a bundle. Hashing reads the text (the last 4 are remembered).
 */
export function textKey(text: string): string {
  if (text.length < 1024) return `t:${text}`;
  for (const [t, k] of lastKeys) if (t === text) return k;
  const key = `h:${createHash('sha256').update(text).digest('base64url')}`;
  lastKeys.unshift([text, key]);
  if (lastKeys.length > 4) lastKeys.pop();
  return key;
}
const lastKeys: [string, string][] = [];
const parsed = new NamespacedRecent<string, Bundle | { problem: string }>(64, 16);

/** A bundle's certificates, and `pem`: their blocks written anew, what is given to OpenSSL to trust. */
export interface Bundle {
  certificates: X509Certificate[];
  pem: string;
}

/**
 * One gateway's bundles, admitted within maxGatewayBundleBytes in the order given (each distinct
 * bundle counted once): the spec's order, the listener's client CA first, whatever else the
 * cluster holds, so one route's bundle never costs the whole listener.
 */
export class GatewayBundles {
  private readonly admitted = new Set<string>();
  private readonly over = new Map<string, number>();

  constructor(private readonly namespace: string, pems: (string | undefined)[] = []) {
    let bytes = 0;
    for (const pem of pems) {
      if (pem === undefined) continue;
      const key = textKey(pem);
      if (this.admitted.has(key) || this.over.has(key)) continue;
      if (bytes + pem.length > maxGatewayBundleBytes) this.over.set(key, bytes + pem.length);
      else {
        this.admitted.add(key);
        bytes += pem.length;
      }
    }
  }

  parse(pem: string): Bundle | { problem: string } {
    const over = this.over.get(textKey(pem));
    if (over !== undefined) {
      return { problem: `the gateway's distinct CA bundles together are over ${maxGatewayBundleBytes / 1024} KiB (${Math.ceil(over / 1024)} KiB with this one)` };
    }
    return parseBundle(this.namespace, pem);
  }
}

function parse(pem: string): Bundle | { problem: string } {
  const { blocks } = certificateBlocks(pem, maxBundleCertificates + 1);
  if (!blocks.length) return { problem: 'no PEM certificate in it' };
  if (blocks.length > maxBundleCertificates) return { problem: `it holds more than the ${maxBundleCertificates} certificates a bundle may hold` };
  let certificates: X509Certificate[];
  try {
    certificates = blocks.map((b) => new X509Certificate(b));
  } catch (err) {
    return { problem: `not a valid PEM certificate: ${(err as Error).message}` };
  }
  for (const [i, c] of certificates.entries()) {
    const why = keyProblem(c);
    if (why) return { problem: `certificate ${i + 1} ${why}` };
  }
  return { certificates, pem: blocks.join('') };
}

/** The labels OpenSSL reads a certificate under (the last two, old ones, it still takes). */
const certificateLabels = new Set(['CERTIFICATE', 'X509 CERTIFICATE', 'TRUSTED CERTIFICATE']);

export interface CertificateBlocks {
  /** The certificate blocks, each written anew: its BEGIN line, only base64's letters of its body
   * (64 a line, the padding made anew), its END line. */
  blocks: string[];
  /** Their DER bytes; and a block of any label never ended counts the rest of the text. */
  bytes: number;
  /** A certificate block begun and never ended (not in `blocks`). */
  unended: boolean;
}

/**
 * The certificate blocks of a PEM text, at most `max`: what is served or trusted is these blocks
 * written anew, never the text. OpenSSL's own reading of a text finds blocks a count of it does
 * not (old labels, after a byte-order mark, past 254 bytes of a line) and decodes less than it
 * (it stops at a `-`): a bundle counted and checked as 1 certificate had OpenSSL trust a second
 * one whose key was never checked; a listener chain counted as 1 sent 201. One pass: BEGIN and END
 * count only where a line begins (a leading byte-order mark skipped); a BEGIN line without its END
 * stops the reading (a text of BEGIN lines costs one search, not one each).
 */
export function certificateBlocks(text: string, max = Infinity): CertificateBlocks {
  const blocks: string[] = [];
  let bytes = 0;
  for (let at = 0; blocks.length < max;) {
    const b = lineStarting(text, '-----BEGIN ', at);
    if (b < 0) break;
    const labelEnd = text.indexOf('-----', b + 11);
    const lineEnd = text.indexOf('\n', b);
    if (labelEnd < 0 || (lineEnd >= 0 && labelEnd > lineEnd)) { at = b + 11; continue; } // not a BEGIN line
    const label = text.slice(b + 11, labelEnd);
    const endLine = `-----END ${label}-----`;
    const e = lineStarting(text, endLine, labelEnd + 5);
    const certificate = certificateLabels.has(label);
    if (e < 0) {
      bytes += text.length - b;
      return { blocks, bytes, unended: certificate };
    }
    if (certificate) {
      const letters = text.slice(labelEnd + 5, e).replace(/[^A-Za-z0-9+/]+/g, '');
      bytes += Math.floor((letters.length * 3) / 4);
      const padded = letters + '='.repeat((4 - (letters.length % 4)) % 4);
      blocks.push(`-----BEGIN ${label}-----\n${padded.replace(/.{64}/g, '$&\n').replace(/\n$/, '')}\n${endLine}\n`);
    }
    at = e + endLine.length;
  }
  return { blocks, bytes, unended: false };
}

/** Where `text` next begins a line of `s` (the first after a byte-order mark too), from `from`; -1 if nowhere. */
function lineStarting(s: string, text: string, from: number): number {
  for (let i = s.indexOf(text, from); i >= 0; i = s.indexOf(text, i + 1)) {
    const before = i === 0 ? 10 : s.charCodeAt(i - 1);
    if (before === 10 /* \n */ || (i === 1 && before === 0xfeff)) return i;
  }
  return -1;
}

/**
 * Why a CA certificate's key may not check signatures here, or null. As Go's TLS: RSA of at most
 * maxKeyBits with a public exponent of at most 2^31-1 (a 3072-bit key with a 3071-bit exponent
 * costs ~5 ms a check), ECDSA on P-256, P-384 or P-521, Ed25519 or Ed448; not DSA (8192 bits
 * with 256-bit exponents cost ~20 times an RSA check).
 */
export function keyProblem(c: X509Certificate): string | null {
  let type: string | undefined, d: AsymmetricKeyDetails | undefined;
  try {
    ({ asymmetricKeyType: type, asymmetricKeyDetails: d } = c.publicKey);
  } catch (err) { // a key OpenSSL cannot read (an algorithm it lacks)
    return `has a key that cannot be read: ${(err as Error).message}`;
  }
  return keyTypeProblem(type, d);
}

/** Why a key of `type` with `d` may not sign or check signatures here (the rules above), or null. */
export function keyTypeProblem(type: string | undefined, d: AsymmetricKeyDetails | undefined): string | null {
  if (type === 'rsa' || type === 'rsa-pss') {
    const bits = d?.modulusLength ?? 0;
    if (bits > maxKeyBits) return `has a ${bits}-bit key, more than the ${maxKeyBits} bits a CA key may have`;
    return (d?.publicExponent ?? 0n) > maxPublicExponent ? 'has an RSA public exponent over 2^31-1' : null;
  }
  if (type === 'ec') return namedCurves.has(d?.namedCurve ?? '') ? null : `has an EC key on the curve ${d?.namedCurve ?? '(explicit)'}; P-256, P-384 or P-521 only`;
  return type === 'ed25519' || type === 'ed448' ? null : `has a ${type ?? 'unknown'} key; RSA, ECDSA (P-256, P-384, P-521), Ed25519 or Ed448 only`;
}

/** The largest RSA key a CA certificate may have, as Go's TLS: checking a signature against an
 * RSA-16384 key takes ~1 ms of the event loop every team shares, 8192 ~0.25 ms. */
export const maxKeyBits = 8192;
const maxPublicExponent = 2n ** 31n - 1n;
const namedCurves = new Set(['prime256v1', 'secp384r1', 'secp521r1']);
