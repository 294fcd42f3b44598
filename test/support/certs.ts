// Test certificates made with the openssl command line (X.509 creation is not in node:crypto).
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

export interface CertPair { cert: string; key: string; certFile: string; keyFile: string }

/** A self-signed CA (CN `name` unless `opts.cn`; `opts.skid`: its subject key identifier, hex;
 * an EC P-256 key, or RSA-2048 with `opts.rsa`). */
export function makeCA(dir: string, name: string, opts: { cn?: string; skid?: string; rsa?: boolean } = {}): CertPair {
  const keyFile = join(dir, `${name}.key`);
  const certFile = join(dir, `${name}.crt`);
  openssl(['req', '-x509', '-newkey', ...(opts.rsa ? ['rsa:2048'] : ['ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1']), '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', `/CN=${opts.cn ?? name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    ...(opts.skid ? ['-addext', `subjectKeyIdentifier=${opts.skid}`] : [])], dir);
  return { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8'), certFile, keyFile };
}

/** A certificate signed by `ca`: client (CN/O), server (SANs), or an intermediate CA; an EC
 * P-256 key, or RSA-2048 with `opts.rsa`. */
export function makeLeaf(dir: string, ca: CertPair, name: string, opts: {
  cn: string; orgs?: string[]; dnsNames?: string[]; ips?: string[]; client?: boolean; intermediate?: boolean; rsa?: boolean;
}): CertPair {
  const keyFile = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const certFile = join(dir, `${name}.crt`);
  const ext = join(dir, `${name}.ext`);
  const subj = `/CN=${opts.cn}` + (opts.orgs ?? []).map((o) => `/O=${o}`).join('');
  openssl(['req', '-newkey', ...(opts.rsa ? ['rsa:2048'] : ['ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1']), '-nodes',
    '-keyout', keyFile, '-out', csr, '-subj', subj], dir);
  const sans = [...(opts.dnsNames ?? []).map((d) => `DNS:${d}`), ...(opts.ips ?? []).map((i) => `IP:${i}`)];
  writeFileSync(ext, [
    ...(opts.intermediate ? ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign,cRLSign'] : [
      'basicConstraints=CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      `extendedKeyUsage=${opts.client ? 'clientAuth' : 'serverAuth'}`,
    ]),
    ...(sans.length ? [`subjectAltName=${sans.join(',')}`] : []),
  ].join('\n'));
  openssl(['x509', '-req', '-in', csr, '-CA', ca.certFile, '-CAkey', ca.keyFile, '-CAcreateserial',
    '-out', certFile, '-days', '2', '-extfile', ext], dir);
  return { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8'), certFile, keyFile };
}

/** A self-signed CA whose key openssl genpkey makes with `keyArgs` (e.g. DSA, an unusual RSA exponent). */
export function makeOddCA(dir: string, name: string, keyArgs: string[]): CertPair {
  const keyFile = join(dir, `${name}.key`);
  const certFile = join(dir, `${name}.crt`);
  openssl(['genpkey', ...keyArgs, '-out', keyFile], dir);
  openssl(['req', '-x509', '-key', keyFile, '-out', certFile, '-days', '2', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  return { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8'), certFile, keyFile };
}
