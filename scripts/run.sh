#!/usr/bin/env bash
# `make run`: vidscan on its embedded default (SQLite, a local object store and
# in-memory sessions under ./var), plus Triton and the REST gateway when available.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export VIDSCAN_DATA_DIR=${VIDSCAN_DATA_DIR:-var}
listen=${VIDSCAN_GRPC_LISTEN:-127.0.0.1:50051}
token=$($PY -m server.cli mint-token demo-user)
cat <<EOT

vidscan (embedded default) on $listen — data under $VIDSCAN_DATA_DIR/

  Mint a token for a user:     .venv/bin/vidscan-server mint-token alice
  Upload with the CLI:         VIDSCAN_TOKEN=\$(.venv/bin/vidscan-server mint-token alice) \\
                                 .venv/bin/vidscan upload path/to/video.mp4
  With grpcurl (reflection):   grpcurl -plaintext -H "authorization: Bearer $token" \\
                                 -d '{}' $listen vidscan.v1.UploadService/CreateUploadSession

Stop with Ctrl-C (in-flight uploads get ${VIDSCAN_SHUTDOWN_GRACE_SECONDS:-30} s to finish).
EOT
exec $PY -m server.cli serve
