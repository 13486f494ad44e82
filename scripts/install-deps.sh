#!/usr/bin/env bash
# Install the real servers that tests and benchmarks start (tests/support/services.py):
# PostgreSQL, Redis and Chromium from apt, MinIO built with `go install` and Jaeger (the OTLP
# receiver of the tracing test) built from the pinned tools/jaeger/go.mod, into a tool dir
# shared by every clone on this machine. Idempotent and silent when everything is already
# present. A fresh machine spends most of its time here on Jaeger (about 12 min on 2 cores).
#
# Env:
#   VIDSCAN_TOOLS          tool dir for Go-built binaries (default ~/.cache/vidscan/bin)
#   VIDSCAN_MINIO_VERSION  module version for minio (default latest)
#   VIDSCAN_INSTALL_MC=1   also build the MinIO client `mc` (a debug aid; ~30 s more)
#   VIDSCAN_PG_USER        user that runs postgres when tests run as root (default postgres)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${VIDSCAN_TOOLS:-$HOME/.cache/vidscan/bin}"
MINIO_VERSION="${VIDSCAN_MINIO_VERSION:-latest}"
PG_USER="${VIDSCAN_PG_USER:-postgres}"

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

log() { echo "install-deps: $*" >&2; }

apt_updated=0
apt_install() {
  log "apt-get install $*"
  if [[ $apt_updated -eq 0 ]]; then
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
    >/dev/null
}

have_postgres() {
  command -v postgres >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

go_install() {  # go_install NAME MODULE@VERSION: build into $TOOLS unless already there
  local name=$1 module=$2 start
  [[ -x "$TOOLS/$name" ]] && return 0
  command -v go >/dev/null 2>&1 || { log "go is required to build $name"; exit 1; }
  mkdir -p "$TOOLS"
  log "go install $module -> $TOOLS (can take minutes)"
  start=$SECONDS
  # GOTOOLCHAIN=local: never download a toolchain; fail loudly if the module needs a newer Go.
  GOBIN="$TOOLS" GOTOOLCHAIN=local go install "$module"
  log "built $name in $((SECONDS - start))s"
}

have_postgres || apt_install postgresql
command -v redis-server >/dev/null 2>&1 || apt_install redis-server
# Headless Chromium for the upload page's browser tests (tests/test_upload_page.py);
# Playwright drives this one and never downloads a browser of its own.
command -v chromium >/dev/null 2>&1 || apt_install chromium fonts-dejavu-core

# postgres refuses to run as root; services.py then runs it as $PG_USER.
if [[ $(id -u) -eq 0 ]] && ! id -u "$PG_USER" >/dev/null 2>&1; then
  log "creating system user $PG_USER"
  useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
fi

go_build_tool() {  # go_build_tool NAME PACKAGE: a program pinned by tools/NAME/go.mod
  local name=$1 package=$2 start
  [[ -x "$TOOLS/$name" ]] && return 0
  command -v go >/dev/null 2>&1 || { log "go is required to build $name"; exit 1; }
  mkdir -p "$TOOLS"
  log "go build $package (pinned in tools/$name/go.mod) -> $TOOLS (can take minutes)"
  start=$SECONDS
  # `go install pkg@version` refuses modules with replace directives (Jaeger has some);
  # a module of our own that requires it as a tool builds it at the pinned version.
  (cd "$ROOT/tools/$name" && GOTOOLCHAIN=local go build -o "$TOOLS/$name.tmp" "$package")
  mv "$TOOLS/$name.tmp" "$TOOLS/$name"
  log "built $name in $((SECONDS - start))s"
}

go_install minio "github.com/minio/minio@$MINIO_VERSION"
go_build_tool jaeger github.com/jaegertracing/jaeger/cmd/jaeger
if [[ "${VIDSCAN_INSTALL_MC:-0}" == 1 ]]; then
  go_install mc "github.com/minio/mc@latest"
fi
