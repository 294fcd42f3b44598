// Client certificates as an identity, the apiserver's x509 rule: the subject's CN is the username,
// each O a group. The TLS handshake verifies the chain (requestCert, rejectUnauthorized off so a
// refusal is a 401 that says why); each identity is built once per connection and every name is
// prefixed (a team's CA names only identities of its own namespace).
import { X509Certificate } from 'node:crypto';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import { keyProblem, parseBundle } from '../api/pem.js';
import { UnauthenticatedError } from '../errors.js';
import type { ClientCAPlan } from '../translate/plan.js';
import type { CallerIdentity } from './identity.js';

/** An identity that came from a client certificate (it has no token to pass through). */
export interface CertificateIdentity extends CallerIdentity {
  viaCertificate: true;
}

export function isCertificateIdentity(id: CallerIdentity): id is CertificateIdentity {
  return (id as Partial<CertificateIdentity>).viaCertificate === true;
}

/** Printable ASCII without commas, trimmed: the names travel as Impersonate-* and X-Remote-*
 * header values, and a backend may split a header on commas (O=x,team:other:admins would then
 * name another team's group). */
const headerSafe = /^[\x21-\x2b\x2d-\x7e]([\x20-\x2b\x2d-\x7e]*[\x21-\x2b\x2d-\x7e])?$/;
const maxGroups = 32;

/** The identity a verified certificate's subject names, prefixed; throws on a subject it cannot use. */
export function certificateIdentity(subject: PeerCertificate['subject'] | undefined, prefix: string): CertificateIdentity {
  const cn = subject?.CN;
  if (typeof cn !== 'string' || !cn) throw new UnauthenticatedError('client certificate refused: its subject has no single common name (CN)');
  const orgs = subject?.O === undefined ? [] : typeof subject.O === 'string' ? [subject.O] : [...subject.O];
  for (const name of [cn, ...orgs]) {
    if (!headerSafe.test(name) || name.length > 256) {
      throw new UnauthenticatedError('client certificate refused: CN and O must be printable ASCII without commas or surrounding spaces, at most 256 characters');
    }
  }
  if (orgs.length > maxGroups) throw new UnauthenticatedError(`client certificate refused: more than ${maxGroups} organizations (O)`);
  return { username: prefix + cn, uid: '', groups: [...new Set(orgs)].map((o) => prefix + o), extra: {}, viaCertificate: true };
}

interface Seen { ca: string; id: CertificateIdentity | null; problem: string | null; notAfterMs: number }

/** What each connection's certificate came to, by the bundle it was checked against. */
const seen = new WeakMap<object, Seen>();

export class ClientCertAuthenticator {
  private readonly roots: X509Certificate[];

  constructor(readonly plan: ClientCAPlan, namespace: string, private readonly now: () => number = Date.now) {
    const roots = parseBundle(namespace, plan.pem);
    if ('problem' in roots) throw new Error(`client CA ${plan.ref}: ${roots.problem}`);
    this.roots = roots.certificates;
  }

  /**
   * The caller a connection's certificate names; null when it has none (or an unverified one
   * and a bearer token may decide instead). Throws UnauthenticatedError when the certificate
   * must decide and cannot.
   */
  identify(sock: TLSSocket, hasToken: boolean): CertificateIdentity | null {
    let s = seen.get(sock);
    if (!s || s.ca !== this.plan.pem) {
      s = this.check(sock);
      seen.set(sock, s);
    }
    let problem = s.problem;
    if (s.id && this.now() >= s.notAfterMs) problem = 'client certificate refused: it has expired';
    if (s.id && !problem) return s.id;
    if (problem === null) {
      if (this.plan.required) throw new UnauthenticatedError('gateway requires a client certificate signed by its client CA (spec.listener.tls.clientCA)');
      return null;
    }
    if (this.plan.required || !hasToken) throw new UnauthenticatedError(problem);
    return null;
  }

  /** Verifies against this bundle (once per connection and bundle) and reads the subject. */
  private check(sock: TLSSocket): Seen {
    const none = (problem: string | null): Seen => ({ ca: this.plan.pem, id: null, problem, notAfterMs: 0 });
    const peer = sock.getPeerCertificate(true);
    if (!peer || !peer.raw) return none(null);
    if (!sock.authorized) return none(`client certificate refused: ${String(sock.authorizationError ?? 'not verified')}`);
    const leaf = new X509Certificate(peer.raw);
    // the handshake verified against the bundle of its time, which may be older than this one
    // (rotated while the connection was open, or during its handshake): this bundle must sign it too
    if (!this.chainsToRoot(peer)) {
      return none('client certificate refused: not signed by the current client CA (spec.listener.tls.clientCA)');
    }
    try {
      return { ca: this.plan.pem, id: certificateIdentity(peer.subject, this.plan.prefix), problem: null, notAfterMs: leaf.validToDate.getTime() };
    } catch (err) {
      return none((err as Error).message);
    }
  }

  /**
   * Walks the chain the client sent until a certificate one of the roots signed, checking at most
   * maxSignatureChecks signatures: a bundle of many roots with the name of the one that signs (a
   * team's decoys, before it) would otherwise cost a check each, on every connection.
   */
  private chainsToRoot(peer: PeerCertificate & { issuerCertificate?: PeerCertificate }): boolean {
    let cur = new X509Certificate(peer.raw);
    let next: PeerCertificate & { issuerCertificate?: PeerCertificate } | undefined = peer.issuerCertificate;
    let checks = maxSignatureChecks;
    const signs = (issuer: X509Certificate) => cur.checkIssued(issuer) && checks-- > 0 && cur.verify(issuer.publicKey);
    // each step up spends a check: the budget bounds the depth too
    for (;;) {
      if (this.roots.some(signs)) return true;
      if (!next || !next.raw || next.raw.equals(cur.raw)) return false;
      const issuer = new X509Certificate(next.raw);
      // the roots' keys were bounded when the bundle was read; an intermediate the client sends is here
      if (keyProblem(issuer) !== null || !signs(issuer)) return false;
      cur = issuer;
      next = next.issuerCertificate;
    }
  }
}

/** Signatures one connection's chain check may verify (a chain through two intermediates, with
 * two roots of the issuer's name at each step, as in a rotation, needs eight). */
export const maxSignatureChecks = 8;
