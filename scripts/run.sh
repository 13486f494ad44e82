#!/usr/bin/env bash
# `make run`: vidscan on its embedded default — SQLite, a local object store and
# in-memory sessions under ./var — with a real Triton next to it for detection and
# the REST gateway in front when Go is present. No external server is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export VIDSCAN_DATA_DIR=${VIDSCAN_DATA_DIR:-var}
listen=${VIDSCAN_GRPC_LISTEN:-127.0.0.1:50051}
export VIDSCAN_GRPC_LISTEN=$listen
gateway_listen=${VIDSCAN_GATEWAY_LISTEN:-127.0.0.1:8080}
export VIDSCAN_METRICS_LISTEN=${VIDSCAN_METRICS_LISTEN:-127.0.0.1:9464}
gateway_metrics=${VIDSCAN_GATEWAY_METRICS_LISTEN:-127.0.0.1:9465}
export VIDSCAN_LOG_FORMAT=${VIDSCAN_LOG_FORMAT:-text}
triton_grpc_port=${VIDSCAN_TRITON_GRPC_PORT:-8001}
mkdir -p "$VIDSCAN_DATA_DIR"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait || true; }
trap cleanup EXIT INT TERM

# Detection: a local tritonserver on the bundled reference models, unless TRITON_URL
# already points at one.
if [ -z "${TRITON_URL:-}" ]; then
  if PYTHON=$PY ./scripts/install-triton.sh >"$VIDSCAN_DATA_DIR/triton-install.log" 2>&1; then
    $PY models/build_reference_models.py >/dev/null
    triton_home=$(tail -n 1 "$VIDSCAN_DATA_DIR/triton-install.log")
    "$triton_home/run-tritonserver" --model-repository="$PWD/models" \
      --grpc-port="$triton_grpc_port" --http-port=$((triton_grpc_port - 1)) \
      --metrics-port=$((triton_grpc_port + 1)) --allow-gpu-metrics=false \
      --disable-auto-complete-config --exit-timeout-secs=5 \
      >"$VIDSCAN_DATA_DIR/triton.log" 2>&1 &
    pids+=($!)
    export TRITON_URL=127.0.0.1:$triton_grpc_port
    echo "Triton: starting on $TRITON_URL (log: $VIDSCAN_DATA_DIR/triton.log)"
  else
    echo "Triton: could not be installed (see $VIDSCAN_DATA_DIR/triton-install.log);"
    echo "        uploads are stored and answer PROCESSING until a detector is configured."
  fi
fi

# REST gateway for the dashboard (and the upload page at /), when Go and npm are available.
if command -v go >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  ./scripts/build-gateway.sh >"$VIDSCAN_DATA_DIR/gateway-build.log" 2>&1
  gateway/bin/vidscan-gateway -listen "$gateway_listen" -upstream "$listen" \
    -metrics-listen "$gateway_metrics" >"$VIDSCAN_DATA_DIR/gateway.log" 2>&1 &
  pids+=($!)
  echo "REST gateway: http://$gateway_listen (upload page at /, OpenAPI at /openapi.json, metrics at http://$gateway_metrics/metrics)"
else
  echo "REST gateway: not started — it needs Go and npm (gRPC still works)."
fi

token=$($PY -m server.cli mint-token demo-user)
cat <<EOT

vidscan (embedded default) on $listen — data under $VIDSCAN_DATA_DIR/
Metrics: http://$VIDSCAN_METRICS_LISTEN/metrics (Grafana dashboard: deploy/grafana/vidscan.json)

  A token for user demo-user:  $token
  Mint one for another user:   .venv/bin/vidscan-server mint-token alice
  Upload with the CLI:         VIDSCAN_TOKEN=$token .venv/bin/vidscan upload path/to/video.mp4
  With grpcurl (reflection):   grpcurl -plaintext -H "authorization: Bearer \$TOKEN" \\
                                 -d '{}' $listen vidscan.v1.UploadService/CreateUploadSession
  Upload page (browser):       http://$gateway_listen/  (paste the token above)
  Over REST:                   curl -s -X POST -H "Authorization: Bearer \$TOKEN" \\
                                 http://$gateway_listen/v1/dashboard/upload/sessions -d '{}'

The bundled detection models are REFERENCE models: their scores mean nothing.
Stop with Ctrl-C (uploads in flight get ${VIDSCAN_SHUTDOWN_GRACE_SECONDS:-30} s to finish).
EOT
$PY -m server.cli serve &
server_pid=$!
pids+=($server_pid)
wait "$server_pid"
