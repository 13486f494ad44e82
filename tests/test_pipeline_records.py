"""The upload pipeline's rules, with the repository ports held in memory.

No database: ``MemoryRecords`` stands in for ``server/db`` (the same rules, one
video per session, a unit spent once), the sessions are in memory and the objects
on the local filesystem; media checks run in the real isolated PyAV worker. The
same behaviours are tested against PostgreSQL, Redis and MinIO elsewhere; these
show the pipeline's logic does not depend on the SQL adapter.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.videos import SPECS, make_video

from server.errors import InvalidUpload, QuotaExceeded, Reason
from server.media.isolation import MediaInspector, MediaWorkerConfig
from server.media.pool import MediaPool
from server.records.memory import MemoryRecords
from server.records.model import AnalysisStatus, VideoStatus
from server.sessions.memory import MemorySessionStore
from server.sessions.port import SessionState
from server.storage.filesystem import FilesystemObjectStore
from server.upload.open_session import SessionOpener
from server.upload.pipeline import StoredUpload, UploadInput, UploadPipeline, UploadRules

USER = "user-memory"
QUOTA = 2
MIB = 1024 * 1024


MEDIA = MediaWorkerConfig(
    timeout_seconds=30,
    memory_limit_bytes=1024 * MIB,
    max_pixels=4096 * 4096,
    max_seconds=600,
    max_fps=120,
)


class Stack:
    def __init__(self, root: Path, media: MediaInspector) -> None:
        self.clock = lambda: datetime.now(UTC)
        self.records = MemoryRecords(clock=self.clock, default_quota=QUOTA)
        self.sessions = MemorySessionStore(clock=self.clock)
        self.store = FilesystemObjectStore(root=root / "objects")
        self.opener = SessionOpener(
            sessions=self.sessions,
            repository=self.records,
            clock=self.clock,
            ttl=timedelta(minutes=10),
            max_bytes=64 * MIB,
        )
        self.pipeline = UploadPipeline(
            sessions=self.sessions,
            locker=self.sessions,
            store=self.store,
            repository=self.records,
            media=media,
            rules=UploadRules(
                max_bytes=64 * MIB,
                part_size=5 * MIB,
                parts_in_flight=2,
                spool_dir=root / "spool",
                default_model="frame_ensemble",
            ),
            clock=self.clock,
        )

    async def upload(self, data: bytes, *, filename: str = "clip.mp4") -> tuple[str, StoredUpload]:
        session = await self.opener.open(user_id=USER, expected_size=len(data))
        request = UploadInput(
            user_id=USER,
            session_id=session.session_id,
            filename=filename,
            content_type="",
            declared_size=len(data),
            declared_sha256="",
            metadata={"source": "unit"},
            write_offset=0,
            model="",
        )
        return session.session_id, await self.pipeline.run(request, chunks(data))

    async def leftovers(self) -> tuple[list[str], int]:
        keys = await self.store.list_keys(prefix="")
        pending = await self.store.list_multipart(prefix="")
        return keys, len(pending)


async def chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.fixture
async def media() -> AsyncIterator[MediaInspector]:
    """The real worker pool, one warm worker."""
    pool = MediaPool(options=MEDIA.pool_options())
    await pool.start()
    yield MediaInspector(config=MEDIA, pool=pool)
    await pool.close()


@pytest.fixture
def clip(tmp_path: Path) -> bytes:
    return make_video(tmp_path / "clip.mp4", spec=SPECS["mp4"], seconds=1.0).read_bytes()


async def test_an_accepted_upload_records_one_video_and_spends_one_unit(
    tmp_path: Path, media: MediaInspector, clip: bytes
) -> None:
    stack = Stack(tmp_path, media)
    session_id, stored = await stack.upload(clip)
    video = stack.records.videos[stored.video.id]
    assert video.session_id == session_id
    assert video.file_hash == hashlib.sha256(clip).hexdigest()
    assert video.file_size == len(clip)
    assert video.status is VideoStatus.STORED
    assert video.client_metadata == {"source": "unit"}
    (analysis,) = stack.records.analyses.values()
    assert analysis.video_id == video.id
    assert analysis.status is AnalysisStatus.PENDING
    assert await stack.records.get_quota(user_id=USER) == QUOTA - 1
    assert stack.records.reservations == {}
    session = await stack.sessions.get(session_id)
    assert session is not None and session.state is SessionState.COMPLETED
    assert session.video_id == video.id
    keys, pending = await stack.leftovers()
    assert keys == [video.s3_key] and pending == 0
    assert await stack.store.read_range(video.s3_key, start=0, length=len(clip)) == clip


async def test_the_same_bytes_again_answer_with_the_first_copy_and_cost_nothing(
    tmp_path: Path, media: MediaInspector, clip: bytes
) -> None:
    stack = Stack(tmp_path, media)
    _, first = await stack.upload(clip)
    _, second = await stack.upload(clip, filename="again.mp4")
    assert second.deduplicated
    assert second.video.id == first.video.id
    assert len(stack.records.videos) == 1
    assert await stack.records.get_quota(user_id=USER) == QUOTA - 1
    assert stack.records.reservations == {}
    keys, pending = await stack.leftovers()
    assert len(keys) == 1 and pending == 0


async def test_refused_content_leaves_nothing_and_gives_the_unit_back(
    tmp_path: Path, media: MediaInspector
) -> None:
    stack = Stack(tmp_path, media)
    garbage = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\xff" * 200_000
    with pytest.raises(InvalidUpload) as refused:
        await stack.upload(garbage)
    assert refused.value.reason in (Reason.CORRUPT_CONTAINER, Reason.VIDEO_UNDECODABLE)
    assert refused.value.cleanup is not None and refused.value.cleanup.quota_released
    assert stack.records.videos == {} and stack.records.reservations == {}
    assert await stack.records.get_quota(user_id=USER) == QUOTA
    assert await stack.leftovers() == ([], 0)


async def test_no_quota_left_refuses_before_anything_is_stored(
    tmp_path: Path, media: MediaInspector, clip: bytes
) -> None:
    stack = Stack(tmp_path, media)
    await stack.records.set_quota(user_id=USER, remaining=1)
    session = await stack.opener.open(user_id=USER, expected_size=len(clip))
    await stack.records.set_quota(user_id=USER, remaining=0)  # spent meanwhile elsewhere
    request = UploadInput(
        user_id=USER,
        session_id=session.session_id,
        filename="clip.mp4",
        content_type="",
        declared_size=len(clip),
        declared_sha256="",
        metadata={},
        write_offset=0,
        model="",
    )
    with pytest.raises(QuotaExceeded) as refused:
        await stack.pipeline.run(request, chunks(clip))
    assert refused.value.reason == Reason.QUOTA_EXCEEDED
    assert stack.records.videos == {}
    assert await stack.leftovers() == ([], 0)
