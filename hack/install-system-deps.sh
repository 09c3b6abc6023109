#!/usr/bin/env bash
# Installs what `make test` and `make demo` need from the system, only when it is missing:
# PostgreSQL server binaries (Debian's `postgresql` package), python3-venv, Go (a build tool
# for the test cluster only; with GOTOOLCHAIN=auto any Go >= 1.21 fetches the pinned toolchain
# from the Go module proxy). Called by the Makefile. Needs root (or sudo) to install.
#
# Go comes from apt when the distribution's golang-go is 1.21 or newer (Ubuntu 24.04, Debian
# 13); older ones (Debian 12 has 1.19, which cannot build the cluster and knows no
# GOTOOLCHAIN) are not used: the pinned Go toolchain goes to /usr/local/go instead, where the
# Makefile looks for it, fetched from the Go module proxy as GOTOOLCHAIN=auto fetches one (the
# module golang.org/toolchain; the proxy is where the cluster's sources come from too) and
# checked against the sha256 pinned here.
set -euo pipefail
log() { printf '[system-deps] %s\n' "$*" >&2; }

GO_MIN=1.21
GO_ROOT=${TABLESYNC_GO_ROOT:-/usr/local/go}
GO_PROXY=${TABLESYNC_GO_PROXY:-https://proxy.golang.org}
# Pinned toolchain (bump here only): version and the sha256 of the proxy's zip per arch.
GO_TOOLCHAIN=${TABLESYNC_GO_TOOLCHAIN:-go1.26.10}
declare -A GO_SHA256=(
  [amd64]=f64ecb0807852be2c98899561c45288a9ad57f4e88f3cd002ffabeccbd03bfe1
  [arm64]=195f18be92553fb272b9c4f9fca6e67b6a04d8831bf6c4b918ac70982fadb444
)

# version_at_least HAVE WANT: true when dotted version HAVE >= WANT.
version_at_least() { [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1) == "$2" ]]; }

# A Go that can build the cluster: on PATH or in $GO_ROOT, version >= $GO_MIN.
have_go() {
  local go version
  for go in "$(command -v go || true)" "$GO_ROOT/bin/go"; do
    [[ -n $go && -x $go ]] || continue
    version=$("$go" env GOVERSION 2>/dev/null || true)
    version=${version#go}
    [[ -n $version ]] && version_at_least "$version" "$GO_MIN" && return 0
  done
  return 1
}

# The version of golang-go that apt would install ("2:1.19~1" -> 1.19), empty if none.
apt_go_version() {
  command -v apt-cache >/dev/null || return 0
  apt-cache policy golang-go 2>/dev/null \
    | awk '/Candidate:/ {v = $2; sub(/^[0-9]+:/, "", v); sub(/[~+-].*/, "", v); print v}' \
    | grep -v '(none)' || true
}

# Unpack the pinned Go toolchain from the Go module proxy into $GO_ROOT.
install_go_from_proxy() {
  local arch
  arch=$(uname -m); arch=${arch/x86_64/amd64}; arch=${arch/aarch64/arm64}
  local sha=${TABLESYNC_GO_SHA256:-${GO_SHA256[$arch]:-}}
  if [[ -z $sha ]]; then
    log "missing: Go >= $GO_MIN, and no pinned toolchain for linux/$arch: install Go yourself"
    exit 1
  fi
  local module="golang.org/toolchain@v0.0.1-$GO_TOOLCHAIN.linux-$arch"
  log "installing Go $GO_TOOLCHAIN from $GO_PROXY into $GO_ROOT (apt's golang-go is older" \
      "than $GO_MIN)"
  $SUDO python3 - "$GO_PROXY/golang.org/toolchain/@v/v0.0.1-$GO_TOOLCHAIN.linux-$arch.zip" \
    "$module/" "$sha" "$GO_ROOT" <<'PY'
import hashlib, os, shutil, sys, tempfile, urllib.request, zipfile
url, prefix, sha256, root = sys.argv[1:]
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "go.zip")
    with urllib.request.urlopen(url, timeout=600) as response, open(path, "wb") as out:
        shutil.copyfileobj(response, out)
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if digest != sha256:
        sys.exit(f"[system-deps] {url}: sha256 {digest}, {sha256} pinned; nothing installed")
    unpacked = os.path.join(tmp, "go")
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename
            if not name.startswith(prefix) or ".." in name.split("/") or name.endswith("/"):
                continue
            target = os.path.join(unpacked, name[len(prefix):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with archive.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            # the module zip keeps no modes: the go command marks these executable itself
            parts = name[len(prefix):].split("/")
            if parts[0] == "bin" or parts[:2] == ["pkg", "tool"]:
                os.chmod(target, 0o755)
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.dirname(root) or ".", exist_ok=True)
    shutil.move(unpacked, root)
PY
  log "installed $("$GO_ROOT/bin/go" env GOVERSION)"
}

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; fi
fi

need=()
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null; then
  need+=(postgresql postgresql-contrib)
fi
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  need+=(python3-venv)
fi
go_from_proxy=false
if ! have_go; then
  apt_go=$(apt_go_version)
  if [[ -n $apt_go ]] && version_at_least "$apt_go" "$GO_MIN"; then
    need+=(golang-go)
  else
    go_from_proxy=true
  fi
fi
declare -A package_of=([openssl]=openssl [unshare]=util-linux [runuser]=util-linux [ip]=iproute2)
for tool in openssl unshare runuser ip; do
  command -v "$tool" >/dev/null || need+=("${package_of[$tool]}")
done

if [[ ${#need[@]} -eq 0 ]] && ! $go_from_proxy; then
  log "all present (postgresql, python3-venv, go, openssl, util-linux, iproute2)"
  exit 0
fi
if [[ ${#need[@]} -gt 0 ]]; then
  if ! command -v apt-get >/dev/null; then
    log "missing: ${need[*]}; install them with your package manager (Debian/Ubuntu names shown)"
    exit 1
  fi
  if [[ $(id -u) -ne 0 && -z $SUDO ]]; then
    log "missing: ${need[*]}; run as root or install sudo: apt-get install ${need[*]}"
    exit 1
  fi
  log "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian starts a cluster on install; the tests start their own on free ports.
  if command -v pg_ctlcluster >/dev/null; then
    for c in $(pg_lsclusters -h 2>/dev/null | awk '{print $1"/"$2}'); do
      $SUDO pg_ctlcluster ${c/\// } stop 2>/dev/null || true
    done
  fi
fi
if $go_from_proxy; then
  if [[ $(id -u) -ne 0 && -z $SUDO && ! -w $(dirname "$GO_ROOT") ]]; then
    log "missing: Go >= $GO_MIN; run as root or install sudo, or install Go into $GO_ROOT"
    exit 1
  fi
  install_go_from_proxy
fi
log "done"
