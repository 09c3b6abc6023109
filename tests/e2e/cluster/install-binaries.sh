#!/usr/bin/env bash
# Builds the e2e control plane from the Go module proxy and caches it outside the repo.
#
# Called by the Makefile (`make cluster-binaries`, and through it cluster-up, e2e, test, demo).
# Every binary lands in $TABLESYNC_CACHE/bin/<name>-<version>/ (default ~/.cache/tablesync),
# so a second call is a no-op and a version bump builds beside the old one. Prints the time
# each build took. Prints the bin directory for the pinned set on the last line of stdout.
#
# Versions (pinned; bump here only):
#   Kubernetes  kube-apiserver, kube-controller-manager  v1.36.3
#   etcd        server                                   v3.6.16
#   MinIO       last release (upstream archived)         v0.0.0-20260212201848-7aac2a2c5b7c
#   Helm        helm                                     v3.22.0
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
MINIO_VERSION=${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}
HELM_VERSION=${HELM_VERSION:-v3.22.0}

CACHE=${TABLESYNC_CACHE:-$HOME/.cache/tablesync}
BIN_ROOT=$CACHE/bin
WORK=$CACHE/build
mkdir -p "$BIN_ROOT" "$WORK"
export CGO_ENABLED=0
export GOFLAGS="-mod=mod"
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto}

log() { printf '[cluster-binaries] %s\n' "$*" >&2; }

# A Go >= 1.21 (older ones know no GOTOOLCHAIN and fail minutes in with compile errors): the
# one on PATH, else $TABLESYNC_GO_ROOT's (/usr/local/go: where `make system-deps` puts its pinned
# toolchain).
require_go() {
  local go version found=""
  for go in "$(command -v go || true)" "${TABLESYNC_GO_ROOT:-/usr/local/go}/bin/go"; do
    [[ -n $go && -x $go ]] || continue
    version=$("$go" env GOVERSION 2>/dev/null || true)
    version=${version#go}
    if [[ -n $version && $(printf '%s\n1.21\n' "$version" | sort -V | head -1) == 1.21 ]]; then
      export PATH=$(dirname "$go"):$PATH
      return
    fi
    found+=" $go (${version:-unknown version})"
  done
  if [[ -n $found ]]; then
    log "Go too old to build the test cluster:$found; it needs Go >= 1.21 (GOTOOLCHAIN then fetches the pinned one): run \`make system-deps\`"
  else
    log "go is not on PATH: run \`make system-deps\`, or install Go >= 1.21 (it is a build tool for the test cluster only)"
  fi
  exit 2
}

# build_once NAME VERSION FUNCTION: runs FUNCTION DEST unless DEST/.complete exists.
build_once() {
  local name=$1 version=$2 fn=$3
  local dest=$BIN_ROOT/$name-$version
  if [[ -f $dest/.complete ]]; then
    log "$name $version: cached in $dest"
    return
  fi
  require_go  # only a build needs Go: a warm cache works without it
  log "$name $version: building (cold builds take minutes; progress below)"
  local start=$SECONDS
  rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
  "$fn" "$dest.tmp"
  rm -rf "$dest"; mv "$dest.tmp" "$dest"; touch "$dest/.complete"
  log "$name $version: built in $((SECONDS - start)) s"
}

build_kubernetes() {
  local out=$1 mod=$WORK/kubernetes-$K8S_VERSION minor
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local staging=v0.${K8S_VERSION#v1.}
  mkdir -p "$mod"
  local upstream
  upstream=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  {
    echo "module tablesync.local/kubernetes-build"
    grep -E '^go [0-9]' "$upstream"
    grep -E '^godebug ' "$upstream" || true
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo "replace ("
    # Every staging module upstream replaces with ./staging/... gets its published tag.
    grep -E '=> \./staging/' "$upstream" | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > "$mod/go.mod"
  log "kubernetes: $(grep -c '=> k8s.io' "$mod/go.mod") staging modules pinned to $staging"
  local pkg="k8s.io/component-base/version" cgo="k8s.io/client-go/pkg/version"
  local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local ld="-s -w"
  for p in $pkg $cgo; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  (cd "$mod" && go mod download k8s.io/kubernetes && \
    go build -v -trimpath -tags selinux,notest -ldflags "$ld" -o "$out/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager 2>&1 \
      | awk '{n++; if (n % 200 == 0) printf "[cluster-binaries] kubernetes: %d packages compiled\n", n > "/dev/stderr"}')
  [[ -x $out/kube-apiserver && -x $out/kube-controller-manager ]]
}

build_etcd() {
  local out=$1 mod=$WORK/etcd-$ETCD_VERSION
  mkdir -p "$mod"
  printf 'module tablesync.local/etcd-build\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > "$mod/go.mod"
  (cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3)
}

build_minio() {
  local out=$1
  GOBIN=$out go install -trimpath -ldflags "-s -w" "github.com/minio/minio@$MINIO_VERSION"
}

build_helm() {
  local out=$1
  GOBIN=$out go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

build_once etcd "$ETCD_VERSION" build_etcd
build_once helm "$HELM_VERSION" build_helm
build_once minio "$MINIO_VERSION" build_minio
build_once kubernetes "$K8S_VERSION" build_kubernetes

# One directory of links for the pinned set, so callers put a single path on PATH.
SET=$BIN_ROOT/set-k8s$K8S_VERSION-etcd$ETCD_VERSION-helm$HELM_VERSION
mkdir -p "$SET"
ln -sf "$BIN_ROOT/kubernetes-$K8S_VERSION/kube-apiserver" "$SET/kube-apiserver"
ln -sf "$BIN_ROOT/kubernetes-$K8S_VERSION/kube-controller-manager" "$SET/kube-controller-manager"
ln -sf "$BIN_ROOT/etcd-$ETCD_VERSION/etcd" "$SET/etcd"
ln -sf "$BIN_ROOT/minio-$MINIO_VERSION/minio" "$SET/minio"
ln -sf "$BIN_ROOT/helm-$HELM_VERSION/helm" "$SET/helm"
echo "$SET"
