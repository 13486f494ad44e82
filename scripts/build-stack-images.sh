#!/usr/bin/env bash
# Builds local stand-ins for the third-party images of deploy/compose.yaml, for machines
# that cannot pull them (this project's CI cannot reach Docker Hub, quay.io or nvcr.io):
#   localhost/vidscan-stack-postgres:dev   Debian's PostgreSQL 15
#   localhost/vidscan-stack-redis:dev      Debian's redis-server
#   localhost/vidscan-stack-minio:dev      the minio binary scripts/install-deps.sh builds
#   localhost/vidscan-stack-triton:dev     Triton from the nvidia-pytriton wheel, laid out
#                                          by scripts/install-triton.sh (CPU, python backend)
# all on the local Debian bookworm base that scripts/build-images.sh makes. Prints, last,
# the environment that points compose.yaml at them (POSTGRES_IMAGE=... one per line).
# Containerfiles: deploy/compose/local/. Env: VIDSCAN_TOOLS (where minio is, default
# ~/.cache/vidscan/bin), VIDSCAN_TOOLS_ROOT (where the pytriton wheel may be cached).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=localhost/vidscan-base:bookworm
TOOLS=${VIDSCAN_TOOLS:-$HOME/.cache/vidscan/bin}
TOOLS_ROOT=${VIDSCAN_TOOLS_ROOT:-$HOME/.cache/vidscan}
log() { echo "build-stack-images: $*" >&2; }
podman() { command podman --runtime runc "$@"; }

podman image exists "$BASE" || VIDSCAN_BASE_IMAGE=local ./scripts/build-images.sh >/dev/null
[[ -x $TOOLS/minio ]] || ./scripts/install-deps.sh

CA=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
trust=()
[[ -f $CA ]] && trust=(--volume "$CA:/etc/ssl/certs/ca-certificates.crt:ro")

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp deploy/compose/local/* "$context/"
cp "$TOOLS/minio" "$context/minio"
cp scripts/install-triton.sh "$context/"
mkdir -p "$context/downloads"
# The wheel the tests downloaded, if any (install-triton.sh checks its sha256).
cp "$TOOLS_ROOT"/downloads/nvidia_pytriton-*.whl "$context/downloads/" 2>/dev/null || true

for name in postgres redis minio triton; do
  start=$SECONDS
  podman build --network host --format docker "${trust[@]}" --build-arg "BASE_IMAGE=$BASE" \
    -t "localhost/vidscan-stack-$name:dev" -f "$context/$name.Containerfile" "$context" >&2
  log "$name built in $((SECONDS - start)) s"
done
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^localhost/vidscan-stack-' >&2 || true
for name in postgres redis minio triton; do
  echo "${name^^}_IMAGE=localhost/vidscan-stack-$name:dev"
done
