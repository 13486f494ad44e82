"""Typed settings, read from the environment once by the composition root.

Nothing here connects to anything; `load_settings()` only parses and validates.
Service-specific knobs use the ``VIDSCAN_`` prefix; the conventional names of the
backing services (``DATABASE_URL``, ``REDIS_URL``, ``S3_*``, ``TRITON_URL``) do not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from server.faults import parse_fault_points

MIB = 1024 * 1024

DEFAULT_MAX_UPLOAD_BYTES = 500 * MIB
DEFAULT_SESSION_TTL_SECONDS = 3600
DEFAULT_MAX_RECEIVE_MESSAGE_BYTES = 4 * MIB
DEFAULT_MAX_METADATA_BYTES = 16 * 1024
DEFAULT_UPLOAD_QUOTA = 100
MIN_S3_PART_BYTES = 5 * MIB
MAX_S3_PARTS = 10_000
ALLOWED_FORMATS = ("mp4", "mov", "mkv", "webm", "avi")


def _env(name: str, *aliases: str) -> AliasChoices:
    return AliasChoices(name, *aliases)


class Settings(BaseSettings):
    """Everything the service can be configured with. See the README's table."""

    model_config = SettingsConfigDict(
        env_prefix="VIDSCAN_", extra="ignore", frozen=True, populate_by_name=True
    )

    log_level: str = "INFO"

    # Network
    grpc_listen: str = "127.0.0.1:50051"
    shutdown_grace_seconds: float = 30.0
    max_receive_message_bytes: int = DEFAULT_MAX_RECEIVE_MESSAGE_BYTES

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

    # Embedded defaults live under one directory.
    data_dir: Path = Path("var")

    # Auth
    # The embedded default only; set VIDSCAN_JWT_SECRET (32+ bytes) in any real deployment.
    jwt_secret: SecretStr = SecretStr("vidscan-development-secret-not-for-production")
    jwt_issuer: str = ""
    jwt_audience: str = ""

    # Upload rules
    max_upload_bytes: Annotated[int, Field(gt=0)] = DEFAULT_MAX_UPLOAD_BYTES
    session_ttl_seconds: Annotated[int, Field(gt=0)] = DEFAULT_SESSION_TTL_SECONDS
    max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES
    default_upload_quota: int = DEFAULT_UPLOAD_QUOTA
    s3_parts_in_flight: Annotated[int, Field(ge=1, le=8)] = 2
    stream_lock_seconds: Annotated[float, Field(gt=0)] = 30.0

    # Media limits (decode-bomb guards) and the isolated worker.
    max_video_pixels: int = 7680 * 4320
    max_video_seconds: float = 3 * 3600.0
    max_video_fps: float = 240.0
    media_timeout_seconds: float = 60.0
    media_memory_limit_bytes: int = 4096 * MIB
    # Test-only fault injection in the media worker: "", "crash" or "hang".
    media_fault_injection: str = ""
    # Test-only fault injection at the upload's finish line (server/faults.py), e.g.
    # "recorded=kill" or "before-record=wait:/tmp/gate". Empty in production.
    fault_points: str = ""

    # Detection (Triton) and the analysis lifecycle
    default_model: str = "frame_ensemble"
    allowed_models: str = "frame_ensemble,frame_resnet,frame_cnn"
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

    # Housekeeping
    janitor_interval_seconds: float = 300.0

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

    @field_validator("aggregation")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        if value not in ("mean", "confident"):
            raise ValueError("aggregation must be 'mean' or 'confident'")
        return value

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
