"""Housekeeping for what a crashed process leaves behind: multipart uploads and
quota reservations older than the session TTL, and stale spool files."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from server.clock import Clock
from server.db.repository import Repository
from server.errors import VidscanError
from server.storage.port import ObjectStore
from server.upload.naming import OBJECT_PREFIX
from server.upload.progress import tail_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JanitorReport:
    aborted_uploads: int
    released_reservations: int
    removed_spool_files: int


class Janitor:
    def __init__(
        self,
        *,
        store: ObjectStore,
        repository: Repository,
        spool_dir: Path,
        max_age: timedelta,
        clock: Clock,
    ) -> None:
        self._store = store
        self._repo = repository
        self._spool_dir = spool_dir
        self._max_age = max_age
        self._clock = clock

    async def sweep(self) -> JanitorReport:
        cutoff = self._clock() - self._max_age
        aborted = 0
        for pending in await self._store.list_multipart(prefix=OBJECT_PREFIX + "/"):
            if pending.initiated < cutoff:
                await self._store.abort_multipart(pending.key, upload_id=pending.upload_id)
                await self._store.delete_object(tail_key(pending.key))
                aborted += 1
        released = 0
        for session_id in await self._repo.stale_reservations(older_than=cutoff):
            if await self._repo.release_quota(session_id=session_id):
                released += 1
        removed = 0
        oldest = time.time() - self._max_age.total_seconds()
        for path in self._spool_dir.glob("*.upload"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < oldest:
                    path.unlink()
                    removed += 1
        report = JanitorReport(aborted, released, removed)
        if aborted or released or removed:
            log.info("janitor: %s", report)
        return report

    async def run_forever(self, *, interval_seconds: float) -> None:
        while True:
            try:
                await self.sweep()
            except VidscanError:
                log.exception("janitor sweep failed; will retry")
            await asyncio.sleep(interval_seconds)
