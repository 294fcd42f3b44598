// PEM certificate bundles (CA references), parsed the one way everything here reads them.
import { X509Certificate } from 'node:crypto';

/** Certificates a bundle may hold (Mozilla's root store has ~150); parsing one takes ~0.7 ms. */
export const maxBundleCertificates = 256;

/** What one gateway's distinct CA bundles may hold together (Mozilla's roots are ~220 KiB):
 * bounds what one reconcile parses when the bundles are not remembered (~17 ms). */
export const maxGatewayBundleBytes = 512 * 1024;

/**
 * The certificates of a PEM bundle, or why it cannot be one. Remembered for the last `kept`
 * bundles used: a team's ConfigMap named by many routes, and asked on every reconcile, is parsed
 * once (a bundle of 1 MiB took ~340 ms, on the event loop every team shares).
 */
export function parseBundle(pem: string): X509Certificate[] | { problem: string } {
  let result = parsed.get(pem);
  if (result) parsed.delete(pem);
  else result = parse(pem);
  parsed.set(pem, result);
  if (parsed.size > kept) parsed.delete(parsed.keys().next().value!);
  return result;
}
const kept = 64;
const parsed = new Map<string, X509Certificate[] | { problem: string }>();

/** One gateway's bundles, read within maxGatewayBundleBytes (each distinct bundle counted once). */
export class GatewayBundles {
  private readonly seen = new Set<string>();
  private bytes = 0;

  parse(pem: string): X509Certificate[] | { problem: string } {
    if (!this.seen.has(pem)) {
      if (this.bytes + pem.length > maxGatewayBundleBytes) {
        return { problem: `the gateway's distinct CA bundles together are over ${maxGatewayBundleBytes / 1024} KiB (${Math.ceil((this.bytes + pem.length) / 1024)} KiB with this one)` };
      }
      this.seen.add(pem);
      this.bytes += pem.length;
    }
    return parseBundle(pem);
  }
}

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
