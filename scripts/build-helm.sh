#!/usr/bin/env bash
# Builds helm from the helm.sh/helm/v3 Go module into the cache directory outside the
# repository, once, and prints the path of the binary. HELM, when set, wins.
set -euo pipefail
if [[ -n "${HELM:-}" ]]; then echo "$HELM"; exit 0; fi
HELM_VERSION=${AGW_HELM_VERSION:-v3.22.0}
CACHE=${AGW_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-access-gateway}
# the Kubernetes version helm assumes for kubeVersion checks (helm's Makefile sets it the same way)
K8S_MINOR=${AGW_HELM_K8S_MINOR:-37}
out=$CACHE/bin/helm-$HELM_VERSION-k8s1.$K8S_MINOR/helm
mkdir -p "$CACHE"
exec 9>"$CACHE/.build-helm.lock"
flock 9   # one build at a time: concurrent test runs share the cache
if [[ ! -x $out ]]; then
  export GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-local}
  dir=$CACHE/src/helm-$HELM_VERSION
  mkdir -p "$dir" "$(dirname "$out")"
  cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import _ "helm.sh/helm/v3/cmd/helm"
GO
  (cd "$dir" && rm -f go.mod go.sum && go mod init agw.local/helm >/dev/null 2>&1 &&
    go get "helm.sh/helm/v3@$HELM_VERSION" >&2 && go mod tidy -e >&2 &&
    echo "build-helm: building helm $HELM_VERSION" >&2 &&
    CGO_ENABLED=0 go build -tags tools -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
        -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$K8S_MINOR \
        -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$K8S_MINOR" \
      -o "$out.tmp" helm.sh/helm/v3/cmd/helm >&2 && mv "$out.tmp" "$out")
fi
echo "$out"
