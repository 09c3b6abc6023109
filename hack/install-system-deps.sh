#!/usr/bin/env bash
# Installs what `make test` and `make demo` need from the system, only when it is missing:
# PostgreSQL server binaries (Debian's `postgresql` package), python3-venv, Go (a build tool
# for the test cluster only; with GOTOOLCHAIN=auto any Go >= 1.21 fetches the pinned toolchain
# from the Go module proxy). Called by the Makefile. Needs root (or sudo) to install.
set -euo pipefail
log() { printf '[system-deps] %s\n' "$*" >&2; }

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
if ! command -v go >/dev/null && [[ ! -x /usr/local/go/bin/go ]]; then
  need+=(golang-go)
fi
for tool in openssl unshare runuser; do
  command -v "$tool" >/dev/null || need+=("$([[ $tool == openssl ]] && echo openssl || echo util-linux)")
done

if [[ ${#need[@]} -eq 0 ]]; then
  log "all present (postgresql, python3-venv, go, openssl, util-linux)"
  exit 0
fi
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
log "done"
