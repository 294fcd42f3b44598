// access-gateway operator | serve | validate | kubeconfig | token | can-i, and the usage text.
import { runOperator } from './operator.js';
import { runServe } from './serve.js';
import { runValidate } from './validate.js';
import { runKubeconfig, runToken } from './kubeconfig.js';
import { canIUsage, runCanI } from './can-i.js';

export const usage = `usage:
  access-gateway operator  [--kubeconfig F] [--namespace NS]... [--admin-address HOST:PORT]
                           [--metrics-auth kubernetes|none (default kubernetes)]
                           [--listen-address HOST] [--advertise-address HOST] [--port-range 20000-20999]
                           [--leader-elect] [--leader-election-namespace NS] [--leader-election-id ID]
                           [--replica-selector LABELS] [--no-expose] [--max-gateways-per-namespace 16]
                           [--max-labelled-mib-per-namespace 8] [--released-port-hold-seconds 300]
                           [--expose-types ClusterIP,NodePort,LoadBalancer (default ClusterIP)]
                           [--default-expose-type ClusterIP] [--expose-annotations KEY|PREFIX*]...
                           [--authentication-config FILE (apiserver AuthenticationConfiguration: OIDC issuers)]
                           [--max-connections-per-listener 4096] [--max-connections-per-namespace 1024]
                           [--max-unadmitted-connections 2048] [--max-cached-callers-per-namespace 10000] [--requests-per-turn-per-namespace 4]
                           [--max-apiserver-requests-per-namespace 0 (no limit)]
                           [--max-metric-series-per-namespace 20000] [--max-paused-answers-per-namespace 32]
                           [--tls-handshake-percent 50] [--header-timeout-seconds 10] [--idle-timeout-seconds 65]
                           [--endpoint-addresses pods|any (default pods)] [--min-access-log none|errors|all (default none)]
                           [--requestable-ports 1-65535]
                           [--drain-seconds N] [--log-level info] [--log-format json|pretty]
                           [--max-token-reviews-in-flight 16] [--max-token-reviews-per-second 500]
                           [--jwks-clock-skew-seconds 5] [--audit-extras all|none (default all)]
  access-gateway serve     --gateways FILE|DIR [--kubeconfig F] [--admin-address HOST:PORT]
                           [--metrics-auth kubernetes|none (default none)]
                           [--listen-address HOST] [--port-range 20000-20999]
                           [--max-connections-per-listener 4096] [--max-connections-per-namespace 1024]
                           [--max-unadmitted-connections 2048] [--max-cached-callers-per-namespace 10000] [--requests-per-turn-per-namespace 4]
                           [--max-apiserver-requests-per-namespace 0 (no limit)]
                           [--max-metric-series-per-namespace 20000] [--max-paused-answers-per-namespace 32]
                           [--tls-handshake-percent 50] [--header-timeout-seconds 10] [--idle-timeout-seconds 65]
                           [--max-token-reviews-in-flight 16] [--max-token-reviews-per-second 500]
                           [--jwks-clock-skew-seconds 5]
                           [--endpoint-addresses pods|any (default pods)] [--authentication-config FILE]
                           [--min-access-log none|errors|all (default none)] [--requestable-ports 1-65535]
                           [--audit-extras all|none (default all)]
  access-gateway validate  -f FILE|DIR ...
  access-gateway kubeconfig --gateway NS/NAME (--service-account SA | --oidc-issuer URL --oidc-client-id ID
                           [--oidc-client-secret S (or ACCESS_GATEWAY_OIDC_CLIENT_SECRET; needs --output)]
                           [--oidc-certificate-authority FILE]) [--server URL]
                           [--certificate-authority FILE] [--audience A] [--expiration-seconds 3600]
                           [--kubeconfig F] [--output FILE]
  access-gateway token     --namespace NS --service-account SA --audience A [--kubeconfig F]
                           (the exec credential plugin the kubeconfig runs)
  access-gateway oidc-token --issuer URL --client-id ID [--client-secret S] [--certificate-authority FILE]
                           [--scopes "openid email profile groups offline_access"] [--cache-dir DIR]
                           (the OIDC one: cached ID token, refresh token, else a device-code login)
  ${canIUsage}
                           (exit 0 yes, 1 no, 3 RBAC not answered; the listener answers the same
                           for the caller itself at /.well-known/access-gateway/can-i?method=M&path=P)
Also a kubectl plugin: an executable named kubectl-access_gateway runs as kubectl access-gateway.
--metrics-auth kubernetes: /metrics needs a bearer token whose user may get the non-resource
URL /metrics (TokenReview + SubjectAccessReview); /healthz and /readyz stay open.
Every flag has an environment twin: --port-range <-> ACCESS_GATEWAY_PORT_RANGE.`;

export async function main(argv: string[]): Promise<number | undefined> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'operator':
      await runOperator(rest);
      return undefined; // keeps running until a signal
    case 'serve':
      await runServe(rest);
      return undefined;
    case 'validate':
      return runValidate(rest);
    case 'kubeconfig':
      return runKubeconfig(rest);
    case 'token':
      return runToken(rest);
    case 'can-i':
      return runCanI(rest);
    case 'oidc-token':
      return (await import('./oidc-login.js')).runOidcToken(rest); // (undici's index: only for this command)
    case undefined: case '-h': case '--help': case 'help':
      console.log(usage);
      return cmd === undefined ? 2 : 0;
    default:
      console.error(`unknown command ${cmd}\n${usage}`);
      return 2;
  }
}
