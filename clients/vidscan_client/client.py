"""A synchronous, typed client for vidscan with resumable uploads.

Uploads use the synchronous gRPC API on purpose: grpc.aio's client misreports the
server's status when the server ends a client stream early (grpc/grpc#36066), which
is exactly what a refused upload looks like.

Resumption follows google.bytestream: after a transient failure the client asks
``GetUploadSession`` for ``committed_bytes`` and sends the rest of the file from that
offset with ``write_offset`` set to it. When the server refuses an offset
(INVALID_OFFSET) it names the one it expects (``expected_offset``), and the client
resumes from exactly that. A session whose bytes are all stored (sealed) is
finished by a stream that sends no data, only ``finish_write``.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from vidscan.v1 import (
    analysis_pb2,
    analysis_pb2_grpc,
    errors_pb2,
    upload_pb2,
    upload_pb2_grpc,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "Backoff",
    "ProgressCallback",
    "RetryCallback",
    "UploadResult",
    "VidscanClient",
    "VidscanError",
]

UploadResult = upload_pb2.UploadResult
ProgressCallback = Callable[[int, int], None]
"""``on_progress(sent_bytes, total_bytes)``."""
RetryCallback = Callable[[int, "VidscanError", float], None]
"""``on_retry(attempt, error, delay_seconds)``, called before sleeping."""

DEFAULT_CHUNK_SIZE = 1024 * 1024
# The server's default receive limit is 4 MiB per message; leave room for framing.
MAX_CHUNK_SIZE = 3 * 1024 * 1024

# Reasons the client attaches itself (never sent by the server).
SESSION_EXPIRED = "SESSION_EXPIRED"
SESSION_CANCELLED = "SESSION_CANCELLED"
SESSION_COMPLETED = "SESSION_COMPLETED"

_TRANSIENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# UPLOAD_INCOMPLETE: the stream was cut before finish_write; the session can be written
# again. SESSION_BUSY: the server is still cleaning up the stream that was cut.
_TRANSIENT_REASONS = frozenset({"UPLOAD_INCOMPLETE", "SESSION_BUSY", "SESSION_LOCK_LOST"})
# Transport failures (a reset connection, RST_STREAM) carry no server ErrorInfo.
_TRANSPORT_CODES = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})

T = TypeVar("T")


class VidscanError(Exception):
    """A failed call, with the server's google.rpc.Status details unpacked.

    ``reason`` is the stable ErrorInfo reason (e.g. ``FILE_TOO_LARGE``); it is empty
    for transport failures that never reached vidscan (a reset connection).
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
    ) -> None:
        super().__init__(f"{reason or code.name}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})
        self.cleanup = cleanup
        self.field_violations: dict[str, str] = dict(field_violations or {})

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> VidscanError:
        """Unpacks ErrorInfo, CleanupReport and BadRequest from a failed call."""
        if not isinstance(error, grpc.Call):
            return cls(grpc.StatusCode.UNKNOWN, "", str(error))
        code = error.code()
        message = error.details() or ""
        reason, metadata, cleanup = "", {}, None
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
        )

    @property
    def transient(self) -> bool:
        """True when the same request may succeed later (after resuming)."""
        if self.code in _TRANSIENT_CODES or self.reason in _TRANSIENT_REASONS:
            return True
        return not self.reason and self.code in _TRANSPORT_CODES

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


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``initial`` doubling up to ``maximum``, each delay scaled
    down by a random factor in ``[1 - jitter, 1]``."""

    initial: float = 0.5
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5
    _random: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, attempt: int) -> float:
        """The pause before retry number ``attempt`` (1-based)."""
        base = min(self.maximum, self.initial * self.multiplier ** max(0, attempt - 1))
        return base * (1.0 - self.jitter * self._random.random())


class _Attempt:
    """One UploadVideo stream.

    ``error`` keeps an exception raised while producing request messages (reading the
    file, the progress callback): gRPC would turn it into a bare UNKNOWN, so the stream
    is ended without finish_write instead (the server keeps nothing) and the error is
    re-raised once the call is over. ``over`` is set when the call has ended: gRPC's
    request thread of a failed call may still pull one more message, and must then
    neither read on nor report progress over the next attempt's.
    """

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.over = False


class VidscanClient:
    """One user's connection to vidscan. Thread-safe; close it (or use ``with``).

    ``retries`` bounds the retries of unary calls on UNAVAILABLE / DEADLINE_EXCEEDED;
    uploads have their own ``max_retries``.
    """

    def __init__(
        self,
        target: str,
        token: str,
        *,
        secure: bool = False,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: Backoff | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff or Backoff()
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._channel = (
            grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
            if secure
            else grpc.insecure_channel(target, options=options)
        )
        self._uploads = upload_pb2_grpc.UploadServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._analyses = analysis_pb2_grpc.AnalysisServiceStub(self._channel)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> VidscanClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- unary calls ------------------------------------------------------------------

    def _unary(self, call: Callable[[], T], retries: int | None = None) -> T:
        limit = self.retries if retries is None else retries
        attempt = 0
        while True:
            try:
                return call()
            except grpc.RpcError as rpc_error:
                error = VidscanError.from_rpc_error(rpc_error)
                if error.code not in _TRANSIENT_CODES or attempt >= limit:
                    raise error from None
            attempt += 1
            time.sleep(self.backoff.delay(attempt))

    def create_session(self, *, expected_size: int | None = None) -> upload_pb2.UploadSession:
        """Opens an upload session; ``expected_size`` lets the server refuse a file that
        is too large (FILE_TOO_LARGE) before any byte is sent."""
        request = upload_pb2.CreateUploadSessionRequest()
        if expected_size is not None:
            request.expected_size = expected_size
        response: upload_pb2.CreateUploadSessionResponse = self._unary(
            lambda: self._uploads.CreateUploadSession(
                request, metadata=self._metadata, timeout=self.timeout
            )
        )
        return response.session

    def session_status(
        self, session_id: str, *, retries: int | None = None
    ) -> upload_pb2.GetUploadSessionResponse:
        """The session's state ("active", "expired", "cancelled", "completed") and
        ``session.committed_bytes``, the offset a resumed upload starts at."""
        request = upload_pb2.GetUploadSessionRequest(session_id=session_id)
        response: upload_pb2.GetUploadSessionResponse = self._unary(
            lambda: self._uploads.GetUploadSession(
                request, metadata=self._metadata, timeout=self.timeout
            ),
            retries,
        )
        return response

    def cancel(self, session_id: str) -> upload_pb2.CancelUploadSessionResponse:
        request = upload_pb2.CancelUploadSessionRequest(session_id=session_id)
        response: upload_pb2.CancelUploadSessionResponse = self._unary(
            lambda: self._uploads.CancelUploadSession(
                request, metadata=self._metadata, timeout=self.timeout
            )
        )
        return response

    def video(self, video_id: str) -> analysis_pb2.Video:
        request = analysis_pb2.GetVideoRequest(video_id=video_id)
        response: analysis_pb2.GetVideoResponse = self._unary(
            lambda: self._analyses.GetVideo(request, metadata=self._metadata, timeout=self.timeout)
        )
        return response.video

    def analysis(self, analysis_id: str) -> analysis_pb2.Analysis:
        request = analysis_pb2.GetAnalysisRequest(analysis_id=analysis_id)
        response: analysis_pb2.GetAnalysisResponse = self._unary(
            lambda: self._analyses.GetAnalysis(
                request, metadata=self._metadata, timeout=self.timeout
            )
        )
        return response.analysis

    # -- upload -----------------------------------------------------------------------

    def upload(
        self,
        path: str | os.PathLike[str],
        *,
        model: str = "",
        dedup: bool = False,
        metadata: dict[str, Any] | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        on_progress: ProgressCallback | None = None,
        on_retry: RetryCallback | None = None,
        max_retries: int = 8,
        attempt_timeout: float | None = None,
        session_id: str | None = None,
    ) -> upload_pb2.UploadResult:
        """Uploads one file and returns the server's UploadResult.

        The file is read chunk by chunk (memory stays bounded by ``chunk_size``). With
        ``dedup=True`` its SHA-256 and size are computed first and declared in the
        header, so the server can match a video this user already has and verify the
        bytes. Transient failures are retried up to ``max_retries`` times with
        exponential backoff, each time resuming at the offset the server reports as
        committed. ``on_progress(sent, total)`` runs on a gRPC thread; after a resume
        ``sent`` starts again at the committed offset. ``attempt_timeout`` is a
        deadline per stream attempt (none by default). A new session is created
        unless ``session_id`` names an active one.

        Raises VidscanError for refusals and when retries run out; OSError when the
        file cannot be read or changes while it is sent.
        """
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be in 1..{MAX_CHUNK_SIZE}")
        file_path = Path(path)
        total = file_path.stat().st_size
        declared_sha256 = _sha256(file_path, chunk_size) if dedup else ""
        header = upload_pb2.UploadHeader(
            filename=file_path.name,
            content_type=mimetypes.guess_type(file_path.name)[0] or "",
            declared_sha256=declared_sha256,
            model=model,
        )
        if dedup:
            header.declared_size = total
        if metadata is not None:
            header.metadata.CopyFrom(_struct(metadata))
        if session_id is None:
            session = self.create_session(expected_size=total)
            header.session_id = session.session_id
            offset: int | None = session.committed_bytes
        else:
            header.session_id = session_id
            offset = None

        attempt = 0
        while True:
            try:
                if offset is None:
                    offset = self._resume_offset(header.session_id, total)
                return self._send(
                    header, file_path, offset, total, chunk_size, on_progress, attempt_timeout
                )
            except VidscanError as error:
                # INVALID_OFFSET: our offset is stale; ask again and resume from there.
                if not (error.transient or error.reason == "INVALID_OFFSET"):
                    raise
                attempt += 1
                if attempt > max_retries:
                    raise
                offset = resume_offset_from(error, total)
                delay = 0.0 if offset is not None else self.backoff.delay(attempt)
                if on_retry is not None:
                    on_retry(attempt, error, delay)
                time.sleep(delay)

    def _resume_offset(self, session_id: str, total: int) -> int:
        """Where a resumed stream starts: the session's committed offset."""
        # No retries of its own: a failure here counts against the upload's budget.
        status = self.session_status(session_id, retries=0)
        if status.status == "active":
            return min(max(0, status.session.committed_bytes), total)
        reason = {
            "expired": SESSION_EXPIRED,
            "cancelled": SESSION_CANCELLED,
            "completed": SESSION_COMPLETED,
        }.get(status.status, status.status.upper())
        message = f"cannot resume the upload: session {session_id} is {status.status}"
        if status.status == "completed":
            message += " (the upload finished, but its result was lost with the connection)"
        raise VidscanError(
            grpc.StatusCode.FAILED_PRECONDITION,
            reason,
            message,
            metadata={"session_id": session_id, "status": status.status},
        )

    def _send(
        self,
        header: upload_pb2.UploadHeader,
        path: Path,
        offset: int,
        total: int,
        chunk_size: int,
        on_progress: ProgressCallback | None,
        timeout: float | None,
    ) -> upload_pb2.UploadResult:
        first = upload_pb2.UploadHeader()
        first.CopyFrom(header)
        first.write_offset = offset
        attempt = _Attempt()
        requests = _requests(first, path, offset, total, chunk_size, on_progress, attempt)
        try:
            response: upload_pb2.UploadVideoResponse = self._uploads.UploadVideo(
                requests, metadata=self._metadata, timeout=timeout
            )
        except grpc.RpcError as rpc_error:
            if attempt.error is not None:
                raise attempt.error from None
            raise VidscanError.from_rpc_error(rpc_error) from None
        finally:
            attempt.over = True
        if attempt.error is not None:  # the server never accepts a stream without finish_write
            raise attempt.error
        return response.result


def _requests(
    header: upload_pb2.UploadHeader,
    path: Path,
    offset: int,
    total: int,
    chunk_size: int,
    on_progress: ProgressCallback | None,
    attempt: _Attempt,
) -> Iterator[upload_pb2.UploadVideoRequest]:
    """header, the file from ``offset`` in chunks, then finish_write. Any error ends
    the stream early without finish_write, so the server discards what it got. Each
    attempt reads through its own file handle."""

    def report(sent: int) -> None:
        if on_progress is not None and not attempt.over:
            on_progress(sent, total)

    try:
        yield upload_pb2.UploadVideoRequest(header=header)
        with path.open("rb") as source:
            source.seek(offset)
            sent = offset
            report(sent)
            while sent < total and not attempt.over:
                data = source.read(min(chunk_size, total - sent))
                if not data:
                    raise OSError(f"{path}: the file shrank while it was sent ({sent} bytes)")
                yield upload_pb2.UploadVideoRequest(chunk=data)
                sent += len(data)
                report(sent)
            if attempt.over:
                return
            if source.read(1):
                raise OSError(f"{path}: the file grew while it was sent (beyond {total} bytes)")
    except Exception as error:
        attempt.error = error
        return
    yield upload_pb2.UploadVideoRequest(finish_write=True)


def resume_offset_from(error: VidscanError, total: int) -> int | None:
    """The offset the server said it expects (INVALID_OFFSET carries it as
    ``expected_offset``): the next stream starts there at once. None when the error
    names none, and the session must be asked (GetUploadSession)."""
    if error.reason != "INVALID_OFFSET":
        return None
    try:
        expected = int(error.metadata.get("expected_offset", ""))
    except ValueError:
        return None
    return expected if 0 <= expected <= total else None


def _sha256(path: Path, chunk_size: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message
