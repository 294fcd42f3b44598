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

/**
 * A client chain as an enterprise PKI issues it: RSA-4096 root, policy CA, issuing CA and client
 * leaf, each with the usual extensions (AIA, CRL distribution point, certificate policies, key
 * identifiers, a few SANs on the leaf); `chain` is the leaf, both intermediates and the root
 * (kubeconfigs often carry the whole bundle): ~6.8 KiB of DER.
 */
export function makeEnterpriseChain(dir: string): { key: string; chain: string } {
  const ext = join(dir, 'pki.ext');
  const common = ['authorityInfoAccess=caIssuers;URI:http://pki.corp.example.com/issuing-ca.crt,OCSP;URI:http://ocsp.corp.example.com',
    'crlDistributionPoints=URI:http://pki.corp.example.com/crl/issuing-ca.crl', 'certificatePolicies=1.3.6.1.4.1.99999.1.2.3,2.23.140.1.2.1',
    'subjectKeyIdentifier=hash', 'authorityKeyIdentifier=keyid:always'];
  writeFileSync(ext, ['[ca]', 'basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign,cRLSign', ...common,
    '[leaf]', 'basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature', 'extendedKeyUsage=clientAuth', ...common,
    'subjectAltName=email:alice@corp.example.com,DNS:alice-workstation.corp.example.com,URI:spiffe://corp.example.com/ns/team-a/sa/alice'].join('\n'));
  const names = ['root', 'policy', 'issuing', 'leaf'];
  let issuer = '';
  for (const n of names) {
    const subj = `/C=US/O=Example Corporation/OU=Platform Engineering/CN=Example ${n}`;
    openssl(['req', '-newkey', 'rsa:4096', '-nodes', '-keyout', join(dir, `pki-${n}.key`), '-out', join(dir, `pki-${n}.csr`), '-subj', subj], dir);
    openssl(['x509', '-req', '-in', join(dir, `pki-${n}.csr`), '-out', join(dir, `pki-${n}.crt`), '-days', '2', '-sha256',
      ...(issuer ? ['-CA', join(dir, `pki-${issuer}.crt`), '-CAkey', join(dir, `pki-${issuer}.key`), '-CAcreateserial'] : ['-key', join(dir, `pki-${n}.key`)]),
      '-extfile', ext, '-extensions', n === 'leaf' ? 'leaf' : 'ca'], dir);
    issuer = n;
  }
  return { key: readFileSync(join(dir, 'pki-leaf.key'), 'utf8'), chain: [...names].reverse().map((n) => readFileSync(join(dir, `pki-${n}.crt`), 'utf8')).join('') };
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

/**
 * A client chain whose check costs: a P-256 leaf under `links` intermediates (the top one
 * self-signed, none under any CA the server trusts) that share one RSA-3072 key with a ~2,400-bit
 * public exponent, so each signature checked costs ~6 ms (~1.4 KiB a link); or one sect571r1 key
 * (~4 ms in ~370 bytes a link: the most a byte costs of those found).
 */
export function makeCostlyChain(dir: string, links: number, key: 'rsa' | 'sect571r1' = 'rsa'): { key: string; chain: string } {
  const big = join(dir, 'costly.key');
  if (key === 'rsa') {
    const e = `0xc${'5'.repeat(598)}1`; // odd; generation needs it coprime with p-1 and q-1 (openssl retries)
    openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:3072', '-pkeyopt', `rsa_keygen_pubexp:${e}`, '-out', big], dir);
  } else {
    // a binary curve's compressed point, no key identifiers: ~370 bytes a link, ~4 ms a check
    openssl(['ecparam', '-name', key, '-genkey', '-noout', '-out', `${big}.0`], dir);
    openssl(['ec', '-in', `${big}.0`, '-conv_form', 'compressed', '-out', big], dir);
  }
  const ext = join(dir, 'costly.ext');
  const ids = key === 'rsa' ? '' : 'subjectKeyIdentifier=none\nauthorityKeyIdentifier=none\n';
  writeFileSync(ext, `[ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n${ids}[leaf]\nbasicConstraints=CA:FALSE\n${ids}`);
  const certs: string[] = [];
  let issuer = '';
  for (let i = links; i >= 1; i--) {
    const csr = join(dir, `costly${i}.csr`);
    const crt = join(dir, `costly${i}.crt`);
    openssl(['req', '-new', '-key', big, '-subj', `/CN=costly${i}`, '-out', csr], dir);
    openssl(['x509', '-req', '-in', csr, ...(issuer ? ['-CA', issuer, '-CAkey', big, '-set_serial', `${i}`] : ['-signkey', big]),
      '-out', crt, '-days', '2', '-extfile', ext, '-extensions', 'ca'], dir);
    certs.unshift(readFileSync(crt, 'utf8'));
    issuer = crt;
  }
  const leafKey = join(dir, 'costly-leaf.key');
  openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', leafKey,
    '-subj', '/CN=costly', '-out', join(dir, 'costly-leaf.csr')], dir);
  openssl(['x509', '-req', '-in', join(dir, 'costly-leaf.csr'), '-CA', issuer, '-CAkey', big, '-set_serial', '999',
    '-out', join(dir, 'costly-leaf.crt'), '-days', '2', '-extfile', ext, '-extensions', 'leaf'], dir);
  return { key: readFileSync(leafKey, 'utf8'), chain: [readFileSync(join(dir, 'costly-leaf.crt'), 'utf8'), ...certs].join('') };
}
