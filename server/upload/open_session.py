"""CreateUploadSession: the checks before an upload may start, and the new session.

Quota is only *looked at* here (a session costs nothing); the unit is reserved when
the first stream of the session starts (``pipeline.py``) and spent when its video is
recorded (``finish.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

from server.clock import Clock
from server.errors import InvalidUpload, QuotaExceeded, QuotaViolation, Reason
from server.limits.policy import UserLimits
from server.records.port import QuotaLedger
from server.sessions.port import SessionRecord, SessionState, SessionStore, UploadIntent


class SessionOpener:
    def __init__(
        self,
        *,
        sessions: SessionStore,
        repository: QuotaLedger,
        clock: Clock,
        ttl: timedelta,
        max_bytes: int,
        limits: UserLimits | None = None,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._sessions = sessions
        self._limits = limits
        self._repo = repository
        self._clock = clock
        self._ttl = ttl
        self._max_bytes = max_bytes
        self._new_id = new_id

    async def open(
        self, *, user_id: str, expected_size: int | None, intent: UploadIntent | None = None
    ) -> SessionRecord:
        """``intent``: header fields fixed now (checked by the caller, as a header is)."""
        for name, size in (
            ("expected_size", expected_size),
            ("intent.declared_size", intent.declared_size if intent else None),
        ):
            if size is not None and size > self._max_bytes:
                raise InvalidUpload(
                    Reason.FILE_TOO_LARGE,
                    f"{name} exceeds the limit of {self._max_bytes} bytes",
                    metadata={"max_bytes": str(self._max_bytes)},
                )
        if await self._repo.get_quota(user_id=user_id) <= 0:
            raise QuotaExceeded(
                Reason.QUOTA_EXCEEDED,
                "upload quota exhausted for this user",
                quota_violations=[QuotaViolation(f"user:{user_id}", "no uploads left")],
            )
        now = self._clock()
        record = SessionRecord(
            session_id=self._new_id(),
            user_id=user_id,
            state=SessionState.ACTIVE,
            created_at=now,
            expires_at=now + self._ttl,
            max_bytes=self._max_bytes,
            intent=intent,
        )
        if self._limits is not None:  # TOO_MANY_SESSIONS before anything is created
            await self._limits.hold_session(user_id, record.session_id)
        try:
            await self._sessions.create(record)
        except BaseException:
            if self._limits is not None:
                await self._limits.release_session(user_id, record.session_id)
            raise
        return record
