#!/usr/bin/env bash
# Builds the peers of the cluster tests once per version, from their Go modules:
#   kube-apiserver, kube-controller-manager  (k8s.io/kubernetes, module in kube/)
#   etcd                                     (go.etcd.io/etcd/server/v3, module in etcd/)
# into ${XDG_CACHE_HOME:-$HOME/.cache}/vmigrate/peers/<name>-<version>/<name>.
# The go.mod/go.sum of each build module are committed, so a build is reproducible.
# Not built: CDI's cdi-uploadserver / cdi-apiserver. The Go module proxy refuses
# kubevirt.io/containerized-data-importer (403 for its version list and every version asked), so
# the tests use stand-ins for them (see docs/cluster-tests.md).
# First build: 51 min wall on the shared 2-core machine while five other builds ran (about 11 min
# of CPU); afterwards only the existence of the binaries is checked.
# Go: Kubernetes v1.36 is built with Go 1.26 (its .go-version says 1.26.5); the machine's
# Go 1.26.x is used with GOTOOLCHAIN=local so no newer toolchain is switched in (Go 1.27
# was seen to build an API server whose /openapi/v2 is malformed).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=/dev/null
. "$here/versions.env"
peers=${XDG_CACHE_HOME:-$HOME/.cache}/vmigrate/peers
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0
gov=$(go env GOVERSION)
case "$gov" in
  go1.26.*) ;;
  *) echo "build-kube.sh: need Go 1.26.x (the line Kubernetes ${KUBE_VERSION} is built with), have $gov" >&2; exit 1 ;;
esac

build() { # name version module-dir package
  local name=$1 version=$2 dir=$3 pkg=$4
  local out="$peers/$name-$version/$name"
  if [ -x "$out" ]; then echo "peer $name $version: cached at $out"; return; fi
  mkdir -p "$(dirname "$out")"
  local start=$SECONDS
  echo "peer $name $version: building $pkg (first time; cached afterwards)"
  (cd "$here/$dir" && nice -n 10 go build -trimpath -o "$out.tmp" "$pkg")
  mv "$out.tmp" "$out"
  echo "peer $name $version: built in $((SECONDS - start)) s"
}

build etcd "$ETCD_VERSION" etcd go.etcd.io/etcd/server/v3
build kube-apiserver "$KUBE_VERSION" kube k8s.io/kubernetes/cmd/kube-apiserver
build kube-controller-manager "$KUBE_VERSION" kube k8s.io/kubernetes/cmd/kube-controller-manager
