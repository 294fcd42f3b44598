// Kubernetes object-name rules (apimachinery's IsDNS1123Label / IsDNS1123Subdomain), in one place.

const label = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const subdomain = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** A namespace name, a Service port name: a DNS-1123 label of at most 63 characters. */
export function isDnsLabel(s: string): boolean {
  return s.length <= 63 && label.test(s);
}

/** An AccessGateway's name: its Service, agw-NAME, is a DNS label (the CRD's rule says so too). */
export function isGatewayName(s: string): boolean {
  return s.length <= 59 && label.test(s);
}
/** What is wrong with a name isGatewayName refuses (the CRD rule's message). */
export const gatewayNameProblem = "metadata.name must be a DNS label of at most 59 characters (lower-case letters, digits and -): the gateway's Service is named agw-NAME";

/** Most object names (service accounts among them): a DNS-1123 subdomain of at most 253 characters. */
export function isDnsSubdomain(s: string): boolean {
  return s.length <= 253 && subdomain.test(s);
}

/** The prefix of every identity a team's own source (a client CA of its namespace) may yield:
 * the team's RoleBindings can grant such names rights, and no other namespace can mint them. */
export function teamPrefix(namespace: string): string {
  return `${teamRoot}${namespace}:`;
}
/** What every team's prefix starts with: no other source (an OIDC issuer) may name such identities. */
export const teamRoot = 'team:';

/** Whether `name` is a team's (`team:NS:...`): only a team's client CA gives those. */
export function isTeamName(name: string): boolean {
  return name.startsWith(teamRoot);
}
