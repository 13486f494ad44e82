"""AnalysisService: read and list a user's videos and analyses.

Listings are pages in the sense of AIP-158. A page token is the keyset cursor of
the page's last item, (created_at, id), never an offset, so a page does not shift
when the user uploads meanwhile. It is base64url JSON, opaque to clients, and
carries a digest of what it was issued for (user, listing, video, filter): a
token used by another user or with another filter is refused as INVALID_FIELD
rather than silently listing something else. It is not signed and need not be:
every query is bounded by the caller's user_id, so a forged cursor only moves
within the caller's own rows.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Final

import grpc
from vidscan.v1 import analysis_pb2, analysis_pb2_grpc

from server.analysis.watch import AnalysisWatch
from server.api import messages
from server.api.status import rpc_errors, rpc_stream_errors
from server.auth import Authenticator
from server.errors import InvalidUpload, NotFound, Reason, invalid_field
from server.limits.policy import UserLimits
from server.records.model import AnalysisRecord, AnalysisStatus, VideoRecord
from server.records.port import PageCursor, VideoCatalog
from server.storage.links import PlaybackLinks

Context = grpc.aio.ServicerContext[Any, Any]

DEFAULT_PAGE_SIZE: Final = 20
MAX_PAGE_SIZE: Final = 100

_STATUSES: Final[dict[int, AnalysisStatus]] = {
    int(wire): status for status, wire in messages.ANALYSIS_STATUSES.items()
}


def page_size(requested: int) -> int:
    """0 is the default; above the maximum is the maximum (AIP-158); below 0 is an error."""
    if requested < 0:
        raise invalid_field("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def status_filter(wire: int) -> AnalysisStatus | None:
    if wire == analysis_pb2.ANALYSIS_STATUS_UNSPECIFIED:
        return None
    status = _STATUSES.get(wire)
    if status is None:
        raise invalid_field("analysis_status", f"unknown AnalysisStatus {wire}")
    return status


def _scope(*parts: str) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def page_token(cursor: PageCursor | None, *scope: str) -> str:
    """The token of the page after ``cursor``; empty when there is none."""
    if cursor is None:
        return ""
    body = {"s": _scope(*scope), "t": cursor.created_at.isoformat(), "i": cursor.id}
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def page_cursor(token: str, *scope: str) -> PageCursor | None:
    """The cursor in ``token`` (None for the first page), or INVALID_FIELD."""
    if not token:
        return None
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        cursor = PageCursor(created_at=datetime.fromisoformat(body["t"]), id=str(body["i"]))
        issued_for = body["s"]
    except (binascii.Error, ValueError, TypeError, KeyError) as error:
        raise _bad_token("malformed; pass next_page_token back unchanged") from error
    if cursor.created_at.tzinfo is None:
        raise _bad_token("malformed; pass next_page_token back unchanged")
    if issued_for != _scope(*scope):
        raise _bad_token("was issued for another user, listing or filter")
    return cursor


def _bad_token(description: str) -> InvalidUpload:
    return invalid_field("page_token", description)


class AnalysisServicer(analysis_pb2_grpc.AnalysisServiceServicer):
    def __init__(
        self,
        *,
        auth: Authenticator,
        repository: VideoCatalog,
        links: PlaybackLinks,
        limits: UserLimits,
        watch: AnalysisWatch,
    ) -> None:
        self._auth = auth
        self._limits = limits
        self._repo = repository
        self._links = links
        self._watch = watch

    @rpc_errors
    async def GetVideo(
        self, request: analysis_pb2.GetVideoRequest, context: Context
    ) -> analysis_pb2.GetVideoResponse:
        user_id = await self._auth.user_from_metadata(context.invocation_metadata())
        await self._limits.check_rate(user_id, "unary")
        row = await self._repo.get_video(user_id=user_id, video_id=request.video_id)
        if row is None:
            raise NotFound(
                Reason.VIDEO_NOT_FOUND, "video not found", metadata={"video_id": request.video_id}
            )
        latest = await self._repo.latest_analysis_id(video_id=row.id)
        return analysis_pb2.GetVideoResponse(video=self._video(row, latest_analysis_id=latest))

    def _video(self, row: VideoRecord, *, latest_analysis_id: str) -> analysis_pb2.Video:
        """The one Video message, so GetVideo and ListVideos cannot drift apart."""
        return messages.video(
            row, uri=self._links.playback_url(row), latest_analysis_id=latest_analysis_id
        )

    @rpc_errors
    async def GetAnalysis(
        self, request: analysis_pb2.GetAnalysisRequest, context: Context
    ) -> analysis_pb2.GetAnalysisResponse:
        user_id = await self._auth.user_from_metadata(context.invocation_metadata())
        await self._limits.check_rate(user_id, "unary")
        row = await self._repo.get_analysis(user_id=user_id, analysis_id=request.analysis_id)
        if row is None:
            raise NotFound(
                Reason.ANALYSIS_NOT_FOUND,
                "analysis not found",
                metadata={"analysis_id": request.analysis_id},
            )
        return analysis_pb2.GetAnalysisResponse(analysis=messages.analysis(row))

    @rpc_stream_errors
    async def WatchAnalysis(
        self, request: analysis_pb2.WatchAnalysisRequest, context: Context
    ) -> AsyncIterator[analysis_pb2.WatchAnalysisResponse]:
        """GetAnalysis, then again on each change until final; one rate-limit token
        per call, however long it streams."""
        user_id = await self._auth.user_from_metadata(context.invocation_metadata())
        await self._limits.check_rate(user_id, "unary")
        analysis_id = request.analysis_id

        async def read() -> AnalysisRecord | None:
            return await self._repo.get_analysis(user_id=user_id, analysis_id=analysis_id)

        async with contextlib.aclosing(self._watch.follow(analysis_id, read)) as rows:
            async for row in rows:
                yield analysis_pb2.WatchAnalysisResponse(analysis=messages.analysis(row))

    @rpc_errors
    async def ListVideos(
        self, request: analysis_pb2.ListVideosRequest, context: Context
    ) -> analysis_pb2.ListVideosResponse:
        user_id = await self._auth.user_from_metadata(context.invocation_metadata())
        await self._limits.check_rate(user_id, "unary")
        limit = page_size(request.page_size)
        status = status_filter(request.analysis_status)
        scope = ("videos", user_id, status.value if status else "")
        page = await self._repo.list_videos(
            user_id=user_id,
            limit=limit,
            after=page_cursor(request.page_token, *scope),
            analysis_status=status,
        )
        return analysis_pb2.ListVideosResponse(
            videos=[
                self._video(item.video, latest_analysis_id=item.latest_analysis_id)
                for item in page.items
            ],
            next_page_token=page_token(page.next, *scope),
        )

    @rpc_errors
    async def ListAnalyses(
        self, request: analysis_pb2.ListAnalysesRequest, context: Context
    ) -> analysis_pb2.ListAnalysesResponse:
        user_id = await self._auth.user_from_metadata(context.invocation_metadata())
        await self._limits.check_rate(user_id, "unary")
        limit = page_size(request.page_size)
        status = status_filter(request.analysis_status)
        scope = ("analyses", user_id, request.video_id, status.value if status else "")
        after = page_cursor(request.page_token, *scope)
        if await self._repo.get_video(user_id=user_id, video_id=request.video_id) is None:
            raise NotFound(
                Reason.VIDEO_NOT_FOUND, "video not found", metadata={"video_id": request.video_id}
            )
        page = await self._repo.list_analyses(
            user_id=user_id, video_id=request.video_id, limit=limit, after=after, status=status
        )
        return analysis_pb2.ListAnalysesResponse(
            analyses=[messages.analysis(row) for row in page.items],
            next_page_token=page_token(page.next, *scope),
        )
