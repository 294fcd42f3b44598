// Condition types and reasons of AccessGateway status (metav1.Condition, Gateway API style), in
// one place: every layer names them from here.

export const ConditionType = {
  Accepted: 'Accepted',
  ResolvedRefs: 'ResolvedRefs',
  Programmed: 'Programmed',
  Ready: 'Ready',
} as const;
export type ConditionType = (typeof ConditionType)[keyof typeof ConditionType];

export const Reason = {
  // True
  Accepted: 'Accepted',
  ResolvedRefs: 'ResolvedRefs',
  Programmed: 'Programmed',
  Ready: 'Ready',
  // Accepted=False
  InvalidName: 'InvalidName',
  InvalidPath: 'InvalidPath',
  InvalidRegex: 'InvalidRegex',
  InvalidIdentity: 'InvalidIdentity',
  InvalidAccessRule: 'InvalidAccessRule',
  InvalidIssuer: 'InvalidIssuer',
  PortConflict: 'PortConflict',
  TooManyGateways: 'TooManyGateways',
  // ResolvedRefs=False
  InvalidCertificateRef: 'InvalidCertificateRef',
  BackendNotFound: 'BackendNotFound',
  NoReadyEndpoints: 'NoReadyEndpoints',
  RefNotPermitted: 'RefNotPermitted',
  IssuerNotFound: 'IssuerNotFound',
  // Programmed=False
  ListenFailed: 'ListenFailed',
  ExposureConflict: 'ExposureConflict',
  ExposureNotPermitted: 'ExposureNotPermitted',
  ExposureInvalid: 'ExposureInvalid',
  ExposureForbidden: 'ExposureForbidden',
  Pending: 'Pending',
  Invalid: 'Invalid',
} as const;
export type Reason = (typeof Reason)[keyof typeof Reason];

/** Several reasons apply at once: all of them, in a stable order (metav1 allows "," in a reason). */
export function mergeReasons(reasons: readonly string[]): string {
  return [...new Set(reasons)].join(',');
}
