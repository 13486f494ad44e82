"""VidscanError: every failed call, with the server's google.rpc.Status unpacked.

::

    Exception
     └── VidscanError          .code (grpc.StatusCode), .reason (ErrorInfo.reason),
                               .transient, .metadata, .cleanup, .field_violations

``from_rpc_error`` is the one place a gRPC error (sync or grpc.aio) becomes a
VidscanError. The reasons the client acts on are compared as the generated
``vidscan.v1.ErrorReason`` enum, never as string copies; ``.reason`` stays the wire
string, so a reason newer than this client is still reported as sent.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from vidscan_client.protos import errors_pb2

__all__ = [
    "RECOVERY",
    "SESSION_CANCELLED",
    "SESSION_COMPLETED",
    "SESSION_EXPIRED",
    "TRANSIENT_CODES",
    "Recovery",
    "VidscanError",
]

ErrorReason = errors_pb2.ErrorReason

# Reasons the client attaches itself when a session cannot be resumed; the server
# never sends them (its SESSION_NOT_FOUND does not say why).
SESSION_EXPIRED = "SESSION_EXPIRED"
SESSION_CANCELLED = "SESSION_CANCELLED"
SESSION_COMPLETED = "SESSION_COMPLETED"

TRANSIENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class Recovery(enum.Enum):
    """What the client does after an error with a given reason."""

    RETRY = "retry"
    """Transient: the same call may succeed later; uploads resume the session."""
    RESUME_AT_OFFSET = "resume_at_offset"
    """The stream started elsewhere than the committed offset: ask, then resume."""
    FINAL = "final"
    """The server's last word on this request; retrying cannot help."""


R = ErrorReason
_RETRY: Final = (
    # UPLOAD_INCOMPLETE: the stream was cut before finish_write; the session can be
    # written again. SESSION_BUSY: the server is still cleaning up the stream that was
    # cut. SESSION_LOCK_LOST: this stream lost the session's lock; resume from the
    # committed offset. The *_UNAVAILABLE reasons, SHUTTING_DOWN and
    # MEDIA_WORKERS_BUSY: another replica, or this one a little later, can serve it.
    R.UPLOAD_INCOMPLETE,
    R.SESSION_BUSY,
    R.SESSION_LOCK_LOST,
    R.STORAGE_UNAVAILABLE,
    R.DATABASE_UNAVAILABLE,
    R.SESSION_STORE_UNAVAILABLE,
    R.QUEUE_UNAVAILABLE,
    R.DETECTOR_UNAVAILABLE,
    R.SHUTTING_DOWN,
    R.MEDIA_WORKERS_BUSY,
    R.IDENTITY_PROVIDER_UNAVAILABLE,
    R.UPLOAD_IDLE_TIMEOUT,
    # UPLOAD_STALLED: this client paused longer than the server's idle timeout; what
    # it sent is kept. The limits (RESOURCE_EXHAUSTED) free up: wait the RetryInfo delay.
    R.UPLOAD_STALLED,
    R.TOO_MANY_SESSIONS,
    R.TOO_MANY_STREAMS,
    R.SERVER_BUSY,
    R.RATE_LIMITED,
)
# The client's action for every vidscan.v1.ErrorReason, keyed by the generated enum;
# tests/test_error_reasons.py fails when a proto value has no entry.
RECOVERY: Final[Mapping[int, Recovery]] = MappingProxyType(
    {
        number: (
            Recovery.RETRY
            if number in _RETRY
            else Recovery.RESUME_AT_OFFSET
            if number == R.INVALID_OFFSET
            else Recovery.FINAL
        )
        for number in ErrorReason.values()
        if number != R.ERROR_REASON_UNSPECIFIED
    }
)
# Transport failures (a reset connection, RST_STREAM) carry no server ErrorInfo.
_TRANSPORT_CODES = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})


def _reason_value(reason: str) -> int:
    """The ErrorReason for a wire string; ERROR_REASON_UNSPECIFIED for one this
    client does not know (a newer server) or for a client-side reason."""
    try:
        return ErrorReason.Value(reason)
    except ValueError:
        return ErrorReason.ERROR_REASON_UNSPECIFIED


class VidscanError(Exception):
    """A failed call, with the server's google.rpc.Status details unpacked.

    ``reason`` is the stable ErrorInfo reason (e.g. ``FILE_TOO_LARGE``), the name of
    a ``vidscan.v1.ErrorReason`` value (``reason_value``); it is empty for transport
    failures that never reached vidscan (a reset connection).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        *,
        metadata: dict[str, str] | None = None,
        cleanup: errors_pb2.CleanupReport | None = None,
        field_violations: dict[str, str] | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(f"{reason or code.name}: {message}")
        self.code = code
        self.reason = reason
        self.reason_value = _reason_value(reason)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})
        self.cleanup = cleanup
        self.field_violations: dict[str, str] = dict(field_violations or {})
        # google.rpc.RetryInfo: the server's advice on how long to wait before retrying.
        self.retry_after_seconds = retry_after_seconds

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> VidscanError:
        """Unpacks ErrorInfo, CleanupReport and BadRequest from a failed call: a sync
        ``grpc.Call`` or a ``grpc.aio.AioRpcError`` (both have code, details and
        trailing metadata)."""
        if not isinstance(error, (grpc.Call, grpc.aio.AioRpcError)):
            return cls(grpc.StatusCode.UNKNOWN, "", str(error))
        code = error.code()
        message = error.details() or ""
        reason, metadata, cleanup = "", {}, None
        retry_after: float | None = None
        violations: dict[str, str] = {}
        try:
            status = rpc_status.from_call(error)
        except ValueError:  # trailers that contradict the call's status: ignore them
            status = None
        if status is not None:
            message = status.message
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason, metadata = str(info.reason), dict(info.metadata)
                elif detail.Is(errors_pb2.CleanupReport.DESCRIPTOR):
                    cleanup = errors_pb2.CleanupReport()
                    detail.Unpack(cleanup)
                elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    retry = error_details_pb2.RetryInfo()
                    detail.Unpack(retry)
                    retry_after = retry.retry_delay.ToNanoseconds() / 1e9
                elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    violations = {str(v.field): str(v.description) for v in bad.field_violations}
        return cls(
            code,
            reason,
            message,
            metadata=metadata,
            cleanup=cleanup,
            field_violations=violations,
            retry_after_seconds=retry_after,
        )

    @property
    def transient(self) -> bool:
        """True when the same request may succeed later (after resuming)."""
        if self.code in TRANSIENT_CODES or self.recovery is Recovery.RETRY:
            return True
        return not self.reason and self.code in _TRANSPORT_CODES

    @property
    def recovery(self) -> Recovery | None:
        """The client's action for this reason; None for no reason or one newer than
        this client (then the gRPC code decides: ``transient``)."""
        return RECOVERY.get(self.reason_value)

    @property
    def stale_offset(self) -> bool:
        """INVALID_OFFSET: the stream started elsewhere than the committed offset."""
        return self.recovery is Recovery.RESUME_AT_OFFSET

    def retry_delay(self, backoff_seconds: float) -> float:
        """How long to wait before retrying: the backoff, or longer if the server's
        RetryInfo asks for it."""
        return max(backoff_seconds, self.retry_after_seconds or 0.0)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape the CLI prints."""
        return {
            "code": self.code.name,
            "reason": self.reason,
            "message": self.message,
            "metadata": self.metadata,
            "field_violations": self.field_violations,
            "cleanup": (
                json_format.MessageToDict(
                    self.cleanup,
                    preserving_proto_field_name=True,
                    always_print_fields_with_no_presence=True,
                )
                if self.cleanup is not None
                else None
            ),
        }

    def __repr__(self) -> str:
        return f"VidscanError({self.code.name}, {self.reason!r}, {self.message!r})"
