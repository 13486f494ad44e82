"""The one-stream-per-session lock, kept alive while a stream runs.

The lock expires by itself ``lock_seconds`` after its holder stops refreshing it (a
process that died), so another stream, on any replica, can take the session over.
While held, the keeper also watches for CancelUploadSession and interrupts the
stream when it happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from server.errors import Reason, SessionBusy, VidscanError
from server.sessions.port import SessionLocker, SessionState, SessionStore
from server.stopping import cancel_and_wait

# How often a running stream looks for CancelUploadSession on its session.
WATCH_INTERVAL_SECONDS = 1.0
KEEPER_STOP_SECONDS = 5.0


@dataclass
class StreamWatch:
    """Lets the lock keeper interrupt a stream whose session was cancelled, or that
    lost its lock (another stream may be writing the session now)."""

    task: asyncio.Task[Any] | None
    cancelled: bool = False
    lock_lost: bool = False
    stopped: bool = False

    def interrupt(self) -> None:
        if self.task is not None:
            self.task.cancel()


def lock_lost_error(session_id: str) -> SessionBusy:
    return SessionBusy(
        Reason.SESSION_LOCK_LOST,
        "this stream lost the session's stream lock (it could not be refreshed in "
        "time); another stream may own the session now. Ask GetUploadSession for the "
        "committed offset and resume from there",
        metadata={"session_id": session_id},
    )


@contextlib.asynccontextmanager
async def hold_stream_lock(
    sessions: SessionStore, locker: SessionLocker, session_id: str, *, lock_seconds: float
) -> AsyncIterator[StreamWatch]:
    owner = str(uuid.uuid4())
    if not await locker.acquire_lock(session_id, owner=owner, ttl_seconds=lock_seconds):
        raise SessionBusy(
            Reason.SESSION_BUSY,
            "another stream is already writing this session",
            metadata={"session_id": session_id},
        )
    watch = StreamWatch(task=asyncio.current_task())
    keeper = asyncio.create_task(
        _keep(sessions, locker, session_id, owner=owner, watch=watch, lock_seconds=lock_seconds)
    )
    try:
        yield watch
    finally:
        # Stopped by a flag as well as cancelled (server/stopping.py): the lock must
        # not outlive us.
        watch.stopped = True
        await cancel_and_wait([keeper], within=KEEPER_STOP_SECONDS)
        with contextlib.suppress(VidscanError):
            await asyncio.shield(locker.release_lock(session_id, owner=owner))


async def _keep(
    sessions: SessionStore,
    locker: SessionLocker,
    session_id: str,
    *,
    owner: str,
    watch: StreamWatch,
    lock_seconds: float,
) -> None:
    """Refreshes the lock and notices CancelUploadSession (from any replica).

    A refresh that finds the lock taken by another owner, or no successful refresh
    for a whole lock period (the lock has expired meanwhile), means another stream
    may be writing the session: this one is stopped at once, before it writes more.
    """
    loop = asyncio.get_running_loop()
    interval = min(WATCH_INTERVAL_SECONDS, lock_seconds / 4)
    last_refresh = loop.time()
    while not watch.stopped:
        await asyncio.sleep(interval)
        if watch.stopped:
            return
        with contextlib.suppress(VidscanError):
            if loop.time() - last_refresh >= lock_seconds / 3:
                if not await locker.refresh_lock(session_id, owner=owner, ttl_seconds=lock_seconds):
                    _lose(watch)
                    return
                last_refresh = loop.time()
            record = await sessions.get(session_id)
            if watch.stopped:
                return
            if record is not None and record.state is SessionState.CANCELLED:
                watch.cancelled = True
                watch.interrupt()
                return
        if loop.time() - last_refresh >= lock_seconds and not watch.stopped:
            _lose(watch)  # the session store has been unreachable for a lock period
            return


def _lose(watch: StreamWatch) -> None:
    if not watch.stopped:
        watch.lock_lost = True
        watch.interrupt()
