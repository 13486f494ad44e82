"""Housekeeping that reconciles the three stores after crashes and outages.

Each sweep, for what is older than ``max_age`` (the session TTL plus a grace period,
so no live session can still finish it):

- object storage: multipart uploads never completed are aborted; tails of
  interrupted uploads are deleted; objects that no video row points at (an upload
  sealed and assembled, then abandoned, or a small file stored whole whose seal was
  never saved) are deleted;
- database: quota reservations of sessions that never finished are given back;
  video rows whose object is missing are marked ``object_missing`` and logged as
  errors -- never deleted and never silently kept, since their bytes are lost;
- the analysis queue: analyses that need a worker but have no job get one again;
- the local spool: files of uploads whose process died.

Listing is a full walk of the upload prefix and of the video rows (in pages): fine
for the volumes this service targets; at tens of millions of objects use an S3
inventory report instead (see the README).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from server import metrics
from server.clock import Clock
from server.db.repository import SqlRepository
from server.errors import VidscanError
from server.records.model import VideoStatus
from server.storage.port import InventoriedStore
from server.upload.naming import OBJECT_PREFIX
from server.upload.progress import tail_key

log = logging.getLogger(__name__)

OBJECT_MISSING = VideoStatus.OBJECT_MISSING
ROW_PAGE = 500


class Recovery(Protocol):
    async def sweep(self) -> int: ...


@dataclass(frozen=True)
class JanitorReport:
    aborted_uploads: int
    released_reservations: int
    removed_spool_files: int
    deleted_tails: int = 0
    deleted_orphan_objects: int = 0
    rows_missing_objects: int = 0
    requeued_analyses: int = 0


class Janitor:
    def __init__(
        self,
        *,
        store: InventoriedStore,
        repository: SqlRepository,
        spool_dir: Path,
        max_age: timedelta,
        clock: Clock,
        recovery: Recovery | None = None,
    ) -> None:
        self._store = store
        self._repo = repository
        self._spool_dir = spool_dir
        self._max_age = max_age
        self._clock = clock
        self._recovery = recovery

    async def sweep(self) -> JanitorReport:
        cutoff = self._clock() - self._max_age
        aborted = 0
        for pending in await self._store.list_multipart(prefix=OBJECT_PREFIX + "/"):
            if pending.initiated < cutoff:
                await self._store.abort_multipart(pending.key, upload_id=pending.upload_id)
                await self._store.delete_object(tail_key(pending.key))
                aborted += 1
        tails, orphans, missing = await self._reconcile_objects(cutoff)
        released = 0
        for session_id in await self._repo.stale_reservations(older_than=cutoff):
            if await self._repo.release_quota(session_id=session_id):
                released += 1
        requeued = await self._recovery.sweep() if self._recovery is not None else 0
        removed = self._remove_stale_spool_files()
        report = JanitorReport(
            aborted_uploads=aborted,
            released_reservations=released,
            removed_spool_files=removed,
            deleted_tails=tails,
            deleted_orphan_objects=orphans,
            rows_missing_objects=missing,
            requeued_analyses=requeued,
        )
        if any(vars(report).values()):
            log.info("janitor: %s", report)
        return report

    async def _reconcile_objects(self, cutoff: datetime) -> tuple[int, int, int]:
        """Deletes stale tails and objects without a row; marks rows without an object."""
        listed_at = self._clock()
        objects = await self._store.list_objects(prefix=OBJECT_PREFIX + "/")
        keys = {o.key for o in objects}
        tails = orphans = 0
        stale = [o for o in objects if o.last_modified < cutoff]
        for obj in stale:
            if obj.key.endswith(tail_key("")):
                await self._store.delete_object(obj.key)
                tails += 1
        candidates = [o.key for o in stale if not o.key.endswith(tail_key(""))]
        with_rows = await self._repo.keys_with_rows(candidates)
        for key in candidates:
            if key not in with_rows:
                log.warning("janitor: deleting %s: no video row points at it", key)
                await self._store.delete_object(key)
                orphans += 1
        missing = 0
        after = ""
        while page := await self._repo.videos_after(
            after_id=after, limit=ROW_PAGE, uploaded_before=listed_at
        ):
            for video_id, key, status in page:
                if key not in keys and status != OBJECT_MISSING:
                    log.error(
                        "janitor: video %s has no object at %s; its bytes are lost. Marked %s",
                        video_id,
                        key,
                        OBJECT_MISSING,
                    )
                    await self._repo.mark_video(video_id=video_id, status=OBJECT_MISSING)
                    missing += 1
            after = page[-1][0]
        return tails, orphans, missing

    def _remove_stale_spool_files(self) -> int:
        removed = 0
        oldest = time.time() - self._max_age.total_seconds()
        for path in self._spool_dir.glob("*.upload"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < oldest:
                    path.unlink()
                    removed += 1
        return removed

    async def run_forever(self, *, interval_seconds: float) -> None:
        for item in dataclasses.fields(JanitorReport):  # every series from 0 on
            metrics.JANITOR_ACTIONS.labels(item.name)
        while True:
            try:
                report = await self.sweep()
            except VidscanError:
                log.exception("janitor sweep failed; will retry")
            else:
                for action, count in dataclasses.asdict(report).items():
                    if count:
                        metrics.JANITOR_ACTIONS.labels(action).inc(count)
            await asyncio.sleep(interval_seconds)
