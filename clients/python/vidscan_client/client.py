"""VidscanClient: a synchronous, typed client for vidscan with resumable uploads.

Uploads use the synchronous gRPC API on purpose: grpc.aio's client misreports the
server's status when the server ends a client stream early (grpc/grpc#36066), which
is exactly what a refused upload looks like. The asyncio client (``aio.py``) runs this
upload in a worker thread for the same reason.

Resumption follows google.bytestream: after a transient failure the client asks
``GetUploadSession`` for ``committed_bytes`` and sends the rest of the file from that
offset with ``write_offset`` set to it. When the server refuses an offset
(INVALID_OFFSET) it names the one it expects (``expected_offset``), and the client
resumes from exactly that. A session whose bytes are all stored (sealed) is
finished by a stream that sends no data, only ``finish_write``.
"""

from __future__ import annotations

import mimetypes
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from vidscan_client.analyses import is_final
from vidscan_client.backoff import DEFAULT_POLL, Backoff
from vidscan_client.errors import (
    SESSION_CANCELLED,
    SESSION_COMPLETED,
    SESSION_EXPIRED,
    TRANSIENT_CODES,
    VidscanError,
)
from vidscan_client.protos import analysis_pb2, analysis_pb2_grpc, upload_pb2, upload_pb2_grpc
from vidscan_client.streaming import (
    Abandon,
    Abandoned,
    Attempt,
    ProgressCallback,
    Stream,
    sha256,
    struct,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_WAIT_SECONDS",
    "MAX_CHUNK_SIZE",
    "Abandon",
    "Abandoned",
    "Backoff",
    "ProgressCallback",
    "RetryCallback",
    "UploadResult",
    "VidscanClient",
    "VidscanError",
    "resume_offset_from",
]

UploadResult = upload_pb2.UploadResult
RetryCallback = Callable[[int, VidscanError, float], None]
"""``on_retry(attempt, error, delay_seconds)``, called before sleeping."""

DEFAULT_CHUNK_SIZE = 1024 * 1024
# The server's default receive limit is 4 MiB per message; leave room for framing.
MAX_CHUNK_SIZE = 3 * 1024 * 1024
DEFAULT_WAIT_SECONDS = 300.0

T = TypeVar("T")


class VidscanClient:
    """One user's connection to vidscan. Thread-safe; close it (or use ``with``).

    ``retries`` bounds the retries of unary calls on UNAVAILABLE / DEADLINE_EXCEEDED;
    uploads have their own ``max_retries``. ``secure`` uses TLS with the system's
    roots; ``credentials`` (e.g. from :func:`tls_credentials`: a private CA, a client
    certificate for mTLS) uses TLS with those.
    """

    def __init__(
        self,
        target: str,
        token: str,
        *,
        secure: bool = False,
        credentials: grpc.ChannelCredentials | None = None,
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
            grpc.secure_channel(
                target, credentials or grpc.ssl_channel_credentials(), options=options
            )
            if secure or credentials is not None
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
                if error.code not in TRANSIENT_CODES or attempt >= limit:
                    raise error from None
            attempt += 1
            time.sleep(error.retry_delay(self.backoff.delay(attempt)))

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
        """Cancels a session: a suspended upload is discarded at once (its parts, its
        quota unit); ``cleanup_performed`` says whether there was anything to release.
        An unknown session (or another user's) answers SESSION_NOT_FOUND."""
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

    def wait_for_analysis(
        self,
        analysis_id: str,
        *,
        timeout: float = DEFAULT_WAIT_SECONDS,
        poll: Backoff = DEFAULT_POLL,
    ) -> analysis_pb2.Analysis:
        """Polls GetAnalysis until the analysis is ANALYZED or FAILED, or ``timeout``
        seconds have passed; returns the last analysis seen either way (check
        ``analyses.is_final``)."""
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            analysis = self.analysis(analysis_id)
            left = deadline - time.monotonic()
            if is_final(analysis) or left <= 0:
                return analysis
            attempt += 1
            time.sleep(min(left, poll.delay(attempt)))

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
        abandon: Abandon | None = None,
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
        unless ``session_id`` names an active one. ``abandon``, set from another
        thread, stops the upload (``Abandoned`` is raised).

        Raises VidscanError for refusals and when retries run out; OSError when the
        file cannot be read or changes while it is sent.
        """
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be in 1..{MAX_CHUNK_SIZE}")
        stop = abandon or Abandon()
        file_path = Path(path)
        total = file_path.stat().st_size
        declared_sha256 = sha256(file_path, chunk_size) if dedup else ""
        header = upload_pb2.UploadHeader(
            filename=file_path.name,
            content_type=mimetypes.guess_type(file_path.name)[0] or "",
            declared_sha256=declared_sha256,
            model=model,
        )
        if dedup:
            header.declared_size = total
        if metadata is not None:
            header.metadata.CopyFrom(struct(metadata))
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
                stream = Stream(header, file_path, offset, total, chunk_size, on_progress)
                return self._send(stream, attempt_timeout, stop)
            except VidscanError as error:
                # INVALID_OFFSET: our offset is stale; ask again and resume from there.
                if not (error.transient or error.stale_offset) or stop.is_set():
                    raise
                attempt += 1
                if attempt > max_retries:
                    raise
                offset = resume_offset_from(error, total)
                delay = (
                    0.0 if offset is not None else error.retry_delay(self.backoff.delay(attempt))
                )
                if on_retry is not None:
                    on_retry(attempt, error, delay)
                stop.sleep(delay)

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
        self, stream: Stream, timeout: float | None, stop: Abandon
    ) -> upload_pb2.UploadResult:
        attempt = Attempt()
        call = self._uploads.UploadVideo.future(
            stream.requests(attempt), metadata=self._metadata, timeout=timeout
        )
        stop.on_set(call.cancel)
        try:
            response: upload_pb2.UploadVideoResponse = call.result()
        except grpc.FutureCancelledError:
            raise Abandoned from None
        except grpc.RpcError as rpc_error:
            if stop.is_set():
                raise Abandoned from None
            if attempt.error is not None:
                raise attempt.error from None
            raise VidscanError.from_rpc_error(rpc_error) from None
        finally:
            attempt.over = True
        if attempt.error is not None:  # the server never accepts a stream without finish_write
            raise attempt.error
        return response.result


def resume_offset_from(error: VidscanError, total: int) -> int | None:
    """The offset the server said it expects (INVALID_OFFSET carries it as
    ``expected_offset``): the next stream starts there at once. None when the error
    names none, and the session must be asked (GetUploadSession)."""
    if not error.stale_offset:
        return None
    try:
        expected = int(error.metadata.get("expected_offset", ""))
    except ValueError:
        return None
    return expected if 0 <= expected <= total else None


def tls_credentials(
    *, ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> grpc.ChannelCredentials:
    """TLS credentials from PEM files: ``ca_file`` to verify the server (system roots
    when None), ``cert_file`` and ``key_file`` to present a client certificate (mTLS)."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("cert_file and key_file go together")

    def read(path: str | None) -> bytes | None:
        if path is None:
            return None
        with open(path, "rb") as source:
            return source.read()

    return grpc.ssl_channel_credentials(
        root_certificates=read(ca_file),
        private_key=read(key_file),
        certificate_chain=read(cert_file),
    )
