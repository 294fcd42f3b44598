// PEM certificate bundles (CA references), parsed the one way everything here reads them.
import { X509Certificate } from 'node:crypto';

/** The certificates of a PEM bundle, or why it cannot be one. */
export function parseBundle(pem: string): X509Certificate[] | { problem: string } {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (!blocks.length) return { problem: 'no PEM certificate in it' };
  try {
    return blocks.map((b) => new X509Certificate(b));
  } catch (err) {
    return { problem: `not a valid PEM certificate: ${(err as Error).message}` };
  }
}
