"""The SessionStore port.

A session is created by CreateUploadSession and written by at most one
UploadVideo stream at a time (the stream lock). Records outlive their expiry by
``RETENTION`` so that GetUploadSession can still answer "expired".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

RETENTION = timedelta(hours=24)


class SessionState(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    COMPLETED = "completed"


@dataclass(frozen=True)
class UploadIntent:
    """Header fields fixed when the session was created (a tus client sends them once,
    with its creation request), already checked. A stream's header field that is
    empty takes the intent's value."""

    filename: str = ""
    content_type: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    declared_sha256: str = ""
    callback_url: str = ""
    declared_size: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> UploadIntent | None:
        if not text:
            return None
        data = json.loads(text)
        return cls(
            filename=str(data["filename"]),
            content_type=str(data["content_type"]),
            metadata=dict(data["metadata"]),
            model=str(data["model"]),
            declared_sha256=str(data["declared_sha256"]),
            callback_url=str(data["callback_url"]),
            declared_size=None if data["declared_size"] is None else int(data["declared_size"]),
        )


@dataclass(frozen=True)
class SessionRecord:
    session_id: str
    user_id: str
    state: SessionState
    created_at: datetime
    expires_at: datetime
    max_bytes: int
    committed_bytes: int = 0
    video_id: str = ""
    # Opaque to the store: the upload pipeline's saved progress (JSON), "" if none.
    progress: str = ""
    intent: UploadIntent | None = None

    def effective_state(self, now: datetime) -> SessionState:
        """The stored state, with an ACTIVE session past its expiry read as EXPIRED."""
        if self.state is SessionState.ACTIVE and now >= self.expires_at:
            return SessionState.EXPIRED
        return self.state

    def with_state(self, state: SessionState, *, video_id: str = "") -> SessionRecord:
        return replace(self, state=state, video_id=video_id or self.video_id)


class SessionStore(Protocol):
    async def create(self, record: SessionRecord) -> None: ...

    async def get(self, session_id: str) -> SessionRecord | None: ...

    async def transition(
        self,
        session_id: str,
        *,
        expected: SessionState,
        new: SessionState,
        video_id: str = "",
    ) -> bool:
        """Atomically moves a session from ``expected`` to ``new``; False if it was not
        in ``expected`` (or is gone)."""
        ...

    async def save_progress(self, session_id: str, *, committed_bytes: int, progress: str) -> bool:
        """Records what is durably stored. Committed counts never go down: a save
        with fewer bytes than already committed is refused (False)."""
        ...

    async def complete(self, session_id: str, *, video_id: str, committed_bytes: int) -> bool:
        """Finishes an ACTIVE session in one atomic change: state COMPLETED, the video
        id, the final committed count, saved progress cleared. False if the session
        was not ACTIVE (or is gone). A crash can never leave half of it written."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class SessionLocker(Protocol):
    """The one-stream-per-session lock, a port of its own (like tusd's ``Locker``):
    it could live elsewhere than the sessions (etcd, a database)."""

    async def acquire_lock(self, session_id: str, *, owner: str, ttl_seconds: float) -> bool:
        """Takes the lock; it expires by itself after ``ttl`` so that a stream whose
        process died does not hold it forever."""
        ...

    async def refresh_lock(self, session_id: str, *, owner: str, ttl_seconds: float) -> bool:
        """Extends the lock if ``owner`` still holds it; False if it does not."""
        ...

    async def release_lock(self, session_id: str, *, owner: str) -> None: ...


class LockingSessionStore(SessionStore, SessionLocker, Protocol):
    """Both ports in one adapter (Redis, memory)."""
