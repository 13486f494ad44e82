"""ContentService: a user's stored video, whole or a byte range, streamed.

The gateway serves it as ``GET /v1/videos/{video_id}/content`` with HTTP range
requests: the playable URL of a video kept by the embedded object store (which has
no URL of its own), and a way to read any video through the API. Reads go to the
object store in ``CHUNK_BYTES`` pieces, so memory per request stays one chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from vidscan.v1 import content_pb2, content_pb2_grpc

from server.api.status import rpc_stream_errors
from server.auth import Authenticator
from server.errors import NotFound, RangeNotSatisfiable, Reason, invalid_field
from server.limits.policy import UserLimits
from server.records.port import VideoRepository
from server.storage.port import ObjectStore
from server.storage.signing import LinkSigner, SignedLink

Context = grpc.aio.ServicerContext[Any, Any]
CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ByteRange:
    offset: int
    length: int


def byte_range(request: content_pb2.ReadVideoContentRequest, size: int) -> ByteRange:
    """The bytes asked for, clamped to the file as HTTP ranges are (RFC 9110 14.1.2)."""
    if request.HasField("suffix_length"):
        if request.suffix_length <= 0:
            raise invalid_field("suffix_length", "must be positive")
        length = min(request.suffix_length, size)
        return ByteRange(size - length, length)
    if request.offset < 0:
        raise invalid_field("offset", "must not be negative")
    if request.HasField("length") and request.length <= 0:
        raise invalid_field("length", "must be positive")
    if request.offset >= size:
        raise RangeNotSatisfiable(
            Reason.RANGE_NOT_SATISFIABLE,
            f"offset {request.offset} is past the end of the {size}-byte file",
            metadata={"size": str(size)},
        )
    end = size if not request.HasField("length") else min(size, request.offset + request.length)
    return ByteRange(request.offset, end - request.offset)


class ContentServicer(content_pb2_grpc.ContentServiceServicer):
    def __init__(
        self,
        *,
        auth: Authenticator,
        repository: VideoRepository,
        store: ObjectStore,
        limits: UserLimits,
        signer: LinkSigner,
    ) -> None:
        self._auth = auth
        self._signer = signer
        self._repo = repository
        self._store = store
        self._limits = limits

    @rpc_stream_errors
    async def ReadVideoContent(
        self, request: content_pb2.ReadVideoContentRequest, context: Context
    ) -> AsyncIterator[content_pb2.ReadVideoContentResponse]:
        if request.signature:  # a signed link (a browser's <video src>), not a token
            user_id = self._signer.verify(
                video_id=request.video_id,
                link=SignedLink(request.user_id, request.expires, request.signature),
            )
        else:
            user_id = await self._auth.user_from_metadata(context.invocation_metadata())
        await self._limits.check_rate(user_id, "unary")
        video = await self._repo.get_video(user_id=user_id, video_id=request.video_id)
        if video is None:
            raise NotFound(
                Reason.VIDEO_NOT_FOUND, "video not found", metadata={"video_id": request.video_id}
            )
        wanted = byte_range(request, video.file_size)
        yield content_pb2.ReadVideoContentResponse(
            info=content_pb2.ContentInfo(
                total_size=video.file_size,
                offset=wanted.offset,
                length=wanted.length,
                content_type=video.content_type,
                filename=video.filename,
                sha256=video.file_hash,
            )
        )
        position, end = wanted.offset, wanted.offset + wanted.length
        while position < end:
            size = min(CHUNK_BYTES, end - position)
            data = await self._store.read_range(video.s3_key, start=position, length=size)
            yield content_pb2.ReadVideoContentResponse(data=data)
            position += size
