#!/usr/bin/env bash
# Builds prometheus and promtool from the github.com/prometheus/prometheus Go module into the cache
# directory outside the repository, once, and fetches the Prometheus Operator CRD manifests from
# the github.com/prometheus-operator/prometheus-operator module. Prints the directory holding
# prometheus, promtool and crds/. PROMETHEUS_ASSETS, when set, wins: nothing is built.
set -euo pipefail
if [[ -n "${PROMETHEUS_ASSETS:-}" ]]; then echo "$PROMETHEUS_ASSETS"; exit 0; fi
PROM_VERSION=${AGW_PROMETHEUS_VERSION:-v0.316.0}     # the Go module's tag for Prometheus 3.16.0
OPERATOR_VERSION=${AGW_PROMETHEUS_OPERATOR_VERSION:-v0.94.1}   # the newest root-module version the proxy serves here
CACHE=${AGW_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-access-gateway}
out=$CACHE/bin/prometheus-$PROM_VERSION-operator-$OPERATOR_VERSION
mkdir -p "$CACHE"
exec 9>"$CACHE/.build-prometheus.lock"
flock 9   # one build at a time: concurrent test runs share the cache
export GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-local}
log() { echo "build-prometheus: $*" >&2; }

if [[ ! -x $out/prometheus || ! -x $out/promtool ]]; then
  dir=$CACHE/src/prometheus-$PROM_VERSION
  mkdir -p "$dir" "$out"
  cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
GO
  # remove_all_sd: only static and file service discovery (the tests need nothing else), which
  # leaves out the cloud SDKs and most of the build time
  ldflags="-s -w -X github.com/prometheus/common/version.Version=${PROM_VERSION#v}"
  (cd "$dir" && rm -f go.mod go.sum && go mod init agw.local/prometheus >/dev/null 2>&1 &&
    go get "github.com/prometheus/prometheus@$PROM_VERSION" >&2 && go mod tidy -e >&2 &&
    for cmd in prometheus promtool; do
      log "building $cmd $PROM_VERSION"
      CGO_ENABLED=0 go build -tags "tools remove_all_sd" -trimpath -ldflags "$ldflags" \
        -o "$out/$cmd.tmp" "github.com/prometheus/prometheus/cmd/$cmd" >&2 && mv "$out/$cmd.tmp" "$out/$cmd"
    done)
fi

if [[ ! -f $out/crds/monitoring.coreos.com_servicemonitors.yaml ]]; then
  log "fetching the Prometheus Operator CRDs $OPERATOR_VERSION"
  json=$(cd "$CACHE" && go mod download -json "github.com/prometheus-operator/prometheus-operator@$OPERATOR_VERSION") || true
  src=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json")
  [[ -n $src ]] || { log "cannot download the module: $json"; exit 1; }
  mkdir -p "$out/crds.tmp"
  cp "$src"/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml \
     "$src"/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml "$out/crds.tmp/"
  chmod u+w "$out"/crds.tmp/*
  rm -rf "$out/crds" && mv "$out/crds.tmp" "$out/crds"
fi
echo "$out"
