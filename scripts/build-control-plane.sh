#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and etcd from Go modules into a cache
# directory outside the repository, once. Prints the directory holding the binaries.
# KUBEBUILDER_ASSETS, when set, wins: nothing is built and that directory is printed.
set -euo pipefail

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

# Newest minor first; the next is the fallback when a version does not resolve.
K8S_VERSIONS=(${AGW_K8S_VERSIONS:-v1.37.2 v1.36.3})
ETCD_VERSION=${AGW_ETCD_VERSION:-v3.6.16}
CACHE=${AGW_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-access-gateway}
export GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-local}

log() { echo "build-control-plane: $*" >&2; }

# one build at a time: concurrent test runs share the cache
mkdir -p "$CACHE"
exec 9>"$CACHE/.build-control-plane.lock"
flock 9

build_etcd() {
  local out=$1
  [[ -x $out/etcd ]] && return 0
  local dir=$CACHE/src/etcd-$ETCD_VERSION
  mkdir -p "$dir"
  cat >"$dir/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$dir" && rm -f go.mod go.sum && go mod init agw.local/etcd >/dev/null 2>&1 &&
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2 && go mod tidy >&2 &&
    CGO_ENABLED=0 go build -trimpath -o "$out/etcd.tmp" . >&2 && mv "$out/etcd.tmp" "$out/etcd")
}

build_kube() {
  local version=$1 out=$2
  [[ -x $out/kube-apiserver && -x $out/kube-controller-manager ]] && return 0
  local minor=${version#v1.}; minor=${minor%%.*}
  local staging=v0.${version#v1.}
  local dir=$CACHE/src/kubernetes-$version
  mkdir -p "$dir"
  local gomod
  gomod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [[ -f $gomod ]] || { log "k8s.io/kubernetes@$version did not resolve"; return 1; }
  {
    echo "module agw.local/kubernetes"
    echo
    grep -E '^go [0-9]' "$gomod"
    echo
    echo "require k8s.io/kubernetes $version"
    echo
    # every staging module, pinned to the matching v0.x.y instead of ./staging
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#replace \1 => \1 '"$staging"'#p' "$gomod"
  } >"$dir/go.mod"
  cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  (cd "$dir" && rm -f go.sum && go mod tidy -e >&2 &&
    for cmd in kube-apiserver kube-controller-manager; do
      log "building $cmd $version (several minutes the first time)"
      CGO_ENABLED=0 go build -tags tools -trimpath -ldflags "$ldflags" -o "$out/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd" >&2
      mv "$out/$cmd.tmp" "$out/$cmd"
    done)
}

for version in "${K8S_VERSIONS[@]}"; do
  out=$CACHE/bin/$version-etcd-$ETCD_VERSION
  mkdir -p "$out"
  if build_kube "$version" "$out"; then
    build_etcd "$out"
    echo "$out"
    exit 0
  fi
  log "Kubernetes $version failed to build; falling back a minor"
done
log "no Kubernetes version could be built"
exit 1
