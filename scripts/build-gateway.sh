#!/usr/bin/env bash
# Builds the REST gateway (grpc-gateway v2 reverse proxy in front of the gRPC server):
#   1. installs the protoc plugins it needs with `go install` into the tool dir
#      ${VIDSCAN_TOOLS:-$HOME/.cache/vidscan/bin} (only when missing or at another version;
#      protoc-gen-go and the grpc-gateway plugins follow the versions in gateway/go.mod),
#   2. lays out .build/googleapis with ./scripts/proto.sh when it is missing,
#   3. generates gateway/gen/ (Go stubs, gateway handlers, OpenAPI v2) from protos/vidscan
#      with buf.gen.go.yaml,
#   4. bundles the upload page (gateway/web: `npm ci` from the committed lockfile, then
#      esbuild) into gateway/internal/page/static/app.js, which the binary embeds,
#   5. builds gateway/bin/vidscan-gateway.
# Usage: scripts/build-gateway.sh [--gen-only]   (--gen-only: steps 1-4, no binary)
set -euo pipefail
cd "$(dirname "$0")/.."

BUF=${BUF:-.venv/bin/buf}
TOOLS=${VIDSCAN_TOOLS:-$HOME/.cache/vidscan/bin}
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2   # google.golang.org/grpc/cmd/protoc-gen-go-grpc (own module)

command -v go >/dev/null || { echo "build-gateway: go is not on PATH" >&2; exit 1; }
command -v npm >/dev/null || { echo "build-gateway: npm (Node.js) is not on PATH; the upload page is bundled with it" >&2; exit 1; }
[ -x "$BUF" ] || BUF=$(command -v buf) || { echo "build-gateway: buf not found (.venv/bin/buf)" >&2; exit 1; }

modver() { (cd gateway && go list -m -f '{{.Version}}' "$1"); }
PROTOBUF_VERSION=$(modver google.golang.org/protobuf)
GATEWAY_VERSION=$(modver github.com/grpc-ecosystem/grpc-gateway/v2)

# install BINARY PACKAGE VERSION: go install PACKAGE@VERSION unless TOOLS/BINARY is that version.
install() {
  local bin=$1 pkg=$2 want=$3 have=""
  if [ -x "$TOOLS/$bin" ]; then
    have=$(go version -m "$TOOLS/$bin" 2>/dev/null | awk '$1 == "mod" { print $3; exit }')
  fi
  if [ "$have" != "$want" ]; then
    echo "build-gateway: installing $bin $want into $TOOLS"
    GOBIN="$TOOLS" go install "$pkg@$want"
  fi
}
mkdir -p "$TOOLS"
install protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOBUF_VERSION"
install protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"
install protoc-gen-grpc-gateway github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway "$GATEWAY_VERSION"
install protoc-gen-openapiv2 github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2 "$GATEWAY_VERSION"

[ -f .build/googleapis/google/api/annotations.proto ] || ./scripts/proto.sh

rm -rf gateway/gen
PATH="$TOOLS:$PATH" "$BUF" generate --template buf.gen.go.yaml --path protos/vidscan
echo "build-gateway: generated $(find gateway/gen -type f | wc -l) files into gateway/gen"

# The page's packages, installed again only when the lockfile changed. --ignore-scripts:
# nothing needs an install script (esbuild's binary is its platform package).
web=gateway/web
if [ ! -f "$web/node_modules/.package-lock.json" ] || [ "$web/package-lock.json" -nt "$web/node_modules/.package-lock.json" ]; then
  (cd "$web" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
(cd "$web" && npm run --silent build)
echo "build-gateway: bundled the upload page into gateway/internal/page/static/app.js"

[ "${1:-}" = "--gen-only" ] && exit 0
(cd gateway && go build -trimpath -ldflags="-s -w" -o bin/vidscan-gateway ./cmd/...)
echo "build-gateway: built gateway/bin/vidscan-gateway"
