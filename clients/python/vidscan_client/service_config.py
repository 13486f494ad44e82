"""A gRPC service config for callers that use the generated stubs directly.

It retries the idempotent reads (GetUploadSession, GetVideo, GetAnalysis) on
UNAVAILABLE with exponential backoff, transparently in the channel:

    channel = grpc.insecure_channel(target, options=vidscan_client.channel_options())

CreateUploadSession, CancelUploadSession and UploadVideo are not in it: they are not
idempotent (a retried create is a second session; an upload resumes from the
session's committed offset, which needs the client's own logic). The clients of this
package do not use it: they retry themselves, waiting as long as the server's
google.rpc.RetryInfo asks (a gRPC retry policy cannot), and uploads resume.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["SERVICE_CONFIG", "channel_options"]

SERVICE_CONFIG: dict[str, Any] = {
    "methodConfig": [
        {
            "name": [
                {"service": "vidscan.v1.UploadService", "method": "GetUploadSession"},
                {"service": "vidscan.v1.AnalysisService", "method": "GetVideo"},
                {"service": "vidscan.v1.AnalysisService", "method": "GetAnalysis"},
            ],
            "timeout": "30s",
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.2s",
                "maxBackoff": "5s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}


def channel_options() -> list[tuple[str, Any]]:
    """Channel options that apply SERVICE_CONFIG (retries enabled)."""
    return [("grpc.service_config", json.dumps(SERVICE_CONFIG)), ("grpc.enable_retries", 1)]
