"""AnalysisService: read a user's videos and analyses."""

from __future__ import annotations

from typing import Any

import grpc
from vidscan.v1 import analysis_pb2, analysis_pb2_grpc

from server.api import messages
from server.api.status import rpc_errors
from server.auth import Authenticator
from server.errors import NotFound, Reason
from server.limits.policy import UserLimits
from server.records.port import VideoRepository
from server.storage.port import ObjectStore

Context = grpc.aio.ServicerContext[Any, Any]


class AnalysisServicer(analysis_pb2_grpc.AnalysisServiceServicer):
    def __init__(
        self,
        *,
        auth: Authenticator,
        repository: VideoRepository,
        store: ObjectStore,
        limits: UserLimits,
    ) -> None:
        self._auth = auth
        self._limits = limits
        self._repo = repository
        self._store = store

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
        return analysis_pb2.GetVideoResponse(
            video=messages.video(
                row, uri=self._store.object_uri(row.s3_key), latest_analysis_id=latest
            )
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
