"""The janitor on real services, and the embedded default's adapters."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from conftest import Database, StartServer
from support.rpc import details
from support.videos import SPECS
from vidscan.v1 import upload_pb2

from server.clock import system_clock
from server.config import Settings
from server.db.engine import create_engine
from server.db.migrate import upgrade_to_head
from server.db.repository import SqlRepository
from server.errors import Internal, Reason
from server.janitor import Janitor
from server.storage.filesystem import FilesystemObjectStore
from server.storage.port import UploadedPart
from server.storage.s3 import S3ObjectStore


async def test_janitor_aborts_orphaned_multiparts_and_releases_quota(
    real_settings: Settings, s3: S3ObjectStore, db: Database, tmp_path: Path
) -> None:
    """What a crashed process leaves: an open multipart upload and a quota
    reservation. Once they are older than the session TTL, the janitor frees both."""
    user = f"janitor-{id(tmp_path)}"
    key = f"dashboard-uploads/{user}/orphan.mp4"
    upload_id = await s3.create_multipart(key, content_type="video/mp4")
    await s3.upload_part(key, upload_id=upload_id, number=1, data=b"x" * 1024)
    engine = create_engine(real_settings.database_url)
    await upgrade_to_head(engine)
    repo = SqlRepository(engine=engine, clock=system_clock, default_quota=5)
    try:
        await repo.reserve_quota(user_id=user, session_id=f"s-{id(tmp_path)}")
        assert await repo.get_quota(user_id=user) == 4
        stale_spool = tmp_path / "old.upload"
        stale_spool.write_bytes(b"partial")

        def later() -> datetime:
            return datetime.now(UTC) + timedelta(hours=2)

        young = Janitor(
            store=s3,
            repository=repo,
            spool_dir=tmp_path,
            max_age=timedelta(hours=3),
            clock=later,
        )
        report = await young.sweep()
        assert report.released_reservations == 0
        assert len(await s3.list_multipart(prefix=f"dashboard-uploads/{user}/")) == 1

        janitor = Janitor(
            store=s3,
            repository=repo,
            spool_dir=tmp_path,
            max_age=timedelta(hours=1),
            clock=later,
        )
        import os

        old = datetime.now(UTC).timestamp() - 7200
        os.utime(stale_spool, (old, old))
        report = await janitor.sweep()
        assert report.aborted_uploads >= 1
        assert report.released_reservations >= 1
        assert report.removed_spool_files == 1
        assert await s3.list_multipart(prefix=f"dashboard-uploads/{user}/") == []
        assert await repo.get_quota(user_id=user) == 5
    finally:
        await engine.dispose()


async def test_embedded_default_runs_the_whole_pipeline(
    start_server: StartServer, embedded_settings: Settings, videos: dict[str, bytes]
) -> None:
    running = await start_server(embedded_settings)
    client = running.client()
    for name in ("mp4", "webm", "avi"):
        data = videos[name]
        result = await client.upload(data, filename=f"clip.{name}")
        assert result.s3_url.startswith(f"/v1/videos/{result.video_id}/content?")  # signed link
        assert str(embedded_settings.data_dir) not in result.s3_url  # no server paths
        path = embedded_settings.data_dir / "objects" / "local" / result.s3_key
        assert path.read_bytes() == data
        assert result.file_hash == hashlib.sha256(data).hexdigest()
        assert result.upload_status == upload_pb2.UPLOAD_STATUS_PROCESSING
        video = await client.video(result.video_id)
        assert video.format == SPECS[name].suffix.lstrip(".")
    # Refusals behave the same on the embedded adapters.
    session = await client.new_session()
    with pytest.raises(grpc.RpcError) as caught:
        await client.upload(b"not a video" * 100, session_id=session.session_id)
    assert details(caught.value).reason == "UNSUPPORTED_FORMAT"
    store_root = embedded_settings.data_dir / "objects" / ".multipart"
    assert list(store_root.iterdir()) == []


async def test_filesystem_store_has_multipart_semantics(tmp_path: Path) -> None:
    store = FilesystemObjectStore(root=tmp_path)
    key = "dashboard-uploads/u/v.mp4"
    upload_id = await store.create_multipart(key, content_type="video/mp4")
    parts = [
        await store.upload_part(key, upload_id=upload_id, number=n, data=bytes([n]) * 10)
        for n in (1, 2, 3)
    ]
    assert [p.key for p in await store.list_multipart(prefix="dashboard-uploads/")] == [key]
    assert await store.object_size(key) is None  # invisible until completed
    await store.complete_multipart(key, upload_id=upload_id, parts=parts)
    assert await store.read_range(key, start=8, length=4) == b"\x01\x01\x02\x02"
    assert await store.list_multipart(prefix="") == []
    aborted = await store.create_multipart("dashboard-uploads/u/w.mp4", content_type="video/mp4")
    await store.abort_multipart("dashboard-uploads/u/w.mp4", upload_id=aborted)
    await store.abort_multipart("dashboard-uploads/u/w.mp4", upload_id=aborted)  # idempotent
    assert await store.list_keys(prefix="dashboard-uploads/") == [key]
    with pytest.raises(Exception, match="escapes"):
        await store.object_size("../../etc/passwd")


async def test_s3_completion_is_idempotent_even_when_two_streams_race(
    s3: S3ObjectStore, tmp_path: Path
) -> None:
    """A cut-off stream's completion may still be running in the store when the
    stream that resumes the session completes the same upload: both must succeed
    (MinIO answers the loser InvalidPart or NoSuchUpload), and a completion whose
    parts never assembled anything is still an error."""
    key = f"dashboard-uploads/race-{id(tmp_path)}/v.mp4"
    upload_id = await s3.create_multipart(key, content_type="video/mp4")
    parts = [
        await s3.upload_part(key, upload_id=upload_id, number=n, data=bytes([n]) * (5 << 20))
        for n in (1, 2)
    ]
    await asyncio.gather(
        *(s3.complete_multipart(key, upload_id=upload_id, parts=parts) for _ in range(3))
    )
    await s3.complete_multipart(key, upload_id=upload_id, parts=parts)  # after the fact
    assert await s3.object_size(key) == 10 << 20

    other = f"dashboard-uploads/race-{id(tmp_path)}/w.mp4"
    upload_id = await s3.create_multipart(other, content_type="video/mp4")
    part = await s3.upload_part(other, upload_id=upload_id, number=1, data=b"x" * 1024)
    forged = UploadedPart(number=1, etag='"0123456789abcdef0123456789abcdef"', size=part.size)
    with pytest.raises(Internal) as caught:
        await s3.complete_multipart(other, upload_id=upload_id, parts=[forged])
    assert caught.value.reason is Reason.STORAGE_ERROR
    await s3.abort_multipart(other, upload_id=upload_id)
    for name in (key, other):
        await s3.delete_object(name)


async def test_s3_completion_is_not_cut_off_by_a_cancelled_caller(
    s3: S3ObjectStore, tmp_path: Path
) -> None:
    """MinIO, when a completion's connection is closed mid-request, can keep the upload
    but drop its parts; a stream cancelled while completing must let it finish, so the
    next stream (or the same one resumed) finds the object assembled."""
    cut = 0
    for attempt, delay in enumerate((0.0, 0.0, 0.001, 0.001, 0.002, 0.005)):
        key = f"dashboard-uploads/cut-{id(tmp_path)}-{attempt}/v.mp4"
        upload_id = await s3.create_multipart(key, content_type="video/mp4")
        parts = [
            await s3.upload_part(key, upload_id=upload_id, number=1, data=b"a" * (5 << 20)),
            await s3.upload_part(key, upload_id=upload_id, number=2, data=b"b" * 1000),
        ]
        completing = asyncio.ensure_future(
            s3.complete_multipart(key, upload_id=upload_id, parts=parts)
        )
        await asyncio.sleep(delay)
        completing.cancel()
        try:
            await completing
        except asyncio.CancelledError:
            cut += 1
        await s3.complete_multipart(key, upload_id=upload_id, parts=parts)
        assert await s3.object_size(key) == (5 << 20) + 1000, f"after a cut at {delay}s"
        await s3.delete_object(key)
    assert cut > 0, "no completion was cancelled while it ran"
