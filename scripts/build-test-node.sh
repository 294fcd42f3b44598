#!/usr/bin/env bash
# Builds the test node (test/node: the kubelet's streaming endpoints over the CRI streaming server
# package) into the cache directory outside the repository, once per version of its source, and
# prints the path of the binary. AGW_TEST_NODE, when set, wins.
set -euo pipefail
if [[ -n "${AGW_TEST_NODE:-}" ]]; then echo "$AGW_TEST_NODE"; exit 0; fi
cd "$(dirname "$0")/../test/node"
CACHE=${AGW_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-access-gateway}
hash=$(cat go.mod go.sum ./*.go | sha256sum | cut -c1-12)
out=$CACHE/bin/test-node-$hash/agw-test-node
mkdir -p "$CACHE"
exec 9>"$CACHE/.build-test-node.lock"
flock 9   # one build at a time: concurrent test runs share the cache
if [[ ! -x $out ]]; then
  echo "build-test-node: building agw-test-node $hash" >&2
  mkdir -p "$(dirname "$out")"
  GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-local} CGO_ENABLED=0 \
    go build -trimpath -ldflags "-s -w" -o "$out.tmp" . >&2
  mv "$out.tmp" "$out"
fi
echo "$out"
