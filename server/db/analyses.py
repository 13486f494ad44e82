"""SQL for the analysis lifecycle: claim with a lease, complete, fail, release.

A claim is one conditional UPDATE, so two workers can never both run an analysis:
``pending`` (or ``running`` with an expired lease) becomes ``running`` for exactly
one of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from server.clock import Clock
from server.db.convert import analysis_record, video_record
from server.db.engine import map_db_errors
from server.db.models import AnalysisRow, VideoRow
from server.records.model import AnalysisRecord, AnalysisStatus, VideoRecord

_PENDING = AnalysisStatus.PENDING.value
_RUNNING = AnalysisStatus.RUNNING.value


class SqlAnalysisRepository:
    """``AnalysisRepository`` over SQL."""

    def __init__(self, *, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def get(self, analysis_id: str) -> AnalysisRecord | None:
        async with map_db_errors("read analysis"), self._sessions() as session:
            row = await session.get(AnalysisRow, analysis_id)
            return None if row is None else analysis_record(row)

    async def video(self, video_id: str) -> VideoRecord | None:
        async with map_db_errors("read video"), self._sessions() as session:
            row = await session.get(VideoRow, video_id)
            return None if row is None else video_record(row)

    async def claim(self, analysis_id: str, *, lease: timedelta) -> AnalysisRecord | None:
        """Takes the analysis for this worker, or None if it is done or held."""
        now = self._clock()
        async with map_db_errors("claim analysis"), self._engine.begin() as conn:
            result = await conn.execute(
                update(AnalysisRow)
                .where(
                    AnalysisRow.id == analysis_id,
                    or_(
                        AnalysisRow.status == _PENDING,
                        (AnalysisRow.status == _RUNNING) & (AnalysisRow.lease_until < now),
                    ),
                )
                .values(
                    status=_RUNNING,
                    attempts=AnalysisRow.attempts + 1,
                    started_at=now,
                    lease_until=now + lease,
                )
            )
            if result.rowcount != 1:
                return None
        return await self.get(analysis_id)

    async def complete(
        self, analysis_id: str, *, result: Mapping[str, Any], duration_ms: float
    ) -> None:
        await self._finish(
            analysis_id,
            status=AnalysisStatus.ANALYZED.value,
            result=dict(result),
            duration_ms=duration_ms,
        )

    async def fail(self, analysis_id: str, *, reason: str, message: str) -> None:
        await self._finish(
            analysis_id,
            status=AnalysisStatus.FAILED.value,
            failure_reason=reason,
            failure_message=message[:2000],
        )

    async def _finish(self, analysis_id: str, **values: Any) -> None:
        async with map_db_errors("finish analysis"), self._engine.begin() as conn:
            await conn.execute(
                update(AnalysisRow)
                .where(AnalysisRow.id == analysis_id, AnalysisRow.status == _RUNNING)
                .values(completed_at=self._clock(), lease_until=None, **values)
            )

    async def release(self, analysis_id: str, *, reason: str, message: str) -> None:
        """Gives a running analysis back after a transient failure."""
        async with map_db_errors("release analysis"), self._engine.begin() as conn:
            await conn.execute(
                update(AnalysisRow)
                .where(AnalysisRow.id == analysis_id, AnalysisRow.status == _RUNNING)
                .values(
                    status=_PENDING,
                    lease_until=None,
                    failure_reason=reason,
                    failure_message=message[:2000],
                )
            )

    async def unfinished(self, *, limit: int = 100) -> list[str]:
        """Analyses that need a worker: pending, or running with an expired lease."""
        now = self._clock()
        async with map_db_errors("list analyses"), self._sessions() as session:
            rows = await session.scalars(
                select(AnalysisRow.id)
                .where(
                    or_(
                        AnalysisRow.status == _PENDING,
                        (AnalysisRow.status == _RUNNING) & (AnalysisRow.lease_until < now),
                    )
                )
                .order_by(AnalysisRow.created_at)
                .limit(limit)
            )
            return list(rows)

    async def recent_duration_ms(self) -> float | None:
        async with map_db_errors("read analysis durations"), self._sessions() as session:
            rows = list(
                await session.scalars(
                    select(AnalysisRow.duration_ms)
                    .where(AnalysisRow.duration_ms.is_not(None))
                    .order_by(AnalysisRow.completed_at.desc())
                    .limit(20)
                )
            )
        values = [r for r in rows if r is not None]
        return sum(values) / len(values) if values else None
