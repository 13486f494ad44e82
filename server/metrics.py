"""Prometheus metrics (prometheus_client), defined once here.

Why prometheus_client rather than OpenTelemetry's metrics SDK: its multiprocess mode
gives correct totals for `serve`'s N processes with no collector in between (each
process writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR``; the supervisor
serves their sum), and it is what Triton's and tusd's operators already scrape.

RPC metrics follow go-grpc-prometheus' names, so existing gRPC dashboards work:
``grpc_server_started_total``, ``grpc_server_handled_total{grpc_code}``,
``grpc_server_handling_seconds``. Domain metrics are ``vidscan_*``.

``serve`` with one process serves ``/metrics`` itself; with several, the supervisor
does, from every process's files (``server/supervisor.py``). Off unless
``VIDSCAN_METRICS_LISTEN`` is set.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

# Set by the supervisor for its children (prometheus_client reads it at import).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_RPC = ("grpc_service", "grpc_method", "grpc_type")

RPC_STARTED = Counter("grpc_server_started", "RPCs started on the server.", _RPC)
RPC_HANDLED = Counter(
    "grpc_server_handled", "RPCs completed on the server, by code.", (*_RPC, "grpc_code")
)
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds", "Time to handle an RPC.", _RPC, buckets=_LATENCY
)
ERRORS = Counter(
    "vidscan_errors",
    "Errors answered to clients, by method and stable reason (e.g. QUOTA_EXCEEDED).",
    ("grpc_method", "reason"),
)

UPLOAD_BYTES = Counter("vidscan_upload_received_bytes", "Upload bytes received (all streams).")
UPLOADS = Counter(
    "vidscan_uploads",
    "Finished UploadVideo calls by outcome (stored, deduplicated, refused, interrupted, "
    "failed) and reason (empty on success).",
    ("outcome", "reason"),
)
UPLOAD_SECONDS = Histogram(
    "vidscan_upload_duration_seconds",
    "UploadVideo, first message to answer (stored uploads).",
    buckets=_LATENCY,
)
UPLOAD_THROUGHPUT = Histogram(
    "vidscan_upload_throughput_bytes_per_second",
    "Bytes per second of each stored upload, first message to answer.",
    buckets=(1e5, 1e6, 5e6, 1e7, 2.5e7, 5e7, 1e8, 2e8, 4e8, 1e9),
)
UPLOADS_RESUMED = Counter(
    "vidscan_uploads_resumed", "UploadVideo streams that resumed a session (write_offset > 0)."
)

ANALYSES = Counter("vidscan_analyses", "Analyses finished, by status.", ("status",))
ANALYSIS_SECONDS = Histogram(
    "vidscan_analysis_seconds",
    "Analysis time by stage: decode (frame sampling), inference (Triton), total.",
    ("stage",),
    buckets=_LATENCY,
)
TRITON_ERRORS = Counter("vidscan_triton_errors", "Failed Triton calls, by reason.", ("reason",))
QUEUE_DEPTH = Gauge(
    "vidscan_analysis_queue_depth",
    "Analysis jobs waiting, postponed or in a worker's hands.",
    multiprocess_mode="max",
)
QUEUE_OLDEST_SECONDS = Gauge(
    "vidscan_analysis_queue_oldest_age_seconds",
    "Age of the oldest job in the analysis queue (0 when empty).",
    multiprocess_mode="max",
)
WEBHOOK_DELIVERIES = Counter(
    "vidscan_webhook_deliveries",
    "Webhook delivery attempts by outcome: delivered (2xx), retried (failed, tried again "
    "after the backoff), dropped (given up: attempts or age used up, host no longer "
    "allowed).",
    ("outcome",),
)
JANITOR_ACTIONS = Counter(
    "vidscan_janitor_actions", "What the janitor cleaned up, by action.", ("action",)
)

MEDIA_BUSY = Gauge(
    "vidscan_media_workers_busy", "Media worker jobs running.", multiprocess_mode="livesum"
)
MEDIA_QUEUED = Gauge(
    "vidscan_media_jobs_queued",
    "Media jobs waiting for a free worker.",
    multiprocess_mode="livesum",
)
MEDIA_FAILURES = Counter(
    "vidscan_media_job_failures",
    "Media jobs whose worker crashed or timed out, or that waited past their deadline.",
    ("kind",),
)


def split_method(full: str) -> tuple[str, str]:
    """``/vidscan.v1.UploadService/UploadVideo`` -> (service, method)."""
    _, service, method = [*full.split("/"), "", ""][:3]
    return service or "unknown", method or "unknown"


@contextmanager
def track_gauge(gauge: Gauge) -> Iterator[None]:
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()


def serve(listen: str, *, multiprocess_dir: str | None = None) -> int:
    """Serves ``/metrics`` on ``listen`` (host:port; port 0 picks one) from a daemon
    thread and returns the port. With ``multiprocess_dir``, the sum over every process
    that writes its samples there."""
    host, _, port = listen.rpartition(":")
    registry: CollectorRegistry = REGISTRY
    if multiprocess_dir is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
    server, _ = start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0", registry=registry)
    return int(server.server_port)


def mark_process_dead(pid: int, multiprocess_dir: str) -> None:
    """A child that exited: its live gauges stop counting, its counters stay."""
    multiprocess.mark_process_dead(pid, path=multiprocess_dir)  # type: ignore[no-untyped-call]


# Every known series from 0 on, so that rates and dashboards see them before the
# first event (prometheus_client shows a labelled series only once it is used).
for _stage in ("decode", "inference", "total"):
    ANALYSIS_SECONDS.labels(_stage)
for _status in ("analyzed", "failed"):
    ANALYSES.labels(_status)
for _outcome in ("delivered", "retried", "dropped"):
    WEBHOOK_DELIVERIES.labels(_outcome)
for _kind in ("crashed", "timed_out", "failed", "busy"):
    MEDIA_FAILURES.labels(_kind)
for _reason in ("DETECTOR_UNAVAILABLE", "DETECTOR_ERROR"):
    TRITON_ERRORS.labels(_reason)
