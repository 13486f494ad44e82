"""Videos, analyses and quota in process memory: the repository ports without a
database, for unit tests of the pipeline's and the workers' logic.

It keeps the rules the SQL adapter keeps (one video per session, a unit spent
once, an exclusive claim with a lease), so a test of the logic above it means the
same thing against either. It is not a cache and never serves production.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from server.clock import Clock
from server.errors import QuotaExceeded, QuotaViolation, Reason
from server.records.model import AnalysisRecord, AnalysisStatus, VideoRecord
from server.records.port import ListedVideo, Page, PageCursor

Item = TypeVar("Item")


def _page(
    items: Iterable[Item],
    *,
    key: Callable[[Item], PageCursor],
    limit: int,
    after: PageCursor | None,
) -> Page[Item]:
    """The SQL adapter's keyset page: newest first by (created_at, id), after ``after``."""

    def order(item: Item) -> tuple[datetime, str]:
        cursor = key(item)
        return cursor.created_at, cursor.id

    ordered = sorted(items, key=order, reverse=True)
    if after is not None:
        ordered = [i for i in ordered if order(i) < (after.created_at, after.id)]
    page = ordered[:limit]
    return Page(items=page, next=key(page[-1]) if len(ordered) > limit else None)


class MemoryRecords:
    """Implements ``QuotaLedger``, ``VideoRepository``, ``VideoListing`` and
    ``AnalysisRepository``."""

    def __init__(self, *, clock: Clock, default_quota: int) -> None:
        self._clock = clock
        self._default_quota = default_quota
        self._lock = asyncio.Lock()
        self.videos: dict[str, VideoRecord] = {}
        self.analyses: dict[str, AnalysisRecord] = {}
        self.quota: dict[str, int] = {}
        self.reservations: dict[str, tuple[str, datetime]] = {}

    # -- QuotaLedger ---------------------------------------------------------------

    async def reserve_quota(self, *, user_id: str, session_id: str) -> None:
        async with self._lock:
            if session_id in self.reservations or self._session_video(session_id):
                return
            remaining = self.quota.setdefault(user_id, self._default_quota)
            if remaining <= 0:
                raise QuotaExceeded(
                    Reason.QUOTA_EXCEEDED,
                    "upload quota exhausted for this user",
                    quota_violations=[
                        QuotaViolation(f"user:{user_id}", "no uploads left in the user's quota")
                    ],
                )
            self.quota[user_id] = remaining - 1
            self.reservations[session_id] = (user_id, self._clock())

    async def release_quota(self, *, session_id: str) -> bool:
        async with self._lock:
            held = self.reservations.pop(session_id, None)
            if held is None:
                return False
            self.quota[held[0]] = self.quota.get(held[0], self._default_quota) + 1
            return True

    async def get_quota(self, *, user_id: str) -> int:
        return self.quota.setdefault(user_id, self._default_quota)

    async def set_quota(self, *, user_id: str, remaining: int) -> None:
        self.quota[user_id] = remaining

    # -- VideoRepository -----------------------------------------------------------

    def _session_video(self, session_id: str) -> VideoRecord | None:
        return next((v for v in self.videos.values() if v.session_id == session_id), None)

    def _first_analysis(self, video_id: str) -> AnalysisRecord:
        return min(
            (a for a in self.analyses.values() if a.video_id == video_id),
            key=lambda a: a.created_at,
        )

    async def record_upload(
        self, *, video: VideoRecord, analysis: AnalysisRecord
    ) -> tuple[VideoRecord, AnalysisRecord]:
        async with self._lock:
            existing = self._session_video(video.session_id)
            if existing is not None:
                return existing, self._first_analysis(existing.id)
            self.videos[video.id] = video
            self.analyses[analysis.id] = analysis
            self.reservations.pop(video.session_id, None)
            return video, analysis

    async def recorded_upload(
        self, *, session_id: str
    ) -> tuple[VideoRecord, AnalysisRecord] | None:
        video = self._session_video(session_id)
        return None if video is None else (video, self._first_analysis(video.id))

    async def get_video(self, *, user_id: str, video_id: str) -> VideoRecord | None:
        video = self.videos.get(video_id)
        return video if video is not None and video.user_id == user_id else None

    async def find_video(
        self, *, user_id: str, file_hash: str, size: int, other_than_session: str = ""
    ) -> VideoRecord | None:
        matches = [
            v
            for v in self.videos.values()
            if v.user_id == user_id
            and v.file_hash == file_hash
            and v.file_size == size
            and v.session_id != other_than_session
        ]
        return min(matches, key=lambda v: v.created_at) if matches else None

    async def latest_analysis(self, *, video_id: str) -> AnalysisRecord | None:
        found = [a for a in self.analyses.values() if a.video_id == video_id]
        return max(found, key=lambda a: a.created_at) if found else None

    async def latest_analysis_id(self, *, video_id: str) -> str:
        latest = await self.latest_analysis(video_id=video_id)
        return latest.id if latest is not None else ""

    async def get_analysis(self, *, user_id: str, analysis_id: str) -> AnalysisRecord | None:
        analysis = self.analyses.get(analysis_id)
        return analysis if analysis is not None and analysis.user_id == user_id else None

    # -- VideoListing --------------------------------------------------------------

    def _latest(self, video_id: str) -> AnalysisRecord | None:
        found = [a for a in self.analyses.values() if a.video_id == video_id]
        return max(found, key=lambda a: (a.created_at, a.id)) if found else None

    async def list_videos(
        self,
        *,
        user_id: str,
        limit: int,
        after: PageCursor | None = None,
        analysis_status: AnalysisStatus | None = None,
    ) -> Page[ListedVideo]:
        listed = []
        for video in self.videos.values():
            latest = self._latest(video.id)
            if video.user_id != user_id or (
                analysis_status is not None
                and (latest is None or latest.status is not analysis_status)
            ):
                continue
            listed.append(ListedVideo(video=video, latest_analysis_id=latest.id if latest else ""))
        return _page(
            listed,
            key=lambda v: PageCursor(created_at=v.video.created_at, id=v.video.id),
            limit=limit,
            after=after,
        )

    async def list_analyses(
        self,
        *,
        user_id: str,
        video_id: str,
        limit: int,
        after: PageCursor | None = None,
        status: AnalysisStatus | None = None,
    ) -> Page[AnalysisRecord]:
        found = [
            a
            for a in self.analyses.values()
            if a.video_id == video_id
            and a.user_id == user_id
            and (status is None or a.status is status)
        ]
        return _page(
            found,
            key=lambda a: PageCursor(created_at=a.created_at, id=a.id),
            limit=limit,
            after=after,
        )

    # -- AnalysisRepository --------------------------------------------------------

    async def get(self, analysis_id: str) -> AnalysisRecord | None:
        return self.analyses.get(analysis_id)

    async def video(self, video_id: str) -> VideoRecord | None:
        return self.videos.get(video_id)

    def _claimable(self, analysis: AnalysisRecord, now: datetime) -> bool:
        if analysis.status is AnalysisStatus.PENDING:
            return True
        return (
            analysis.status is AnalysisStatus.RUNNING
            and analysis.lease_until is not None
            and analysis.lease_until < now
        )

    async def claim(self, analysis_id: str, *, lease: timedelta) -> AnalysisRecord | None:
        async with self._lock:
            now = self._clock()
            current = self.analyses.get(analysis_id)
            if current is None or not self._claimable(current, now):
                return None
            claimed = replace(
                current,
                status=AnalysisStatus.RUNNING,
                attempts=current.attempts + 1,
                started_at=now,
                lease_until=now + lease,
            )
            self.analyses[analysis_id] = claimed
            return claimed

    def _finish_running(self, analysis_id: str, **changes: Any) -> None:
        current = self.analyses.get(analysis_id)
        if current is not None and current.status is AnalysisStatus.RUNNING:
            self.analyses[analysis_id] = replace(current, lease_until=None, **changes)

    async def complete(
        self, analysis_id: str, *, result: Mapping[str, Any], duration_ms: float
    ) -> None:
        self._finish_running(
            analysis_id,
            status=AnalysisStatus.ANALYZED,
            result=dict(result),
            duration_ms=duration_ms,
            completed_at=self._clock(),
        )

    async def fail(self, analysis_id: str, *, reason: str, message: str) -> None:
        self._finish_running(
            analysis_id,
            status=AnalysisStatus.FAILED,
            failure_reason=reason,
            failure_message=message[:2000],
            completed_at=self._clock(),
        )

    async def release(self, analysis_id: str, *, reason: str, message: str) -> None:
        self._finish_running(
            analysis_id,
            status=AnalysisStatus.PENDING,
            failure_reason=reason,
            failure_message=message[:2000],
        )

    async def unfinished(self, *, limit: int = 100) -> list[str]:
        now = self._clock()
        waiting = sorted(
            (a for a in self.analyses.values() if self._claimable(a, now)),
            key=lambda a: a.created_at,
        )
        return [a.id for a in waiting[:limit]]

    async def recent_duration_ms(self) -> float | None:
        done = sorted(
            (a for a in self.analyses.values() if a.duration_ms is not None and a.completed_at),
            key=lambda a: a.completed_at or self._clock(),
            reverse=True,
        )[:20]
        values = [a.duration_ms for a in done if a.duration_ms is not None]
        return sum(values) / len(values) if values else None
