"""A full disk during an embedded upload: a precise reason, and nothing left behind.

A 4 MiB tmpfs is mounted where the embedded object store (or the upload spool)
keeps its files, and a ~20 MiB upload runs into it. The filesystem errors are
translated in one place (``server/storage/oserrors.py``): RESOURCE_EXHAUSTED /
STORAGE_FULL, and the pipeline's cleanup runs as for any discarded upload.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import StartServer
from support.rpc import details

from server.config import DEFAULT_UPLOAD_QUOTA, Settings
from server.errors import Reason, reason_name

DISK_BYTES = 4 * 1024 * 1024


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def mount_small_disk(where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(f"this test mounts a tmpfs and needs root: {mounted.stderr.strip()}")


@pytest.fixture(params=["objects", "spool"])
def full_place(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Path]:
    """The embedded store's directory or the spool directory, on a tiny disk."""
    place = data_dir / str(request.param)
    mount_small_disk(place)
    try:
        yield place
    finally:
        subprocess.run(["umount", "-l", str(place)], check=False, capture_output=True)


def files_in(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()]


async def test_a_full_disk_refuses_the_upload_precisely_and_leaves_nothing(
    full_place: Path,
    data_dir: Path,
    start_server: StartServer,
    embedded_settings: Settings,
    big_video: bytes,
    tmp_path: Path,
) -> None:
    running = await start_server(
        embedded_settings,
        data_dir=data_dir,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'vidscan.db'}",
    )
    user = f"full-disk-{uuid.uuid4().hex[:10]}"
    client = running.client(user)
    session = await client.new_session()
    with pytest.raises(grpc.RpcError) as caught:
        await client.upload(big_video, session_id=session.session_id)
    info = details(caught.value)
    assert (info.code, info.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        reason_name(Reason.STORAGE_FULL),
    )
    assert str(data_dir) not in info.message  # no server paths in errors
    assert info.cleanup is not None and info.cleanup.quota_released

    assert files_in(full_place) == []  # no part, no spool file, no temp file
    assert files_in(data_dir / "spool") == []
    repository = running.app.core.repository
    assert await repository.get_quota(user_id=user) == DEFAULT_UPLOAD_QUOTA
    assert not await repository.video_exists_for_session(session_id=session.session_id)
    assert (await client.status(session.session_id)).status == "cancelled"
    assert (await client.new_session()).session_id  # and the server goes on serving
