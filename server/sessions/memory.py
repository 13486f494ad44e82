"""In-process SessionStore for the embedded default and unit tests.

Single-process only: a second replica would not see these sessions.
"""

from __future__ import annotations

from dataclasses import replace

from server.clock import Clock
from server.sessions.port import RETENTION, SessionRecord, SessionState


class MemorySessionStore:
    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._records: dict[str, SessionRecord] = {}
        self._locks: dict[str, tuple[str, float]] = {}

    def _now_ts(self) -> float:
        return self._clock().timestamp()

    async def create(self, record: SessionRecord) -> None:
        self._records[record.session_id] = record

    async def get(self, session_id: str) -> SessionRecord | None:
        record = self._records.get(session_id)
        if record is not None and self._clock() > record.expires_at + RETENTION:
            del self._records[session_id]
            return None
        return record

    async def transition(
        self,
        session_id: str,
        *,
        expected: SessionState,
        new: SessionState,
        video_id: str = "",
    ) -> bool:
        record = await self.get(session_id)
        if record is None or record.state is not expected:
            return False
        self._records[session_id] = record.with_state(new, video_id=video_id)
        return True

    async def save_progress(self, session_id: str, *, committed_bytes: int, progress: str) -> bool:
        record = self._records.get(session_id)
        if record is None or committed_bytes < record.committed_bytes:
            return False
        self._records[session_id] = replace(
            record, committed_bytes=committed_bytes, progress=progress
        )
        return True

    async def complete(self, session_id: str, *, video_id: str, committed_bytes: int) -> bool:
        record = await self.get(session_id)
        if record is None or record.state is not SessionState.ACTIVE:
            return False
        self._records[session_id] = replace(
            record,
            state=SessionState.COMPLETED,
            video_id=video_id,
            committed_bytes=max(committed_bytes, record.committed_bytes),
            progress="",
        )
        return True

    async def acquire_lock(self, session_id: str, *, owner: str, ttl_seconds: float) -> bool:
        current = self._locks.get(session_id)
        now = self._now_ts()
        if current is not None and current[1] > now and current[0] != owner:
            return False
        self._locks[session_id] = (owner, now + ttl_seconds)
        return True

    async def refresh_lock(self, session_id: str, *, owner: str, ttl_seconds: float) -> bool:
        current = self._locks.get(session_id)
        if current is None or current[0] != owner:
            return False
        self._locks[session_id] = (owner, self._now_ts() + ttl_seconds)
        return True

    async def release_lock(self, session_id: str, *, owner: str) -> None:
        current = self._locks.get(session_id)
        if current is not None and current[0] == owner:
            del self._locks[session_id]

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
