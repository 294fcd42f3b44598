// PEM certificate bundles (CA references), parsed the one way everything here reads them.
import { X509Certificate } from 'node:crypto';

/** Certificates a bundle may hold (Mozilla's root store has ~150); parsing one takes ~0.7 ms. */
export const maxBundleCertificates = 256;

/**
 * The certificates of a PEM bundle, or why it cannot be one. Remembered for the last `kept`
 * bundles: a team's ConfigMap named by many routes, and asked on every reconcile, is parsed once
 * (a bundle of 1 MiB took ~340 ms, on the event loop every team shares).
 */
export function parseBundle(pem: string): X509Certificate[] | { problem: string } {
  const known = parsed.get(pem);
  if (known) return known;
  const result = parse(pem);
  if (parsed.size >= kept) parsed.delete(parsed.keys().next().value!);
  parsed.set(pem, result);
  return result;
}
const kept = 64;
const parsed = new Map<string, X509Certificate[] | { problem: string }>();

function parse(pem: string): X509Certificate[] | { problem: string } {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (!blocks.length) return { problem: 'no PEM certificate in it' };
  if (blocks.length > maxBundleCertificates) return { problem: `${blocks.length} certificates in it, more than the ${maxBundleCertificates} a bundle may hold` };
  try {
    return blocks.map((b) => new X509Certificate(b));
  } catch (err) {
    return { problem: `not a valid PEM certificate: ${(err as Error).message}` };
  }
}
