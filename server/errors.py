"""The one error tree of vidscan. Every failure a client can see is one of these.

::

    VidscanError                      reason (stable, SCREAMING_SNAKE) + gRPC code
     ├── Unauthenticated              UNAUTHENTICATED    UNAUTHENTICATED
     ├── NotFound                     NOT_FOUND          SESSION_NOT_FOUND, VIDEO_NOT_FOUND,
     │                                                   ANALYSIS_NOT_FOUND
     ├── InvalidUpload                INVALID_ARGUMENT   MISSING_HEADER, INVALID_FIELD,
     │                                                   METADATA_TOO_LARGE, EMPTY_UPLOAD,
     │                                                   FILE_TOO_LARGE, UNSUPPORTED_FORMAT,
     │                                                   CORRUPT_CONTAINER, NO_VIDEO_STREAM,
     │                                                   VIDEO_UNDECODABLE, VIDEO_LIMITS_EXCEEDED,
     │                                                   SIZE_MISMATCH, HASH_MISMATCH,
     │                                                   MODEL_NOT_ALLOWED,
     │                                                   CALLBACK_URL_NOT_ALLOWED
     ├── IncompleteUpload             INVALID_ARGUMENT   UPLOAD_INCOMPLETE
     ├── OffsetMismatch               OUT_OF_RANGE       INVALID_OFFSET
     ├── RangeNotSatisfiable          OUT_OF_RANGE       RANGE_NOT_SATISFIABLE
     ├── NotCompleted                 FAILED_PRECONDITION UPLOAD_NOT_COMPLETED
     ├── SessionBusy                  ABORTED            SESSION_BUSY, SESSION_LOCK_LOST
     ├── StreamStalled                ABORTED            UPLOAD_STALLED (resumable)
     ├── QuotaExceeded                RESOURCE_EXHAUSTED QUOTA_EXCEEDED
     ├── LimitExceeded                RESOURCE_EXHAUSTED TOO_MANY_SESSIONS, TOO_MANY_STREAMS,
     │                                                   SERVER_BUSY, RATE_LIMITED
     ├── StorageFull                  RESOURCE_EXHAUSTED STORAGE_FULL
     ├── Cancelled                    CANCELLED          UPLOAD_CANCELLED
     ├── Unavailable                  UNAVAILABLE        STORAGE_UNAVAILABLE, DATABASE_UNAVAILABLE,
     │                                                   SESSION_STORE_UNAVAILABLE,
     │                                                   QUEUE_UNAVAILABLE, DETECTOR_UNAVAILABLE,
     │                                                   SHUTTING_DOWN, MEDIA_WORKERS_BUSY,
     │                                                   IDENTITY_PROVIDER_UNAVAILABLE
     └── Internal                     INTERNAL           STORAGE_ERROR, DATABASE_ERROR,
          │                                              SESSION_STORE_ERROR, QUEUE_ERROR,
          │                                              MEDIA_WORKER_FAILED, DETECTOR_ERROR,
          │                                              INTERNAL
          └── ObjectGone             (never sent)        an object or multipart upload that is
                                                         not there; adapters act on it

Library exceptions are translated into this tree in exactly one place per adapter
(``map_*_errors`` next to each adapter); the gRPC layer turns the tree into a
``google.rpc.Status`` in ``server/api/status.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, cast

import grpc
from vidscan.v1.errors_pb2 import ErrorReason

# The reasons are defined once, as the proto enum vidscan.v1.ErrorReason
# (protos/vidscan/v1/errors.proto); ErrorInfo.reason carries the value's *name*.
# ``Reason`` is that generated enum under the name the server code uses.
Reason = ErrorReason


def reason_name(reason: ErrorReason) -> str:
    """The wire string of a reason: its name in the proto enum, e.g. FILE_TOO_LARGE."""
    return ErrorReason.Name(reason)


def reason_from_name(name: str, default: ErrorReason) -> ErrorReason:
    """The reason whose wire string is ``name``; ``default`` for an unknown name."""
    try:
        return cast(ErrorReason, ErrorReason.Value(name))
    except ValueError:
        return default


@dataclass
class Cleanup:
    """What was released after a failed upload (the earlier API's cleanup_details)."""

    s3_cleanup: bool = False
    session_cleanup: bool = False
    database_cleanup: bool = False
    quota_released: bool = False

    @property
    def performed(self) -> bool:
        return (
            self.s3_cleanup
            or self.session_cleanup
            or self.database_cleanup
            or (self.quota_released)
        )


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    subject: str
    description: str


class VidscanError(Exception):
    """Base of every error the service reports on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(
        self,
        reason: ErrorReason,
        message: str,
        *,
        metadata: dict[str, str] | None = None,
        field_violations: list[FieldViolation] | None = None,
        quota_violations: list[QuotaViolation] | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations = list(field_violations or [])
        self.quota_violations = list(quota_violations or [])
        # Sent as google.rpc.RetryInfo: how long the client should wait before retrying.
        self.retry_after_seconds = retry_after_seconds
        self.cleanup: Cleanup | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({reason_name(self.reason)}: {self.message})"


class Unauthenticated(VidscanError):
    code = grpc.StatusCode.UNAUTHENTICATED


class NotFound(VidscanError):
    code = grpc.StatusCode.NOT_FOUND


class InvalidUpload(VidscanError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class IncompleteUpload(VidscanError):
    """The stream ended without finish_write. Unlike InvalidUpload, the session is
    not spent: the client may send the file again."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class OffsetMismatch(VidscanError):
    code = grpc.StatusCode.OUT_OF_RANGE


class RangeNotSatisfiable(VidscanError):
    code = grpc.StatusCode.OUT_OF_RANGE


class NotCompleted(VidscanError):
    """A result asked for before the upload that produces it is recorded."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class SessionBusy(VidscanError):
    code = grpc.StatusCode.ABORTED


class StreamStalled(VidscanError):
    """The client stopped sending (or sends below the minimum rate). Like a dropped
    connection, the upload is suspended, not discarded: resume it."""

    code = grpc.StatusCode.ABORTED


class QuotaExceeded(VidscanError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class LimitExceeded(VidscanError):
    """An abuse limit (sessions, streams, request rate): refused now, with RetryInfo."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class StorageFull(VidscanError):
    """The server's own disk is full (embedded store, spool). The upload is
    discarded at once -- keeping its parts would only fill the disk further."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Cancelled(VidscanError):
    code = grpc.StatusCode.CANCELLED


class Unavailable(VidscanError):
    code = grpc.StatusCode.UNAVAILABLE


class Internal(VidscanError):
    code = grpc.StatusCode.INTERNAL


class ObjectGone(Internal):
    """An object or multipart upload that does not exist. Raised by a storage
    adapter's error map; the adapter itself decides whether that is fine (deleting
    what is already gone) or an error (reported as STORAGE_ERROR)."""


def invalid_field(field_name: str, description: str) -> InvalidUpload:
    """The usual shape of a bad request field, with a BadRequest violation attached."""
    return InvalidUpload(
        Reason.INVALID_FIELD,
        f"{field_name}: {description}",
        field_violations=[FieldViolation(field_name, description)],
    )


# The tree above as data: the error class (and so the gRPC code) of every reason the
# server sends. tests/test_error_reasons.py fails when a proto value is in neither
# this table nor GATEWAY_REASONS, when a raise site pairs a reason with another
# class, or when the gateway's HTTP status for a reason disagrees with its code.
ERROR_CLASSES: Final[Mapping[ErrorReason, type[VidscanError]]] = MappingProxyType(
    {
        Reason.UNAUTHENTICATED: Unauthenticated,
        Reason.SESSION_NOT_FOUND: NotFound,
        Reason.VIDEO_NOT_FOUND: NotFound,
        Reason.ANALYSIS_NOT_FOUND: NotFound,
        Reason.MISSING_HEADER: InvalidUpload,
        Reason.INVALID_FIELD: InvalidUpload,
        Reason.METADATA_TOO_LARGE: InvalidUpload,
        Reason.EMPTY_UPLOAD: InvalidUpload,
        Reason.FILE_TOO_LARGE: InvalidUpload,
        Reason.UNSUPPORTED_FORMAT: InvalidUpload,
        Reason.CORRUPT_CONTAINER: InvalidUpload,
        Reason.NO_VIDEO_STREAM: InvalidUpload,
        Reason.VIDEO_UNDECODABLE: InvalidUpload,
        Reason.VIDEO_LIMITS_EXCEEDED: InvalidUpload,
        Reason.SIZE_MISMATCH: InvalidUpload,
        Reason.HASH_MISMATCH: InvalidUpload,
        Reason.MODEL_NOT_ALLOWED: InvalidUpload,
        Reason.CALLBACK_URL_NOT_ALLOWED: InvalidUpload,
        Reason.UPLOAD_INCOMPLETE: IncompleteUpload,
        Reason.INVALID_OFFSET: OffsetMismatch,
        Reason.RANGE_NOT_SATISFIABLE: RangeNotSatisfiable,
        Reason.UPLOAD_NOT_COMPLETED: NotCompleted,
        Reason.SESSION_BUSY: SessionBusy,
        Reason.SESSION_LOCK_LOST: SessionBusy,
        Reason.QUOTA_EXCEEDED: QuotaExceeded,
        Reason.UPLOAD_STALLED: StreamStalled,
        Reason.TOO_MANY_SESSIONS: LimitExceeded,
        Reason.TOO_MANY_STREAMS: LimitExceeded,
        Reason.SERVER_BUSY: LimitExceeded,
        Reason.RATE_LIMITED: LimitExceeded,
        Reason.STORAGE_FULL: StorageFull,
        Reason.UPLOAD_CANCELLED: Cancelled,
        Reason.STORAGE_UNAVAILABLE: Unavailable,
        Reason.DATABASE_UNAVAILABLE: Unavailable,
        Reason.SESSION_STORE_UNAVAILABLE: Unavailable,
        Reason.QUEUE_UNAVAILABLE: Unavailable,
        Reason.DETECTOR_UNAVAILABLE: Unavailable,
        Reason.SHUTTING_DOWN: Unavailable,
        Reason.MEDIA_WORKERS_BUSY: Unavailable,
        Reason.IDENTITY_PROVIDER_UNAVAILABLE: Unavailable,
        Reason.STORAGE_ERROR: Internal,
        Reason.DATABASE_ERROR: Internal,
        Reason.SESSION_STORE_ERROR: Internal,
        Reason.QUEUE_ERROR: Internal,
        Reason.MEDIA_WORKER_FAILED: Internal,
        Reason.DETECTOR_ERROR: Internal,
        Reason.INTERNAL: Internal,
    }
)

# Reasons only the REST gateway answers (ErrorInfo.domain "vidscan.gateway").
GATEWAY_REASONS: Final[frozenset[ErrorReason]] = frozenset(
    {
        Reason.CHECKSUM_MISMATCH,
        Reason.CHECKSUM_NOT_SUPPORTED,
        Reason.UNSUPPORTED_MEDIA_TYPE,
        Reason.MALFORMED_MULTIPART,
        Reason.UPLOAD_IDLE_TIMEOUT,
        Reason.CORS_ORIGIN_NOT_ALLOWED,
        Reason.NOT_FOUND,
        Reason.METHOD_NOT_ALLOWED,
        Reason.BAD_REQUEST,
    }
)
