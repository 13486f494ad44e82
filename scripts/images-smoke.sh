#!/usr/bin/env bash
# Runs the images `make images` built and checks them for real: the server on its
# embedded default (no external services) and the gateway in the server's network
# namespace, both healthy by their own HEALTHCHECK (`podman healthcheck run`), the
# upload page served, and one upload through the gateway's REST route stored with a
# SHA-256 equal to the file's. Removes the containers whatever happens.
#
# podman: --runtime runc, and explicit nofile/nproc limits (this machine refuses the
# maximum podman asks for by default: "error setting rlimit type 6/7").
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${VIDSCAN_IMAGE_TAG:-dev}
P=(podman --runtime runc)
LIMITS=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=16384:16384)
name=vidscan-smoke-$$
port=$(.venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
log() { echo "images-smoke: $*" >&2; }
errors=$(mktemp)
cleanup() {
  "${P[@]}" rm -f -t 2 "$name-gateway" >/dev/null 2>&1 || true
  "${P[@]}" rm -f -t 2 "$name-server" >/dev/null 2>&1 || true
  rm -f "$errors"
}
trap cleanup EXIT

# Without systemd, podman cannot schedule health-check timers and says so at each run;
# the checks themselves (healthcheck run) work: that line is dropped. (A file, not a
# pipe: conmon keeps the stderr it inherits open for the container's lifetime.)
quiet() {
  local rc=0
  "$@" 2>"$errors" || rc=$?
  grep -v 'systemd connection' "$errors" >&2 || true
  return "$rc"
}

secret=$(head -c 24 /dev/urandom | base64)
quiet "${P[@]}" run -d "${LIMITS[@]}" --name "$name-server" -p "127.0.0.1:$port:8080" \
  -e "VIDSCAN_JWT_SECRET=$secret" "localhost/vidscan-server:$TAG" >/dev/null
quiet "${P[@]}" run -d "${LIMITS[@]}" --name "$name-gateway" --network "container:$name-server" \
  -e VIDSCAN_GATEWAY_UPSTREAM=127.0.0.1:50051 "localhost/vidscan-gateway:$TAG" >/dev/null

for container in server gateway; do
  for _ in $(seq 60); do
    "${P[@]}" healthcheck run "$name-$container" >/dev/null 2>&1 && break
    sleep 1
  done
  "${P[@]}" healthcheck run "$name-$container" >/dev/null \
    || { "${P[@]}" logs "$name-$container" | tail -20 >&2; log "$container is not healthy"; exit 1; }
  log "$container healthy"
done

base=http://127.0.0.1:$port
[[ $(curl -s -o /dev/null -w '%{http_code}' "$base/") == 200 ]] || { log "no upload page at /"; exit 1; }
token=$("${P[@]}" exec "$name-server" vidscan-server mint-token smoke-user)
clip=$(mktemp --suffix .mp4)
.venv/bin/python - "$clip" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "tests")
from support.videos import SPECS, make_video
make_video(Path(sys.argv[1]), spec=SPECS["mp4"], seconds=1)
PY
session=$(curl -sf -X POST -H "Authorization: Bearer $token" "$base/v1/dashboard/upload/sessions" -d '{}' \
  | .venv/bin/python -c "import json, sys; print(json.load(sys.stdin)['session_id'])")
hash=$(curl -sf -H "Authorization: Bearer $token" -F "file=@$clip;type=video/mp4" \
  "$base/v1/dashboard/upload/$session" | .venv/bin/python -c "import json, sys; print(json.load(sys.stdin)['file_hash'])")
want=$(sha256sum "$clip" | cut -d' ' -f1)
rm -f "$clip"
[[ $hash == "$want" ]] || { log "stored hash $hash is not the file's $want"; exit 1; }
log "upload through the gateway stored (sha256 $hash)"
log "OK"
