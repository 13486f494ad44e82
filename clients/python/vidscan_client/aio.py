"""AsyncVidscanClient: the asyncio client.

Unary calls are native grpc.aio calls with the same retries as the sync client.
Uploads are not: grpc.aio's client misreports the server's status when the server
ends a client stream early (grpc/grpc#36066) — exactly what a refused upload looks
like — so ``upload`` runs the sync client's resumable upload in a worker thread and
awaits it. Cancelling the awaiting task cancels the stream in flight and stops the
retries; the session keeps what it committed (resume it with ``session_id``, or
``cancel`` it). Callbacks (``on_progress``, ``on_retry``) run on that worker thread.

::

    async with AsyncVidscanClient("127.0.0.1:50051", token) as client:
        result = await client.upload("clip.mp4")
        analysis = await client.wait_for_analysis(result.analysis_id)
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc

from vidscan_client.analyses import is_final
from vidscan_client.backoff import DEFAULT_POLL, Backoff
from vidscan_client.client import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_WAIT_SECONDS,
    RetryCallback,
    VidscanClient,
)
from vidscan_client.errors import TRANSIENT_CODES, VidscanError
from vidscan_client.protos import analysis_pb2, analysis_pb2_grpc, upload_pb2, upload_pb2_grpc
from vidscan_client.streaming import Abandon, ProgressCallback

__all__ = ["AsyncVidscanClient"]

T = TypeVar("T")


class AsyncVidscanClient:
    """One user's asyncio connection to vidscan; create it inside the event loop and
    close it (or use ``async with``). Arguments as for VidscanClient."""

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
            grpc.aio.secure_channel(
                target, credentials or grpc.ssl_channel_credentials(), options=options
            )
            if secure or credentials is not None
            else grpc.aio.insecure_channel(target, options=options)
        )
        self._uploads = upload_pb2_grpc.UploadServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._analyses = analysis_pb2_grpc.AnalysisServiceStub(self._channel)  # type: ignore[no-untyped-call]
        # The uploads' own (sync) channel; it connects on the first upload.
        self._streaming = VidscanClient(
            target,
            token,
            secure=secure,
            credentials=credentials,
            timeout=timeout,
            retries=retries,
            backoff=self.backoff,
            options=options,
        )

    async def close(self) -> None:
        await self._channel.close()
        self._streaming.close()

    async def __aenter__(self) -> AsyncVidscanClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _unary(self, call: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            try:
                return await call()
            except grpc.RpcError as rpc_error:
                error = VidscanError.from_rpc_error(rpc_error)
                if error.code not in TRANSIENT_CODES or attempt >= self.retries:
                    raise error from None
            attempt += 1
            await asyncio.sleep(error.retry_delay(self.backoff.delay(attempt)))

    async def create_session(self, *, expected_size: int | None = None) -> upload_pb2.UploadSession:
        request = upload_pb2.CreateUploadSessionRequest()
        if expected_size is not None:
            request.expected_size = expected_size
        response: upload_pb2.CreateUploadSessionResponse = await self._unary(
            lambda: self._uploads.CreateUploadSession(
                request, metadata=self._metadata, timeout=self.timeout
            )
        )
        return response.session

    async def session_status(self, session_id: str) -> upload_pb2.GetUploadSessionResponse:
        request = upload_pb2.GetUploadSessionRequest(session_id=session_id)
        response: upload_pb2.GetUploadSessionResponse = await self._unary(
            lambda: self._uploads.GetUploadSession(
                request, metadata=self._metadata, timeout=self.timeout
            )
        )
        return response

    async def cancel(self, session_id: str) -> upload_pb2.CancelUploadSessionResponse:
        request = upload_pb2.CancelUploadSessionRequest(session_id=session_id)
        response: upload_pb2.CancelUploadSessionResponse = await self._unary(
            lambda: self._uploads.CancelUploadSession(
                request, metadata=self._metadata, timeout=self.timeout
            )
        )
        return response

    async def video(self, video_id: str) -> analysis_pb2.Video:
        request = analysis_pb2.GetVideoRequest(video_id=video_id)
        response: analysis_pb2.GetVideoResponse = await self._unary(
            lambda: self._analyses.GetVideo(request, metadata=self._metadata, timeout=self.timeout)
        )
        return response.video

    async def analysis(self, analysis_id: str) -> analysis_pb2.Analysis:
        request = analysis_pb2.GetAnalysisRequest(analysis_id=analysis_id)
        response: analysis_pb2.GetAnalysisResponse = await self._unary(
            lambda: self._analyses.GetAnalysis(
                request, metadata=self._metadata, timeout=self.timeout
            )
        )
        return response.analysis

    async def wait_for_analysis(
        self,
        analysis_id: str,
        *,
        timeout: float = DEFAULT_WAIT_SECONDS,
        poll: Backoff = DEFAULT_POLL,
    ) -> analysis_pb2.Analysis:
        """As VidscanClient.wait_for_analysis: the last analysis seen, final or not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        attempt = 0
        while True:
            analysis = await self.analysis(analysis_id)
            left = deadline - loop.time()
            if is_final(analysis) or left <= 0:
                return analysis
            attempt += 1
            await asyncio.sleep(min(left, poll.delay(attempt)))

    async def upload(
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
        """As VidscanClient.upload, in a worker thread (see the module docstring)."""
        abandon = Abandon()
        try:
            return await asyncio.to_thread(
                self._streaming.upload,
                path,
                model=model,
                dedup=dedup,
                metadata=metadata,
                chunk_size=chunk_size,
                on_progress=on_progress,
                on_retry=on_retry,
                max_retries=max_retries,
                attempt_timeout=attempt_timeout,
                session_id=session_id,
                abandon=abandon,
            )
        except asyncio.CancelledError:
            abandon.set()
            raise
