#!/usr/bin/env bash
# Builds the container images with podman (`make images`):
#   localhost/vidscan-server:TAG   Dockerfile (the gRPC server; also `worker`, `migrate`)
#   localhost/vidscan-gateway:TAG  gateway/Containerfile (static binary on scratch)
# and prints their sizes.
#
# The server's base image is the Dockerfile's BASE_IMAGE build argument: the official
# python:3.11-slim-bookworm unless VIDSCAN_BASE_IMAGE names another. Where Docker Hub
# cannot be reached (this project's CI machine), VIDSCAN_BASE_IMAGE=local (the default
# here) builds a Debian bookworm base with debootstrap once (python3, python3-venv,
# python-is-python3, ca-certificates) and caches it as localhost/vidscan-base:bookworm.
#
# Env: VIDSCAN_BASE_IMAGE (local | an image reference), VIDSCAN_IMAGE_TAG (default dev),
#      VIDSCAN_DEBIAN_MIRROR (default http://deb.debian.org/debian).
# podman runs with --runtime runc (crun cannot set RLIMIT_NPROC on this machine) and
# builds with --network host (RUN steps reach the package registries).
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${VIDSCAN_IMAGE_TAG:-dev}
BASE=${VIDSCAN_BASE_IMAGE:-local}
MIRROR=${VIDSCAN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
LOCAL_BASE=localhost/vidscan-base:bookworm
SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
log() { echo "build-images: $*" >&2; }

# netavark + aardvark-dns: container DNS on compose networks (the stack test's
# replicas share one name); catatonit: the infra process of `podman kube play` pods.
if ! command -v podman >/dev/null || ! command -v runc >/dev/null \
   || [[ ! -x /usr/lib/podman/netavark || ! -x /usr/lib/podman/aardvark-dns ]] \
   || ! command -v catatonit >/dev/null; then
  log "apt-get install podman runc debootstrap netavark aardvark-dns catatonit"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    podman runc debootstrap uidmap slirp4netns fuse-overlayfs netavark aardvark-dns catatonit \
    >/dev/null
fi
podman() { command podman --runtime runc "$@"; }

if [[ $BASE == local ]]; then
  BASE=$LOCAL_BASE
  if ! podman image exists "$BASE"; then
    command -v debootstrap >/dev/null || $SUDO env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    root=$(mktemp -d)
    trap '$SUDO rm -rf "$root"' EXIT
    log "debootstrap bookworm into $root (once; cached as $BASE)"
    start=$SECONDS
    $SUDO debootstrap --variant=minbase \
      --include=python3,python3-venv,python-is-python3,ca-certificates \
      bookworm "$root/rootfs" "$MIRROR" >"$root/debootstrap.log" 2>&1 \
      || { tail -20 "$root/debootstrap.log" >&2; exit 1; }
    $SUDO rm -rf "$root/rootfs/var/cache/apt/archives/"*.deb "$root/rootfs/var/lib/apt/lists/"*
    $SUDO tar -C "$root/rootfs" -c . | podman import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
    log "base image $BASE built in $((SECONDS - start)) s"
  fi
fi

# The host's CA bundle is mounted into the RUN steps (never copied into the image), so
# that pip trusts what the host trusts (e.g. a TLS-intercepting proxy's CA).
CA=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
trust=()
[[ -f $CA ]] && trust=(--volume "$CA:/etc/ssl/certs/ca-certificates.crt:ro")

start=$SECONDS
log "building localhost/vidscan-server:$TAG on $BASE"
podman build --network host --format docker "${trust[@]}" --build-arg "BASE_IMAGE=$BASE" \
  -t "localhost/vidscan-server:$TAG" -f Dockerfile . >&2
log "server image built in $((SECONDS - start)) s"

start=$SECONDS
context=$(mktemp -d)
./scripts/build-gateway.sh --gen-only >/dev/null
(cd gateway && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$context/vidscan-gateway" ./cmd/vidscan-gateway)
cp /etc/ssl/certs/ca-certificates.crt "$context/"
cp gateway/Containerfile "$context/"
podman build --network host --format docker -t "localhost/vidscan-gateway:$TAG" "$context" >&2
rm -rf "$context"
log "gateway image built in $((SECONDS - start)) s"

# Each rebuild leaves the previous image untagged: drop those (layers still in use stay).
podman image prune -f >/dev/null
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' \
  | grep -E "^localhost/vidscan-(server|gateway|base):" || true
