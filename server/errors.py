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
     │                                                   MODEL_NOT_ALLOWED
     ├── IncompleteUpload             INVALID_ARGUMENT   UPLOAD_INCOMPLETE
     ├── OffsetMismatch               OUT_OF_RANGE       INVALID_OFFSET
     ├── SessionBusy                  ABORTED            SESSION_BUSY, SESSION_LOCK_LOST
     ├── QuotaExceeded                RESOURCE_EXHAUSTED QUOTA_EXCEEDED
     ├── StorageFull                  RESOURCE_EXHAUSTED STORAGE_FULL
     ├── Cancelled                    CANCELLED          UPLOAD_CANCELLED
     ├── Unavailable                  UNAVAILABLE        STORAGE_UNAVAILABLE, DATABASE_UNAVAILABLE,
     │                                                   SESSION_STORE_UNAVAILABLE,
     │                                                   QUEUE_UNAVAILABLE, DETECTOR_UNAVAILABLE,
     │                                                   SHUTTING_DOWN
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

from dataclasses import dataclass
from enum import StrEnum

import grpc


class Reason(StrEnum):
    UNAUTHENTICATED = "UNAUTHENTICATED"
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    VIDEO_NOT_FOUND = "VIDEO_NOT_FOUND"
    ANALYSIS_NOT_FOUND = "ANALYSIS_NOT_FOUND"
    MISSING_HEADER = "MISSING_HEADER"
    INVALID_FIELD = "INVALID_FIELD"
    METADATA_TOO_LARGE = "METADATA_TOO_LARGE"
    EMPTY_UPLOAD = "EMPTY_UPLOAD"
    FILE_TOO_LARGE = "FILE_TOO_LARGE"
    UNSUPPORTED_FORMAT = "UNSUPPORTED_FORMAT"
    CORRUPT_CONTAINER = "CORRUPT_CONTAINER"
    NO_VIDEO_STREAM = "NO_VIDEO_STREAM"
    VIDEO_UNDECODABLE = "VIDEO_UNDECODABLE"
    VIDEO_LIMITS_EXCEEDED = "VIDEO_LIMITS_EXCEEDED"
    SIZE_MISMATCH = "SIZE_MISMATCH"
    HASH_MISMATCH = "HASH_MISMATCH"
    MODEL_NOT_ALLOWED = "MODEL_NOT_ALLOWED"
    UPLOAD_INCOMPLETE = "UPLOAD_INCOMPLETE"
    INVALID_OFFSET = "INVALID_OFFSET"
    SESSION_BUSY = "SESSION_BUSY"
    SESSION_LOCK_LOST = "SESSION_LOCK_LOST"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    UPLOAD_CANCELLED = "UPLOAD_CANCELLED"
    STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"
    DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
    SESSION_STORE_UNAVAILABLE = "SESSION_STORE_UNAVAILABLE"
    QUEUE_UNAVAILABLE = "QUEUE_UNAVAILABLE"
    DETECTOR_UNAVAILABLE = "DETECTOR_UNAVAILABLE"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    STORAGE_ERROR = "STORAGE_ERROR"
    DATABASE_ERROR = "DATABASE_ERROR"
    SESSION_STORE_ERROR = "SESSION_STORE_ERROR"
    QUEUE_ERROR = "QUEUE_ERROR"
    STORAGE_FULL = "STORAGE_FULL"
    MEDIA_WORKER_FAILED = "MEDIA_WORKER_FAILED"
    DETECTOR_ERROR = "DETECTOR_ERROR"
    INTERNAL = "INTERNAL"


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
        reason: Reason,
        message: str,
        *,
        metadata: dict[str, str] | None = None,
        field_violations: list[FieldViolation] | None = None,
        quota_violations: list[QuotaViolation] | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations = list(field_violations or [])
        self.quota_violations = list(quota_violations or [])
        self.cleanup: Cleanup | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason.value}: {self.message})"


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


class SessionBusy(VidscanError):
    code = grpc.StatusCode.ABORTED


class QuotaExceeded(VidscanError):
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
