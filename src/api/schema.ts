// Generated from deploy/crds/access-gateway.io_accessgateways.yaml by scripts/gen-types.ts.
// Do not edit: change the CRD, then run `npm run gen`.

export const group = "access-gateway.io";
export const version = "v1alpha1";
export const kind = "AccessGateway";
export const plural = "accessgateways";

// The openAPIV3Schema of the served version (validation and defaults for files).
export const schema: Record<string, unknown> = {
  "type": "object",
  "description": "AccessGateway gives a team its own authenticated, policy-checked proxy to the Kubernetes apiserver and to in-cluster Services. Workloads call the gateway's listener with an audience-bound projected service-account token; the gateway authenticates the token, checks the access rules, and forwards the request along the first matching route.",
  "required": [
    "spec"
  ],
  "x-kubernetes-validations": [
    {
      "optionalOldSelf": true,
      "rule": "oldSelf.hasValue() || !has(self.metadata.name) || (size(self.metadata.name) <= 59 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))",
      "message": "metadata.name must be a DNS label of at most 59 characters (lower-case letters, digits and -): the gateway's Service is named agw-NAME",
      "fieldPath": ".metadata"
    }
  ],
  "properties": {
    "apiVersion": {
      "type": "string",
      "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values."
    },
    "kind": {
      "type": "string",
      "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. In CamelCase."
    },
    "metadata": {
      "type": "object"
    },
    "spec": {
      "type": "object",
      "description": "Desired state of the gateway (its listener, how callers authenticate, who may call it, and where requests go).",
      "required": [
        "authentication",
        "routes"
      ],
      "x-kubernetes-validations": [
        {
          "rule": "!has(self.access) || self.access.all(a, !has(a.routes) || a.routes.all(n, self.routes.exists(r, r.name == n)))",
          "message": "access rules may only name routes defined in spec.routes",
          "fieldPath": ".access"
        },
        {
          "rule": "!has(self.authentication.issuers) || size(self.authentication.issuers) == 0 || (has(self.listener) && has(self.listener.tls))",
          "message": "authentication.issuers needs listener.tls: people's ID tokens are not sent over plain HTTP",
          "fieldPath": ".authentication.issuers"
        }
      ],
      "properties": {
        "listener": {
          "type": "object",
          "description": "Where the gateway listens. Every gateway replica serves the listener; in the cluster it is reachable through the Service agw-NAME in this namespace (see status.listener.url).",
          "properties": {
            "port": {
              "type": "integer",
              "format": "int32",
              "minimum": 1,
              "maximum": 65535,
              "description": "Port the gateway pods listen on for this gateway. Optional: when unset a free port is allocated from the operator's --port-range and recorded in status.listener.port; an allocated port never changes while the gateway exists. A port already used by another gateway makes this one Accepted=False, reason PortConflict."
            },
            "expose": {
              "type": "object",
              "description": "How the Service agw-NAME exposes the gateway. The platform decides what teams may ask for (operator flags --expose-types and --expose-annotations, chart values expose.*): a type or annotation it does not allow keeps the Service a plain ClusterIP without the annotations and makes the gateway Programmed=False, reason ExposureNotPermitted.",
              "properties": {
                "type": {
                  "type": "string",
                  "enum": [
                    "ClusterIP",
                    "NodePort",
                    "LoadBalancer"
                  ],
                  "description": "Service type. Optional: the operator's --default-expose-type (ClusterIP unless the platform chose otherwise). With LoadBalancer, the address the load balancer gets is published in status.listener.url."
                },
                "annotations": {
                  "type": "object",
                  "maxProperties": 16,
                  "additionalProperties": {
                    "type": "string",
                    "maxLength": 1024
                  },
                  "description": "Annotations of the Service (load-balancer settings, for example); each key must be allowed by the operator's --expose-annotations."
                }
              }
            },
            "tls": {
              "type": "object",
              "description": "Serve the listener over HTTPS. When unset the listener speaks plain HTTP.",
              "required": [
                "secretName"
              ],
              "properties": {
                "secretName": {
                  "type": "string",
                  "minLength": 1,
                  "maxLength": 253,
                  "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
                  "description": "Name of a kubernetes.io/tls Secret in the gateway's namespace, labelled access-gateway.io/listener-tls=true (the operator only watches labelled Secrets). A renewed certificate is picked up without dropping connections."
                },
                "clientCA": {
                  "type": "object",
                  "description": "Client certificates as an identity (the apiserver's x509 rule: the subject's CN is the username, each O a group). The CA bundle comes from a ConfigMap or Secret key in the gateway's namespace, labelled access-gateway.io/ca-bundle=true. A CA of the team's namespace is a team identity source: the username and every group are prefixed with team:NAMESPACE: (CN alice of namespace payments is team:payments:alice), so the team's own RoleBindings grant them rights and they never name anyone else. A verified certificate is the caller's identity even when a bearer token is sent too; a missing reference makes the gateway ResolvedRefs=False, reason InvalidCertificateRef.",
                  "required": [
                    "kind",
                    "name",
                    "key"
                  ],
                  "properties": {
                    "kind": {
                      "type": "string",
                      "enum": [
                        "ConfigMap",
                        "Secret"
                      ],
                      "description": "Kind of the object holding the CA bundle."
                    },
                    "name": {
                      "type": "string",
                      "minLength": 1,
                      "maxLength": 253,
                      "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
                      "description": "Name of the ConfigMap or Secret, in the gateway's namespace."
                    },
                    "key": {
                      "type": "string",
                      "minLength": 1,
                      "maxLength": 253,
                      "pattern": "^[-._a-zA-Z0-9]+$",
                      "description": "Key holding the PEM bundle, for example ca.crt."
                    },
                    "mode": {
                      "type": "string",
                      "enum": [
                        "Optional",
                        "Required"
                      ],
                      "default": "Optional",
                      "description": "Optional (default): a caller without a verified certificate may still present a bearer token. Required: every request needs a verified client certificate (401 otherwise, naming why)."
                    }
                  }
                }
              }
            }
          }
        },
        "authentication": {
          "type": "object",
          "description": "How the gateway authenticates callers' bearer tokens.",
          "required": [
            "audiences"
          ],
          "properties": {
            "audiences": {
              "type": "array",
              "minItems": 1,
              "maxItems": 16,
              "description": "Token audiences this gateway accepts; a token must carry at least one of them. Use a dedicated audience (for example access-gateway) in the projected token volume, so the token the gateway sees is not usable against the apiserver itself.",
              "items": {
                "type": "string",
                "minLength": 1,
                "maxLength": 256,
                "description": "One accepted audience."
              }
            },
            "issuers": {
              "type": "array",
              "maxItems": 8,
              "x-kubernetes-list-type": "set",
              "description": "OIDC issuers (people's identity providers) whose ID tokens this gateway accepts beside service-account tokens, by issuer URL. Only issuers the platform configured are usable (the operator's --authentication-config, the jwt list of an apiserver AuthenticationConfiguration): their claim mappings decide the username and groups, which never start with system: or team: (team:NS: names are a team client CA's). The token's audience is checked against the issuer's configured audiences. An issuer the platform did not configure makes the gateway ResolvedRefs=False, reason IssuerNotFound; one whose configuration is invalid, Accepted=False, reason InvalidIssuer with the compiler's message.",
              "items": {
                "type": "string",
                "maxLength": 512,
                "pattern": "^https://[^?#]+$",
                "description": "An issuer URL, exactly as configured (and as in the tokens' iss claim)."
              }
            },
            "mode": {
              "type": "string",
              "enum": [
                "TokenReview",
                "JWKS"
              ],
              "default": "TokenReview",
              "description": "How tokens are verified. TokenReview (default) asks the apiserver, which honours revocation of bound tokens (deleted pod or secret) when it is asked (a cached answer holds for cacheTTLSeconds). JWKS checks the signature offline against the keys published by the apiserver's OIDC discovery endpoint, and on every request, cached or not, that the token's service account and bound objects still exist (from the operator's watches) and its key is still published."
            },
            "cacheTTLSeconds": {
              "type": "integer",
              "format": "int32",
              "minimum": 0,
              "maximum": 3600,
              "default": 10,
              "description": "How long a successful authentication is cached, in seconds; the effective lifetime is the smaller of this and the token's expiry. In TokenReview mode, a token still in use after 80% of it is reviewed again in the background (its requests do not wait), unless it expires first. 0 disables the cache. A refusal (401) is remembered for 5 s; \"unavailable\" (503) never."
            }
          }
        },
        "access": {
          "type": "array",
          "maxItems": 64,
          "description": "Who may use the gateway. A request is allowed if any rule matches the authenticated caller (and, when the rule lists routes, the matched route). With no rules nobody is allowed: every authenticated request gets 403. Access rules decide who reaches a route; for apiserver routes in Impersonate mode, the caller's own RBAC then decides what it may do.",
          "items": {
            "type": "object",
            "description": "One access rule: a set of subjects (service accounts, groups, users) and, optionally, the routes they may use. A caller matching any subject matches the rule.",
            "x-kubernetes-validations": [
              {
                "rule": "has(self.serviceAccounts) || has(self.groups) || has(self.users)",
                "message": "an access rule must name at least one of serviceAccounts, groups or users"
              },
              {
                "rule": "!has(self.notBefore) || !has(self.notAfter) || self.notBefore < self.notAfter",
                "message": "notBefore must be earlier than notAfter",
                "fieldPath": ".notAfter"
              }
            ],
            "properties": {
              "serviceAccounts": {
                "type": "array",
                "minItems": 1,
                "maxItems": 64,
                "description": "Service accounts that match this rule.",
                "items": {
                  "type": "object",
                  "description": "A service account, by namespace and name.",
                  "required": [
                    "namespace",
                    "name"
                  ],
                  "properties": {
                    "namespace": {
                      "type": "string",
                      "minLength": 1,
                      "maxLength": 63,
                      "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                      "description": "Namespace of the service account."
                    },
                    "name": {
                      "type": "string",
                      "minLength": 1,
                      "maxLength": 253,
                      "pattern": "^(\\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$",
                      "description": "Name of the service account, or \"*\" for every service account in the namespace."
                    }
                  }
                }
              },
              "groups": {
                "type": "array",
                "minItems": 1,
                "maxItems": 64,
                "description": "Groups, as reported by authentication, that match this rule; for example system:serviceaccounts:team-payments matches every service account of that namespace.",
                "items": {
                  "type": "string",
                  "minLength": 1,
                  "maxLength": 512,
                  "description": "A group name, compared exactly."
                }
              },
              "users": {
                "type": "array",
                "minItems": 1,
                "maxItems": 64,
                "description": "Full usernames, as reported by authentication, that match this rule, for example system:serviceaccount:team-payments:billing.",
                "items": {
                  "type": "string",
                  "minLength": 1,
                  "maxLength": 512,
                  "description": "A username, compared exactly."
                }
              },
              "routes": {
                "type": "array",
                "minItems": 1,
                "maxItems": 16,
                "description": "Names of the routes (spec.routes[].name) this rule grants, at most 16. Optional: when unset the rule grants every route.",
                "items": {
                  "type": "string",
                  "minLength": 1,
                  "maxLength": 63,
                  "description": "A route name from spec.routes."
                }
              },
              "notBefore": {
                "type": "string",
                "format": "date-time",
                "description": "A time-boxed grant: the rule matches only from this time on (RFC 3339, for example 2026-12-01T09:00:00Z). Optional."
              },
              "notAfter": {
                "type": "string",
                "format": "date-time",
                "description": "A time-boxed grant: the rule matches only before this time (RFC 3339); from then on it does not match, without a restart, and status.expiredAccessRules lists it; streams and interactive sessions that no other rule grants are ended then. Optional."
              }
            }
          }
        },
        "routes": {
          "type": "array",
          "minItems": 1,
          "maxItems": 64,
          "description": "Where requests go. Routes are tried in order and the first whose pathPrefix (and methods, when set) matches wins; a request no route matches gets 404. Each route forwards either to the Kubernetes apiserver (apiserver) or to an in-cluster Service (service).",
          "x-kubernetes-validations": [
            {
              "rule": "self.all(r, self.exists_one(o, o.name == r.name))",
              "message": "route names must be unique",
              "messageExpression": "'route names must be unique; duplicated: ' + self.map(r, r.name).filter(n, !self.exists_one(o, o.name == n))[0]"
            }
          ],
          "items": {
            "type": "object",
            "description": "One route, the requests it matches and the upstream it forwards them to.",
            "required": [
              "name",
              "pathPrefix"
            ],
            "x-kubernetes-validations": [
              {
                "rule": "has(self.apiserver) != has(self.service)",
                "message": "exactly one of apiserver or service must be set"
              }
            ],
            "properties": {
              "name": {
                "type": "string",
                "minLength": 1,
                "maxLength": 63,
                "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                "description": "Name of the route, unique within the gateway and shaped like a DNS label. Used by access rules, in metrics, in the access log and in status.routes."
              },
              "pathPrefix": {
                "type": "string",
                "minLength": 1,
                "maxLength": 1024,
                "pattern": "^/",
                "x-kubernetes-validations": [
                  {
                    "rule": "!self.matches(r\"//+[^/]|/[.][.]?(/|;|$)|[%\\\\\\x00-\\x1f\\x7f]\")",
                    "message": "a decoded path: no '//' but trailing, no '.' or '..' segment, no '%', backslash or control character (requests holding them are refused before routing)"
                  }
                ],
                "description": "Requests whose path begins with this prefix, element by element, match the route (Gateway API PathPrefix): /a matches /a and /a/b but not /ab; a trailing slash is ignored (/a/ matches /a too); \"/\" matches everything. Compared against the request path decoded once, as the apiserver reads it: requests holding \".\", \"..\", \"//\", encoded slashes or backslashes, or a percent-encoded \"%\" are refused with 400 before routing."
              },
              "rewritePrefix": {
                "type": "string",
                "minLength": 1,
                "maxLength": 1024,
                "pattern": "^/",
                "x-kubernetes-validations": [
                  {
                    "rule": "!self.matches(r\"//+[^/]|/[.][.]?(/|;|$)|[%\\\\\\x00-\\x1f\\x7f]\")",
                    "message": "a decoded path: no '//' but trailing, no '.' or '..' segment, no '%', backslash or control character (requests holding them are refused before routing)"
                  }
                ],
                "description": "Optional. Replaces the matched pathPrefix before the request is forwarded, element by element, for example pathPrefix /ledger/ with rewritePrefix / sends /ledger/v1/x upstream as /v1/x and /ledger as /. When unset the path is forwarded unchanged. The services-proxy URL form (/api/v1/namespaces/NS/services/NAME/proxy/PATH) reaches a service route only for a PATH under its rewritePrefix (or pathPrefix), as if the caller had used the path form."
              },
              "methods": {
                "type": "array",
                "minItems": 1,
                "maxItems": 9,
                "description": "Optional. HTTP methods this route matches; when unset it matches every method. A request whose method is not listed falls through to the next route.",
                "items": {
                  "type": "string",
                  "enum": [
                    "GET",
                    "HEAD",
                    "POST",
                    "PUT",
                    "PATCH",
                    "DELETE",
                    "OPTIONS",
                    "TRACE"
                  ],
                  "description": "An HTTP method, upper case."
                }
              },
              "timeoutSeconds": {
                "type": "integer",
                "format": "int32",
                "minimum": 1,
                "maximum": 3600,
                "default": 30,
                "description": "Seconds to wait for the upstream's response headers before answering 504. Once headers arrive, streamed bodies (watches, chunked responses) and upgraded connections (exec, port-forward, WebSocket) are not cut off."
              },
              "retries": {
                "type": "integer",
                "format": "int32",
                "minimum": 0,
                "maximum": 5,
                "default": 0,
                "description": "How many times a request is retried on another upstream endpoint after a connection failure, or a 502/503 from an endpoint that went away. Only idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) are retried. Default 0: no retries."
              },
              "apiserver": {
                "type": "object",
                "description": "Forward to the Kubernetes apiserver, like kubectl proxy, but for an authenticated caller and never with the operator's own rights. Mutually exclusive with service. Set it to {} to take every default.",
                "x-kubernetes-validations": [
                  {
                    "rule": "has(self.serviceAccountName) == (has(self.identity) && self.identity == 'ServiceAccount')",
                    "message": "serviceAccountName is required with identity ServiceAccount, and only allowed with it",
                    "fieldPath": ".serviceAccountName"
                  }
                ],
                "properties": {
                  "identity": {
                    "type": "string",
                    "maxLength": 32,
                    "default": "Impersonate",
                    "x-kubernetes-validations": [
                      {
                        "rule": "self in ['Impersonate', 'ServiceAccount', 'Passthrough']",
                        "messageExpression": "self == 'Gateway' ? 'identity Gateway was removed: it sent requests with the operator\\'s own credentials. Use identity ServiceAccount with serviceAccountName (a service account of this namespace), or Impersonate (the caller)' : 'identity must be one of Impersonate, ServiceAccount, Passthrough'"
                      }
                    ],
                    "description": "Whose identity the apiserver sees; the operator's own credentials never carry a team's request. Impersonate (default): the authenticated caller (Impersonate-User/Group/Uid/Extra), so the caller's own RBAC applies. ServiceAccount: the service account serviceAccountName of this gateway's namespace (system:serviceaccount:NAMESPACE:NAME and its groups), so callers get exactly that account's RBAC. Passthrough: the caller's token is forwarded unchanged (its audience must then be accepted by the apiserver). In every mode the apiserver's audit log names the gateway, the route and the original caller (Impersonate-Extra access-gateway.io/gateway, access-gateway.io/route, access-gateway.io/caller; Passthrough sends no extras). The value Gateway (the operator's own identity) was removed."
                  },
                  "serviceAccountName": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 253,
                    "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
                    "description": "With identity ServiceAccount (and only then): the name of a service account in this gateway's namespace that the gateway impersonates. It cannot name an account of another namespace: only a name is given."
                  },
                  "acceptPaths": {
                    "type": "array",
                    "maxItems": 32,
                    "default": [
                      "^.*"
                    ],
                    "description": "RE2 regular expressions (Go's syntax, as kubectl proxy --accept-paths; run in linear time), searched unanchored in the decoded request path; a request path must match at least one of them. Default [\"^.*\"], every path. An expression RE2 cannot compile (for example a lookaround or a backreference) makes the gateway Accepted=False, reason InvalidRegex.",
                    "items": {
                      "type": "string",
                      "minLength": 1,
                      "maxLength": 256,
                      "description": "A regular expression matched against the request path."
                    }
                  },
                  "rejectPaths": {
                    "type": "array",
                    "maxItems": 32,
                    "default": [
                      "^/api/.*/pods/.*/exec",
                      "^/api/.*/pods/.*/attach",
                      "^/api/.*/pods/.*/portforward"
                    ],
                    "description": "RE2 regular expressions (kubectl proxy --reject-paths semantics), searched unanchored in the decoded request path (so /api/v1/namespaces/a/%73ecrets is seen as .../secrets); a request path matching any of them is refused with 403, even if it is accepted. Default: kubectl proxy's (pods' exec and attach) and pods' portforward, so interactive sessions are opt-in: a route that allows them lists what it still rejects (or [] to reject no path), and the caller's own RBAC (create on pods/exec, pods/attach, pods/portforward) still decides.",
                    "items": {
                      "type": "string",
                      "minLength": 1,
                      "maxLength": 256,
                      "description": "A regular expression matched against the request path."
                    }
                  },
                  "rejectMethods": {
                    "type": "array",
                    "maxItems": 32,
                    "default": [],
                    "description": "RE2 regular expressions (kubectl proxy --reject-methods semantics) searched in the HTTP method; a matching request is refused with 403. For a read-only gateway use [\"^POST$\", \"^PUT$\", \"^PATCH$\", \"^DELETE$\"] (a plain \"POST\" also matches, as a substring). Default [], no method is rejected (kubectl proxy's default \"^$\" rejects nothing either).",
                    "items": {
                      "type": "string",
                      "minLength": 1,
                      "maxLength": 256,
                      "description": "A regular expression matched against the HTTP method."
                    }
                  }
                }
              },
              "service": {
                "type": "object",
                "description": "Forward to the ready endpoints of an in-cluster Service, load balanced at L7 (like the apiserver's services/NAME/proxy, without the hop through the apiserver). Mutually exclusive with apiserver.",
                "required": [
                  "name",
                  "port"
                ],
                "x-kubernetes-validations": [
                  {
                    "rule": "!has(self.caRef) || (has(self.scheme) && self.scheme == 'https')",
                    "message": "caRef may only be set when scheme is https",
                    "fieldPath": ".caRef"
                  }
                ],
                "properties": {
                  "name": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 63,
                    "pattern": "^[a-z]([-a-z0-9]*[a-z0-9])?$",
                    "description": "Name of the Service."
                  },
                  "namespace": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 63,
                    "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                    "description": "Namespace of the Service; default the gateway's own namespace. A Service in another namespace needs a ReferenceGrant (gateway.networking.k8s.io) in that namespace admitting AccessGateways from this one, else the gateway reports ResolvedRefs=False, reason RefNotPermitted."
                  },
                  "port": {
                    "x-kubernetes-int-or-string": true,
                    "description": "The Service port, by name (spec.ports[].name) or by number (spec.ports[].port). The request goes to the matching ready endpoints of the Service's EndpointSlices.",
                    "maxLength": 63,
                    "x-kubernetes-validations": [
                      {
                        "rule": "type(self) == int ? (self >= 1 && self <= 65535) : self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
                        "message": "port must be a number from 1 to 65535 or a Service port name (a DNS label)"
                      }
                    ]
                  },
                  "scheme": {
                    "type": "string",
                    "enum": [
                      "http",
                      "https"
                    ],
                    "default": "http",
                    "description": "Protocol spoken to the endpoints. With https the endpoints' certificates are verified against caRef when set, else against the system trust store."
                  },
                  "caRef": {
                    "type": "object",
                    "description": "Optional, https only: the CA bundle (PEM) used to verify the endpoints' certificates, read from a ConfigMap or Secret key in the gateway's namespace, labelled access-gateway.io/ca-bundle=true (the operator only watches labelled objects). Certificates are always verified, against the name SERVICE.NAMESPACE.svc; a missing reference makes the gateway ResolvedRefs=False, reason InvalidCertificateRef.",
                    "required": [
                      "kind",
                      "name",
                      "key"
                    ],
                    "properties": {
                      "kind": {
                        "type": "string",
                        "enum": [
                          "ConfigMap",
                          "Secret"
                        ],
                        "description": "Kind of the object holding the CA bundle."
                      },
                      "name": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 253,
                        "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
                        "description": "Name of the ConfigMap or Secret, in the gateway's namespace."
                      },
                      "key": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 253,
                        "pattern": "^[-._a-zA-Z0-9]+$",
                        "description": "Key holding the PEM bundle, for example ca.crt."
                      }
                    }
                  }
                }
              }
            }
          }
        },
        "rateLimit": {
          "type": "object",
          "description": "Optional per-caller token-bucket rate limit: each authenticated identity gets its own bucket. A request over the limit gets 429 with Retry-After. When unset, requests are not rate limited.",
          "required": [
            "requestsPerSecond",
            "burst"
          ],
          "properties": {
            "requestsPerSecond": {
              "type": "integer",
              "format": "int32",
              "minimum": 1,
              "maximum": 1000000,
              "description": "Sustained rate allowed per caller, in requests per second (the bucket's refill rate)."
            },
            "burst": {
              "type": "integer",
              "format": "int32",
              "minimum": 1,
              "maximum": 1000000,
              "description": "Largest burst allowed per caller (the bucket's size)."
            }
          }
        },
        "sessions": {
          "type": "object",
          "default": {},
          "description": "Interactive sessions: the upgraded connections the gateway relays (kubectl exec, attach, cp and port-forward, WebSockets to a Service). Each gets a log line when it starts and when it ends, with bytes each way and its duration.",
          "properties": {
            "maxConcurrent": {
              "type": "integer",
              "format": "int32",
              "minimum": 0,
              "maximum": 1024,
              "default": 32,
              "description": "Sessions open at once on this gateway (every replica counts its own). One over it is refused with 429 and Retry-After before the upstream is asked. Default 32; 0 refuses every upgrade."
            },
            "idleTimeoutSeconds": {
              "type": "integer",
              "format": "int32",
              "minimum": 1,
              "maximum": 86400,
              "default": 900,
              "description": "A session with no data either way for this long is ended (pings and pongs do not count) and told why: a WebSocket close frame (1008) with the reason, or for exec and attach over SPDY a Status on the error stream (kubectl prints both); a SPDY port-forward is reset. Default 900 (15 minutes)."
            }
          }
        }
      }
    },
    "status": {
      "type": "object",
      "description": "Observed state of the gateway, written by the operator's leader.",
      "properties": {
        "observedGeneration": {
          "type": "integer",
          "format": "int64",
          "minimum": 0,
          "description": "The metadata.generation of the spec this status describes."
        },
        "listener": {
          "type": "object",
          "description": "The listener actually serving this gateway.",
          "properties": {
            "port": {
              "type": "integer",
              "format": "int32",
              "minimum": 1,
              "maximum": 65535,
              "description": "Port the gateway pods listen on, from spec.listener.port or allocated."
            },
            "since": {
              "type": "string",
              "format": "date-time",
              "maxLength": 64,
              "description": "When the operator gave the gateway this port (RFC 3339, in milliseconds). Two gateways whose status records the same port (one whose status could not be written since it moved off it): the one given it last has it."
            },
            "url": {
              "type": "string",
              "maxLength": 2048,
              "description": "URL of the gateway: the address of its load balancer when spec.listener.expose is LoadBalancer and the load balancer has one, else the stable in-cluster URL served by the Service agw-NAME in this namespace, for example http://agw-payments.team-payments.svc."
            }
          }
        },
        "routes": {
          "type": "array",
          "maxItems": 64,
          "description": "Per-route state.",
          "items": {
            "type": "object",
            "description": "State of one route.",
            "required": [
              "name"
            ],
            "properties": {
              "name": {
                "type": "string",
                "maxLength": 63,
                "description": "Name of the route."
              },
              "endpoints": {
                "type": "integer",
                "format": "int32",
                "minimum": 0,
                "description": "Ready upstream endpoints of a service route (unset for apiserver routes)."
              }
            }
          }
        },
        "expiredAccessRules": {
          "type": "array",
          "maxItems": 64,
          "description": "The access rules whose notAfter has passed: they no longer match. Delete them from spec.access or move notAfter.",
          "items": {
            "type": "object",
            "description": "One expired access rule.",
            "required": [
              "index",
              "notAfter"
            ],
            "properties": {
              "index": {
                "type": "integer",
                "format": "int32",
                "minimum": 0,
                "description": "Its position in spec.access (from 0)."
              },
              "notAfter": {
                "type": "string",
                "format": "date-time",
                "description": "When it expired."
              }
            }
          }
        },
        "conditions": {
          "type": "array",
          "maxItems": 8,
          "x-kubernetes-list-type": "map",
          "x-kubernetes-list-map-keys": [
            "type"
          ],
          "description": "Conditions, Gateway API style: Accepted (spec valid, port free), ResolvedRefs (Services and Secrets found), Programmed (listener serving this generation) and Ready (the summary kubectl wait --for=condition=Ready waits on). Reasons for False include PortConflict, InvalidRegex, BackendNotFound, NoReadyEndpoints, InvalidCertificateRef and RefNotPermitted.",
          "items": {
            "type": "object",
            "description": "A metav1.Condition.",
            "required": [
              "type",
              "status",
              "lastTransitionTime",
              "reason",
              "message"
            ],
            "properties": {
              "type": {
                "type": "string",
                "maxLength": 316,
                "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
                "description": "Type of the condition, in CamelCase, for example Ready."
              },
              "status": {
                "type": "string",
                "enum": [
                  "True",
                  "False",
                  "Unknown"
                ],
                "description": "Status of the condition, one of True, False, Unknown."
              },
              "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "minimum": 0,
                "description": "The metadata.generation the condition was set for."
              },
              "lastTransitionTime": {
                "type": "string",
                "format": "date-time",
                "description": "When the condition last changed status."
              },
              "reason": {
                "type": "string",
                "minLength": 1,
                "maxLength": 1024,
                "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                "description": "Programmatic identifier of the last transition, in CamelCase."
              },
              "message": {
                "type": "string",
                "maxLength": 32768,
                "description": "Human-readable details of the last transition."
              }
            }
          }
        }
      }
    }
  }
};
