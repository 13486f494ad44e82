"""All SQL the service runs, behind small intention-revealing methods.

Quota is reserved with one conditional upsert (``remaining > 0``), which is atomic
on both PostgreSQL (row lock) and SQLite (database lock): with quota N and 2N racing
uploads exactly N reservations succeed.

Recording an upload is idempotent per upload session (``videos.session_id`` is
unique): a transaction whose COMMIT acknowledgement was lost is resolved by running
it again, which finds the row instead of writing a second one; and a session whose
video exists never reserves another unit. A session's unit is spent exactly once.

Listings are keyset pages (``ix_videos_user_created``, ``ix_analyses_video_created``):
newest first by (created_at, id), the next page starting strictly after the last
row of the one before, so a page costs one index range scan however deep it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from server.clock import Clock
from server.db.convert import analysis_record, analysis_row, video_record, video_values
from server.db.engine import map_db_errors
from server.db.models import AnalysisRow, QuotaReservationRow, UserQuotaRow, VideoRow
from server.errors import QuotaExceeded, QuotaViolation, Reason
from server.records.model import AnalysisRecord, AnalysisStatus, VideoRecord, VideoStatus
from server.records.port import ListedVideo, Page, PageCursor


def _after(created_at: Any, row_id: Any, cursor: PageCursor) -> ColumnElement[bool]:
    """Rows after ``cursor`` in (created_at DESC, id DESC) order. Spelled without a
    row-value comparison so SQLite reads it too; the first term bounds the index scan."""
    return and_(
        created_at <= cursor.created_at,
        or_(
            created_at < cursor.created_at,
            and_(created_at == cursor.created_at, row_id < cursor.id),
        ),
    )


def _latest_analysis(column: Any) -> Any:
    """``column`` of a video's newest analysis, as a correlated scalar subquery."""
    return (
        select(column)
        .where(AnalysisRow.video_id == VideoRow.id)
        .order_by(AnalysisRow.created_at.desc(), AnalysisRow.id.desc())
        .limit(1)
        .correlate(VideoRow)
        .scalar_subquery()
    )


class SqlRepository:
    """``QuotaLedger`` and ``VideoRepository`` over SQL, plus the janitor's queries."""

    def __init__(self, *, engine: AsyncEngine, clock: Clock, default_quota: int) -> None:
        self._engine = engine
        self._clock = clock
        self._default_quota = default_quota
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        # One-statement reads on the upload path, outside a transaction: no BEGIN and
        # ROLLBACK round trips around them.
        self._reads = async_sessionmaker(
            engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
        )

    def _insert(self) -> Any:
        """INSERT with ON CONFLICT for the engine's dialect."""
        dialect = self._engine.dialect.name
        if dialect == "postgresql":
            return pg_insert
        if dialect == "sqlite":
            return sqlite_insert
        raise RuntimeError(f"unsupported database dialect {dialect}")  # pragma: no cover

    async def _ensure_quota_row(self, conn: AsyncConnection, user_id: str) -> None:
        values = {"user_id": user_id, "remaining": self._default_quota, "updated_at": self._clock()}
        dialect = conn.dialect.name
        if dialect == "postgresql":
            await conn.execute(pg_insert(UserQuotaRow).values(values).on_conflict_do_nothing())
        elif dialect == "sqlite":
            await conn.execute(sqlite_insert(UserQuotaRow).values(values).on_conflict_do_nothing())
        else:  # pragma: no cover - only the two dialects above are supported
            raise RuntimeError(f"unsupported database dialect {dialect}")

    async def reserve_quota(self, *, user_id: str, session_id: str) -> None:
        """Takes one upload unit from the user, or raises QuotaExceeded. Three
        statements: whether the session holds or spent a unit already, the
        reservation, and the unit taken (the quota row created on first use)."""
        async with map_db_errors("reserve quota"), self._engine.begin() as conn:
            held, spent = (
                await conn.execute(
                    select(
                        select(QuotaReservationRow.session_id)
                        .where(QuotaReservationRow.session_id == session_id)
                        .exists(),
                        select(VideoRow.id).where(VideoRow.session_id == session_id).exists(),
                    )
                )
            ).one()
            # Held: a resumed upload keeps the unit its session holds. Spent: recorded
            # already (a finish that crashed), spent once.
            if held or spent:
                return
            await conn.execute(
                insert(QuotaReservationRow).values(
                    session_id=session_id, user_id=user_id, created_at=self._clock()
                )
            )
            # Last before COMMIT: the user's quota row stays locked for one round trip
            # only, so many streams of one user do not queue behind each other (the
            # reservation above is rolled back with it when no unit is left).
            if not await self._take_unit(conn, user_id):
                raise QuotaExceeded(
                    Reason.QUOTA_EXCEEDED,
                    "upload quota exhausted for this user",
                    quota_violations=[
                        QuotaViolation(f"user:{user_id}", "no uploads left in the user's quota")
                    ],
                )

    async def _take_unit(self, conn: AsyncConnection, user_id: str) -> bool:
        """One unit off the user's quota if any is left, in one conditional upsert: a
        new user's row starts at the default quota less this unit."""
        now = self._clock()
        if self._default_quota < 1:  # a new user has nothing to take from
            await self._ensure_quota_row(conn, user_id)
            result = await conn.execute(
                update(UserQuotaRow)
                .where(UserQuotaRow.user_id == user_id, UserQuotaRow.remaining > 0)
                .values(remaining=UserQuotaRow.remaining - 1, updated_at=now)
            )
            return bool(result.rowcount == 1)
        taken = await conn.execute(
            self._insert()(UserQuotaRow)
            .values(user_id=user_id, remaining=self._default_quota - 1, updated_at=now)
            .on_conflict_do_update(
                index_elements=[UserQuotaRow.user_id],
                set_={"remaining": UserQuotaRow.remaining - 1, "updated_at": now},
                where=UserQuotaRow.remaining > 0,
            )
            .returning(UserQuotaRow.user_id)
        )
        return taken.first() is not None

    async def release_quota(self, *, session_id: str) -> bool:
        """Gives a reserved unit back. False if there was no reservation (already
        spent or already released), so that releasing twice is harmless."""
        async with map_db_errors("release quota"), self._engine.begin() as conn:
            row = (
                await conn.execute(
                    delete(QuotaReservationRow)
                    .where(QuotaReservationRow.session_id == session_id)
                    .returning(QuotaReservationRow.user_id)
                )
            ).first()
            if row is None:
                return False
            await conn.execute(
                update(UserQuotaRow)
                .where(UserQuotaRow.user_id == row.user_id)
                .values(remaining=UserQuotaRow.remaining + 1, updated_at=self._clock())
            )
            return True

    async def record_upload(
        self, *, video: VideoRecord, analysis: AnalysisRecord
    ) -> tuple[VideoRecord, AnalysisRecord]:
        """Writes the video and its first analysis and spends the reserved quota unit,
        all in one transaction: either everything lands or nothing does. Idempotent
        per upload session: if the session's video is already recorded (an earlier
        attempt committed, its acknowledgement lost), nothing is written and the
        recorded rows are returned."""
        values = video_values(video)
        async with map_db_errors("record upload"), self._sessions.begin() as session:
            inserted = (
                await session.execute(
                    self._insert()(VideoRow)
                    .values(**values)
                    .on_conflict_do_nothing(index_elements=["session_id"])
                    .returning(VideoRow.id)
                )
            ).first()
            if inserted is not None:
                session.add(analysis_row(analysis))
                await session.execute(
                    delete(QuotaReservationRow).where(
                        QuotaReservationRow.session_id == video.session_id
                    )
                )
                return video, analysis
        recorded = await self.recorded_upload(session_id=video.session_id)
        if recorded is None:  # pragma: no cover - the conflict row cannot vanish
            raise RuntimeError(f"session {video.session_id} conflicts but has no video")
        return recorded

    async def recorded_upload(
        self, *, session_id: str
    ) -> tuple[VideoRecord, AnalysisRecord] | None:
        """The video an upload session recorded and its first analysis, if any."""
        async with map_db_errors("read recorded upload"), self._sessions() as session:
            video = await session.scalar(select(VideoRow).where(VideoRow.session_id == session_id))
            if video is None:
                return None
            analysis = await session.scalar(
                select(AnalysisRow)
                .where(AnalysisRow.video_id == video.id)
                .order_by(AnalysisRow.created_at)
                .limit(1)
            )
            assert analysis is not None, "every video is recorded with an analysis"
            return video_record(video), analysis_record(analysis)

    async def get_video(self, *, user_id: str, video_id: str) -> VideoRecord | None:
        async with map_db_errors("read video"), self._sessions() as session:
            row = await session.scalar(
                select(VideoRow).where(VideoRow.id == video_id, VideoRow.user_id == user_id)
            )
            return None if row is None else video_record(row)

    async def find_video(
        self, *, user_id: str, file_hash: str, size: int, other_than_session: str = ""
    ) -> VideoRecord | None:
        """This user's stored video with these bytes, if any. Never across users:
        that would tell one user what another uploaded. ``other_than_session``
        leaves out the video that session itself recorded (it is no duplicate)."""
        async with map_db_errors("find duplicate"), self._reads() as session:
            row = await session.scalar(
                select(VideoRow)
                .where(
                    VideoRow.user_id == user_id,
                    VideoRow.file_hash == file_hash,
                    VideoRow.file_size == size,
                    VideoRow.session_id != other_than_session,
                )
                .order_by(VideoRow.created_at)
                .limit(1)
            )
            return None if row is None else video_record(row)

    async def latest_analysis(self, *, video_id: str) -> AnalysisRecord | None:
        async with map_db_errors("read analysis"), self._sessions() as session:
            row = await session.scalar(
                select(AnalysisRow)
                .where(AnalysisRow.video_id == video_id)
                .order_by(AnalysisRow.created_at.desc())
                .limit(1)
            )
            return None if row is None else analysis_record(row)

    async def latest_analysis_id(self, *, video_id: str) -> str:
        async with map_db_errors("read analysis"), self._sessions() as session:
            found = await session.scalar(
                select(AnalysisRow.id)
                .where(AnalysisRow.video_id == video_id)
                .order_by(AnalysisRow.created_at.desc())
                .limit(1)
            )
        return found or ""

    async def get_analysis(self, *, user_id: str, analysis_id: str) -> AnalysisRecord | None:
        async with map_db_errors("read analysis"), self._sessions() as session:
            row = await session.scalar(
                select(AnalysisRow).where(
                    AnalysisRow.id == analysis_id, AnalysisRow.user_id == user_id
                )
            )
            return None if row is None else analysis_record(row)

    async def list_videos(
        self,
        *,
        user_id: str,
        limit: int,
        after: PageCursor | None = None,
        analysis_status: AnalysisStatus | None = None,
    ) -> Page[ListedVideo]:
        latest_id = _latest_analysis(AnalysisRow.id).label("latest_analysis_id")
        query = select(VideoRow, latest_id).where(VideoRow.user_id == user_id)
        if analysis_status is not None:
            query = query.where(_latest_analysis(AnalysisRow.status) == analysis_status.value)
        if after is not None:
            query = query.where(_after(VideoRow.created_at, VideoRow.id, after))
        query = query.order_by(VideoRow.created_at.desc(), VideoRow.id.desc()).limit(limit + 1)
        async with map_db_errors("list videos"), self._sessions() as session:
            rows = (await session.execute(query)).all()
        items = [
            ListedVideo(video=video_record(row[0]), latest_analysis_id=row[1] or "")
            for row in rows[:limit]
        ]
        more = len(rows) > limit
        last = items[-1].video if more else None
        return Page(
            items=items,
            next=None if last is None else PageCursor(created_at=last.created_at, id=last.id),
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
        query = select(AnalysisRow).where(
            AnalysisRow.video_id == video_id, AnalysisRow.user_id == user_id
        )
        if status is not None:
            query = query.where(AnalysisRow.status == status.value)
        if after is not None:
            query = query.where(_after(AnalysisRow.created_at, AnalysisRow.id, after))
        query = query.order_by(AnalysisRow.created_at.desc(), AnalysisRow.id.desc()).limit(
            limit + 1
        )
        async with map_db_errors("list analyses"), self._sessions() as session:
            rows = list(await session.scalars(query))
        items = [analysis_record(row) for row in rows[:limit]]
        last = items[-1] if len(rows) > limit else None
        return Page(
            items=items,
            next=None if last is None else PageCursor(created_at=last.created_at, id=last.id),
        )

    async def video_exists_for_session(self, *, session_id: str) -> bool:
        async with map_db_errors("read video"), self._sessions() as session:
            found = await session.scalar(
                select(VideoRow.id).where(VideoRow.session_id == session_id)
            )
        return found is not None

    async def get_quota(self, *, user_id: str) -> int:
        async with map_db_errors("read quota"), self._engine.begin() as conn:
            await self._ensure_quota_row(conn, user_id)
            remaining = await conn.scalar(
                select(UserQuotaRow.remaining).where(UserQuotaRow.user_id == user_id)
            )
        return int(remaining or 0)

    async def set_quota(self, *, user_id: str, remaining: int) -> None:
        async with map_db_errors("set quota"), self._engine.begin() as conn:
            await self._ensure_quota_row(conn, user_id)
            await conn.execute(
                update(UserQuotaRow)
                .where(UserQuotaRow.user_id == user_id)
                .values(remaining=remaining, updated_at=self._clock())
            )

    async def stale_reservations(self, *, older_than: datetime) -> list[str]:
        async with map_db_errors("list reservations"), self._sessions() as session:
            rows = await session.scalars(
                select(QuotaReservationRow.session_id).where(
                    QuotaReservationRow.created_at < older_than
                )
            )
            return list(rows)

    async def keys_with_rows(self, keys: Sequence[str]) -> set[str]:
        """Which of these object keys a video row points at (the janitor's check)."""
        found: set[str] = set()
        async with map_db_errors("match objects to videos"), self._sessions() as session:
            for start in range(0, len(keys), 500):
                batch = list(keys[start : start + 500])
                found.update(
                    await session.scalars(select(VideoRow.s3_key).where(VideoRow.s3_key.in_(batch)))
                )
        return found

    async def videos_after(
        self, *, after_id: str, limit: int, uploaded_before: datetime
    ) -> list[tuple[str, str, VideoStatus]]:
        """(video id, object key, status) in id order after ``after_id``: the
        janitor walks every row in pages to find rows whose object is missing."""
        async with map_db_errors("list videos"), self._sessions() as session:
            rows = await session.execute(
                select(VideoRow.id, VideoRow.s3_key, VideoRow.status)
                .where(VideoRow.id > after_id, VideoRow.uploaded_at < uploaded_before)
                .order_by(VideoRow.id)
                .limit(limit)
            )
            return [(str(r.id), str(r.s3_key), VideoStatus(r.status)) for r in rows]

    async def mark_video(self, *, video_id: str, status: VideoStatus) -> None:
        async with map_db_errors("mark video"), self._engine.begin() as conn:
            await conn.execute(
                update(VideoRow).where(VideoRow.id == video_id).values(status=status.value)
            )

    async def ping(self) -> None:
        async with map_db_errors("ping"), self._engine.connect() as conn:
            await conn.execute(select(1))
