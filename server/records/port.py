"""The repository ports: what the pipeline, the API and the analysis workers need
from wherever videos, analyses and quota are kept.

Small protocols rather than one: the upload path records videos and spends quota,
the API reads (and lists, ``VideoListing``), the analysis workers run the analysis
lifecycle. The SQL adapter (``server/db``) implements all of them; ``memory`` does
too, for unit tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from server.records.model import AnalysisRecord, AnalysisStatus, VideoRecord

Item = TypeVar("Item", covariant=True)


class QuotaLedger(Protocol):
    """Upload units per user. A unit is reserved while an upload is in flight, then
    spent (the upload was recorded) or given back; never spent twice per session."""

    async def reserve_quota(self, *, user_id: str, session_id: str) -> None:
        """Takes one unit, or raises QuotaExceeded. A session that holds a unit or
        recorded a video already takes none."""
        ...

    async def release_quota(self, *, session_id: str) -> bool:
        """Gives a reserved unit back; False when there was none (harmless twice)."""
        ...

    async def get_quota(self, *, user_id: str) -> int: ...

    async def set_quota(self, *, user_id: str, remaining: int) -> None: ...


class VideoRepository(Protocol):
    """Recorded videos and the analyses that belong to them."""

    async def record_upload(
        self, *, video: VideoRecord, analysis: AnalysisRecord
    ) -> tuple[VideoRecord, AnalysisRecord]:
        """Writes video and first analysis and spends the session's reserved unit in
        one transaction. Idempotent per session: if the session's video exists, the
        recorded pair is returned and nothing is written."""
        ...

    async def recorded_upload(
        self, *, session_id: str
    ) -> tuple[VideoRecord, AnalysisRecord] | None: ...

    async def get_video(self, *, user_id: str, video_id: str) -> VideoRecord | None: ...

    async def find_video(
        self, *, user_id: str, file_hash: str, size: int, other_than_session: str = ""
    ) -> VideoRecord | None:
        """This user's earliest video with these bytes (never across users)."""
        ...

    async def latest_analysis(self, *, video_id: str) -> AnalysisRecord | None: ...

    async def latest_analysis_id(self, *, video_id: str) -> str: ...

    async def get_analysis(self, *, user_id: str, analysis_id: str) -> AnalysisRecord | None: ...


@dataclass(frozen=True, kw_only=True)
class PageCursor:
    """Where a page ended: its last item's (created_at, id). The next page holds the
    items strictly after it in newest-first order, so an insert (which is newer)
    never shifts or repeats what a reader pages through."""

    created_at: datetime
    id: str


@dataclass(frozen=True, kw_only=True)
class Page(Generic[Item]):
    items: Sequence[Item]
    # None on the last page.
    next: PageCursor | None


@dataclass(frozen=True, kw_only=True)
class ListedVideo:
    video: VideoRecord
    latest_analysis_id: str


class VideoListing(Protocol):
    """One user's videos and analyses, newest first (created_at, then id, both
    descending), in keyset pages of at most ``limit`` items after ``after``."""

    async def list_videos(
        self,
        *,
        user_id: str,
        limit: int,
        after: PageCursor | None = None,
        analysis_status: AnalysisStatus | None = None,
    ) -> Page[ListedVideo]:
        """``analysis_status`` keeps the videos whose latest analysis has it."""
        ...

    async def list_analyses(
        self,
        *,
        user_id: str,
        video_id: str,
        limit: int,
        after: PageCursor | None = None,
        status: AnalysisStatus | None = None,
    ) -> Page[AnalysisRecord]: ...


class VideoCatalog(VideoRepository, VideoListing, Protocol):
    """What the read API needs: single videos and analyses, and pages of them."""


class AnalysisRepository(Protocol):
    """The analysis lifecycle. A claim is exclusive: pending (or running with an
    expired lease) becomes running for exactly one caller."""

    async def get(self, analysis_id: str) -> AnalysisRecord | None: ...

    async def video(self, video_id: str) -> VideoRecord | None: ...

    async def claim(self, analysis_id: str, *, lease: timedelta) -> AnalysisRecord | None:
        """The analysis, now running for this caller; None if done or held."""
        ...

    async def complete(
        self, analysis_id: str, *, result: Mapping[str, Any], duration_ms: float
    ) -> None: ...

    async def fail(self, analysis_id: str, *, reason: str, message: str) -> None: ...

    async def release(self, analysis_id: str, *, reason: str, message: str) -> None:
        """Gives a running analysis back (pending) after a transient failure."""
        ...

    async def unfinished(self, *, limit: int = 100) -> list[str]:
        """Analyses that need a worker: pending, or running with an expired lease."""
        ...

    async def recent_duration_ms(self) -> float | None: ...


class UploadRecords(VideoRepository, QuotaLedger, Protocol):
    """What the upload path needs: record videos and reserve, spend or return quota."""
