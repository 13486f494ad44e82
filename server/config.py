"""Typed settings, read from the environment once by the composition root.

Nothing here connects to anything; `load_settings()` only parses and validates.
Service-specific knobs use the ``VIDSCAN_`` prefix; the conventional names of the
backing services (``DATABASE_URL``, ``REDIS_URL``, ``S3_*``, ``TRITON_URL``) do not.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from server.faults import parse_fault_points
from server.webhooks.policy import HostPattern, parse_host_patterns
from server.webhooks.signing import parse_secret

MIB = 1024 * 1024

DEFAULT_MAX_UPLOAD_BYTES = 500 * MIB
DEFAULT_SESSION_TTL_SECONDS = 3600
DEFAULT_MAX_RECEIVE_MESSAGE_BYTES = 4 * MIB
DEFAULT_MAX_METADATA_BYTES = 16 * 1024
DEFAULT_UPLOAD_QUOTA = 100
# Bytes one server process holds in S3 parts (filling or in flight) over all its
# uploads: 16 parts of 8 MiB. An upload waiting for it stalls its stream (gRPC flow
# control pushes back), it never fails for it.
DEFAULT_PART_BUDGET_BYTES = 128 * MIB
MIN_S3_PART_BYTES = 5 * MIB
MAX_S3_PARTS = 10_000
ALLOWED_FORMATS = ("mp4", "mov", "mkv", "webm", "avi")
# Anyone who reads this file can mint tokens with it: accepted on loopback only.
DEVELOPMENT_JWT_SECRET = "vidscan-development-secret-not-for-production"


def is_loopback(listen: str) -> bool:
    """True for a listen address only this machine can reach (127.0.0.0/8, ::1,
    localhost)."""
    host = listen.rpartition(":")[0].strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _env(name: str, *aliases: str) -> AliasChoices:
    return AliasChoices(name, *aliases)


class Settings(BaseSettings):
    """Everything the service can be configured with. See the README's table."""

    model_config = SettingsConfigDict(
        env_prefix="VIDSCAN_", extra="ignore", frozen=True, populate_by_name=True
    )

    log_level: str = "INFO"
    # "json": one JSON object per line with the request's ids (server/logs.py);
    # "text": the same fields as key=value, for a terminal.
    log_format: str = "json"

    # Network
    grpc_listen: str = "127.0.0.1:50051"
    # Server processes behind one port (SO_REUSEPORT), supervised by `serve`.
    # 0 = automatic: one per core when the backends are shared services
    # (DATABASE_URL, REDIS_URL and S3_BUCKET all set), else 1 (the embedded default
    # keeps sessions in the process's memory, so it cannot be split).
    processes: Annotated[int, Field(ge=0, le=64)] = 0
    # Bind the gRPC port with SO_REUSEPORT. `serve` sets it for the processes it
    # supervises; set it yourself only to run independent servers on one port.
    so_reuseport: bool = False
    # TLS for the gRPC port: PEM certificate chain and key; with a client CA, every
    # client must present a certificate it signed (mTLS). Empty: plaintext.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    shutdown_grace_seconds: float = 30.0
    # Prometheus /metrics on its own HTTP port (host:port; port 0 picks one); off when
    # empty. `make run` turns it on.
    metrics_listen: str = ""
    # Connection lifetime (gRPC max_connection_age) and what a call running when it ends
    # gets to finish: long enough for a large upload; a longer one is cut and resumes.
    max_connection_age_seconds: Annotated[float, Field(gt=0)] = 300.0
    max_connection_age_grace_seconds: Annotated[float, Field(ge=0)] = 600.0
    keepalive_seconds: Annotated[float, Field(ge=10)] = 60.0
    max_receive_message_bytes: int = DEFAULT_MAX_RECEIVE_MESSAGE_BYTES
    # gRPC transport limits: concurrent calls (HTTP/2 streams) one connection may
    # carry, and how long a connection with no call stays open.
    max_concurrent_streams: Annotated[int, Field(ge=1)] = 100
    max_connection_idle_seconds: Annotated[float, Field(gt=0)] = 300.0

    # Abuse limits (server/limits/): refused with RESOURCE_EXHAUSTED + RetryInfo. The
    # per-user ones are shared by every replica through Redis (memory when embedded).
    # An UploadVideo stream that receives nothing for stream_idle_seconds, or less than
    # stream_min_bytes_per_second over that long (time the server waits for the
    # client only), is ended with UPLOAD_STALLED; what it stored stays resumable.
    stream_idle_seconds: Annotated[float, Field(ge=0)] = 30.0  # 0: never cut
    stream_min_bytes_per_second: Annotated[float, Field(ge=0)] = 1024.0  # 0: no minimum
    # ... and idle for this long while other streams wait for the part budget.
    stream_idle_under_pressure_seconds: Annotated[float, Field(ge=0)] = 5.0  # 0: as idle
    max_sessions_per_user: Annotated[int, Field(ge=0)] = 1000  # active ones; 0: no limit
    max_streams_per_user: Annotated[int, Field(ge=0)] = 16  # 0: no limit
    max_streams_per_process: Annotated[int, Field(ge=0)] = 512  # 0: no limit
    # Token buckets per user: CreateUploadSession, and the other unary RPCs together.
    create_session_rate: Annotated[float, Field(ge=0)] = 20.0  # per second; 0: no limit
    create_session_burst: Annotated[int, Field(ge=1)] = 200
    unary_rate: Annotated[float, Field(ge=0)] = 100.0
    unary_burst: Annotated[int, Field(ge=1)] = 400

    # Backing services; empty means the embedded adapter.
    database_url: str = Field(default="", validation_alias=_env("DATABASE_URL"))
    redis_url: str = Field(default="", validation_alias=_env("REDIS_URL"))
    s3_endpoint_url: str = Field(default="", validation_alias=_env("S3_ENDPOINT_URL"))
    s3_bucket: str = Field(default="", validation_alias=_env("S3_BUCKET"))
    s3_region: str = Field(default="us-east-1", validation_alias=_env("S3_REGION"))
    s3_access_key_id: str = Field(default="", validation_alias=_env("AWS_ACCESS_KEY_ID"))
    s3_secret_access_key: SecretStr = Field(
        default=SecretStr(""), validation_alias=_env("AWS_SECRET_ACCESS_KEY")
    )
    triton_url: str = Field(default="", validation_alias=_env("TRITON_URL"))
    # Playable URLs (server/storage/links.py): S3 objects get presigned GET URLs valid
    # this long, signed for the endpoint browsers reach (default: S3_ENDPOINT_URL);
    # the embedded store's videos are served by the gateway at
    # /v1/videos/{id}/content, under public_base_url when set (else a relative path).
    s3_public_endpoint_url: str = Field(default="", validation_alias=_env("S3_PUBLIC_ENDPOINT_URL"))
    playback_url_seconds: Annotated[int, Field(ge=60, le=7 * 24 * 3600)] = 3600
    public_base_url: str = ""
    # Key of the content route's signed links; empty: derived from jwt_secret (random
    # per process while that is the built-in development secret).
    url_signing_key: SecretStr = SecretStr("")

    # Embedded defaults live under one directory.
    data_dir: Path = Path("var")

    # Auth
    # The embedded default only; set VIDSCAN_JWT_SECRET (32+ bytes) in any real deployment.
    jwt_secret: SecretStr = SecretStr(DEVELOPMENT_JWT_SECRET)
    # RS256/ES256 tokens from an identity provider, verified against its JWKS document
    # (beside HS256 tokens signed with jwt_secret, unless that is the built-in one).
    jwks_url: str = ""
    jwks_cache_seconds: Annotated[float, Field(gt=0)] = 300.0
    jwks_refetch_cooldown_seconds: Annotated[float, Field(ge=0)] = 30.0
    jwt_leeway_seconds: Annotated[float, Field(ge=0, le=300)] = 30.0
    jwt_issuer: str = ""
    jwt_audience: str = ""

    # Upload rules
    max_upload_bytes: Annotated[int, Field(gt=0)] = DEFAULT_MAX_UPLOAD_BYTES
    session_ttl_seconds: Annotated[int, Field(gt=0)] = DEFAULT_SESSION_TTL_SECONDS
    max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES
    default_upload_quota: int = DEFAULT_UPLOAD_QUOTA
    s3_parts_in_flight: Annotated[int, Field(ge=1, le=8)] = 2
    part_budget_bytes: Annotated[int, Field(ge=MIN_S3_PART_BYTES)] = DEFAULT_PART_BUDGET_BYTES
    # Run the S3 client on an I/O thread with its own event loop (server/storage/offload.py).
    # Off by default: measured on 2 cores it made one 1 GiB upload slower (57 vs 76 MB/s
    # median, bench/README.md): the two loops contend for the GIL more than the signing
    # and sending overlap. Kept to be measured again on larger machines.
    s3_io_thread: bool = False
    # SigV4 payload signing of part uploads (server/storage/s3.py): "auto" signs over
    # plain HTTP only; over HTTPS, TLS already guards the bytes and the SHA-256 pass
    # botocore would make over every part is skipped (UNSIGNED-PAYLOAD). "on"/"off"
    # force it (off over plain HTTP: only on a network you trust, e.g. loopback).
    s3_payload_signing: Literal["auto", "on", "off"] = "auto"
    stream_lock_seconds: Annotated[float, Field(gt=0)] = 30.0

    # Media limits (decode-bomb guards) and the isolated worker.
    max_video_pixels: int = 7680 * 4320
    max_video_seconds: float = 3 * 3600.0
    max_video_fps: float = 240.0
    media_timeout_seconds: float = 60.0
    media_memory_limit_bytes: int = 4096 * MIB
    # The warm worker pool (server/media/pool.py): this many processes (default: the
    # cores, divided among the server processes by `serve`), each retired
    # after this many jobs; a job waits for a free one at most the RPC's deadline and
    # never longer than media_queue_wait_seconds (the background analyzer's wait).
    media_workers: Annotated[int, Field(ge=1, le=256)] = Field(
        default_factory=lambda: len(os.sched_getaffinity(0))
    )
    media_recycle_jobs: Annotated[int, Field(ge=1)] = 100
    media_queue_wait_seconds: Annotated[float, Field(ge=0)] = 30.0
    # Test-only fault injection in the media worker: "", "crash" or "hang".
    media_fault_injection: str = ""
    # Test-only fault injection at the upload's finish line (server/faults.py), e.g.
    # "recorded=kill" or "before-record=wait:/tmp/gate". Empty in production.
    fault_points: str = ""

    # Detection (Triton) and the analysis lifecycle
    default_model: str = "face_ensemble"
    allowed_models: str = "face_ensemble,frame_ensemble,frame_resnet,frame_cnn"
    analysis_frames: Annotated[int, Field(ge=1, le=256)] = 32
    detection_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    aggregation: str = "confident"
    analysis_wait_seconds: float = 10.0
    analysis_lease_seconds: float = 120.0
    analysis_reclaim_seconds: float = 30.0
    analysis_retry_seconds: float = 5.0
    analysis_max_attempts: int = 5
    analysis_workers: Annotated[int, Field(ge=0, le=16)] = 1
    triton_timeout_seconds: float = 30.0
    # Which frames to decode (server/media/frame_plan.py): "cheapest" (keyframes first,
    # exact times only when cheap) or "exact" (evenly spaced times, whatever they cost).
    frame_policy: Literal["cheapest", "exact"] = "cheapest"
    # Threads one frame-sampling job decodes with: the planned runs (each from its own
    # keyframe) are shared among them, each on its own demuxer (PyAV releases the GIL
    # while decoding). 2 halves decode_ms of an idle 2-core machine; 1 for none.
    decode_threads: Annotated[int, Field(ge=1, le=16)] = 2
    # Frames to Triton through system shared memory: "auto" when TRITON_URL names this
    # host (localhost, 127.0.0.0/8, ::1, unix:), "on", or "off" (in the gRPC request).
    triton_shm: Literal["auto", "on", "off"] = "auto"
    # WatchAnalysis (server/analysis/watch.py): a watch re-reads its analysis on each
    # change notification and at least this often (a lost notification only delays);
    # a process holds this many watches at most (0: no limit), refusing more with
    # SERVER_BUSY.
    watch_poll_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0
    max_watchers_per_process: Annotated[int, Field(ge=0)] = 1000

    # Webhooks (server/webhooks/): an upload's header.callback_url is POSTed the final
    # analysis, signed per Standard Webhooks. Allowed hosts: comma-separated host[:port]
    # patterns ("hooks.example.com", "*.example.com", "127.0.0.1:*"); empty: webhooks
    # are off and any callback_url is refused. https only, unless callback_allow_http.
    callback_hosts: str = ""
    callback_allow_http: bool = False
    # "whsec_" + base64 of 24-64 random bytes; required when callback_hosts is set.
    webhook_secret: SecretStr = SecretStr("")
    webhook_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 10.0
    # Retries: base * 2**attempt, capped; given up after max attempts or max age.
    webhook_retry_seconds: Annotated[float, Field(gt=0)] = 5.0
    webhook_retry_max_seconds: Annotated[float, Field(gt=0)] = 600.0
    webhook_max_attempts: Annotated[int, Field(ge=1)] = 12
    webhook_max_age_seconds: Annotated[float, Field(gt=0)] = 24 * 3600.0
    # Concurrent deliveries per process (one attempt each, bounded by the timeout).
    webhook_workers: Annotated[int, Field(ge=1, le=64)] = 4

    # Health: how often each dependency is probed, and how long a probe may take.
    health_interval_seconds: Annotated[float, Field(gt=0)] = 5.0
    health_probe_timeout_seconds: Annotated[float, Field(gt=0)] = 2.0

    # Housekeeping
    janitor_interval_seconds: float = 300.0

    @field_validator("tls_cert_file", "tls_key_file", "tls_client_ca_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("max_upload_bytes")
    @classmethod
    def _fits_in_parts(cls, value: int) -> int:
        if part_size_for(value) * MAX_S3_PARTS < value:
            raise ValueError("max_upload_bytes is too large for S3 multipart limits")
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value().encode()) < 32:
            raise ValueError("jwt_secret must be at least 32 bytes for HS256")
        return value

    @field_validator("fault_points")
    @classmethod
    def _known_fault_points(cls, value: str) -> str:
        parse_fault_points(value)  # raises ValueError naming what is wrong
        return value

    @field_validator("callback_hosts")
    @classmethod
    def _known_host_patterns(cls, value: str) -> str:
        parse_host_patterns(value)  # raises ValueError naming the bad pattern
        return value

    @model_validator(mode="after")
    def _webhooks_need_a_secret(self) -> Settings:
        secret = self.webhook_secret.get_secret_value()
        if self.callback_hosts.strip() and not secret:
            raise ValueError("VIDSCAN_CALLBACK_HOSTS needs VIDSCAN_WEBHOOK_SECRET (whsec_...)")
        if secret:
            parse_secret(secret)  # raises ValueError saying what is wrong
        return self

    @property
    def callback_host_patterns(self) -> tuple[HostPattern, ...]:
        return parse_host_patterns(self.callback_hosts)

    @field_validator("log_format")
    @classmethod
    def _known_log_format(cls, value: str) -> str:
        if value not in ("json", "text"):
            raise ValueError("log_format must be 'json' or 'text'")
        return value

    @field_validator("aggregation")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        if value not in ("mean", "confident"):
            raise ValueError("aggregation must be 'mean' or 'confident'")
        return value

    def serving_problem(self) -> str | None:
        """Why these settings must not serve, or None. Checked by ``serve`` only: the
        one-off commands (migrate, mint-token, quotas) listen on nothing."""
        if (
            self.jwt_secret.get_secret_value() == DEVELOPMENT_JWT_SECRET
            and not self.jwks_url
            and not is_loopback(self.grpc_listen)
        ):
            return (
                f"VIDSCAN_JWT_SECRET is not set: the built-in development secret is "
                f"accepted on loopback only, not on {self.grpc_listen} (or set "
                f"VIDSCAN_JWKS_URL to accept only an identity provider's tokens)"
            )
        return None

    @model_validator(mode="after")
    def _tls_files_come_in_pairs(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("VIDSCAN_TLS_CERT_FILE and VIDSCAN_TLS_KEY_FILE go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("VIDSCAN_TLS_CLIENT_CA_FILE needs VIDSCAN_TLS_CERT_FILE/_KEY_FILE")
        return self

    @model_validator(mode="after")
    def _processes_need_shared_backends(self) -> Settings:
        if self.processes > 1 and not self.shared_backends:
            raise ValueError(
                "processes > 1 needs shared backends (DATABASE_URL, REDIS_URL and "
                "S3_BUCKET): the embedded default keeps sessions in one process's memory"
            )
        return self

    @property
    def accepts_hs256(self) -> bool:
        """Shared-secret tokens are accepted unless an identity provider is configured
        and the secret is the built-in development one."""
        return not (self.jwks_url and self.jwt_secret.get_secret_value() == DEVELOPMENT_JWT_SECRET)

    @property
    def shared_backends(self) -> bool:
        """True when every backend is a service other processes can reach too."""
        return bool(self.database_url and self.redis_url and self.s3_bucket)

    @property
    def process_count(self) -> int:
        """How many server processes `serve` runs (VIDSCAN_PROCESSES, resolved)."""
        if self.processes:
            return self.processes
        return len(os.sched_getaffinity(0)) if self.shared_backends else 1

    @property
    def model_allow_list(self) -> tuple[str, ...]:
        return tuple(m.strip() for m in self.allowed_models.split(",") if m.strip())

    @property
    def part_size(self) -> int:
        return part_size_for(self.max_upload_bytes)


def part_size_for(max_upload_bytes: int) -> int:
    """Part size such that the largest upload needs at most ~1,000 parts.

    8 MiB at the default 500 MiB limit (63 parts); it grows in whole MiB for larger
    limits so that even a 50 GiB limit stays far under S3's 10,000-part ceiling.
    """
    target = -(-max_upload_bytes // 1000)
    size = max(8 * MIB, -(-target // MIB) * MIB)
    return max(size, MIN_S3_PART_BYTES)


def load_settings() -> Settings:
    """Reads and validates the environment. Called once, by the composition root."""
    return Settings()
