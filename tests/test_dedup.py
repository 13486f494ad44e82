"""Deduplication per user: a video the user already has is neither stored nor
analysed twice, with or without a declared hash, and never across users."""

from __future__ import annotations

import hashlib

from conftest import Database, Running
from support.rpc import Client

from server.storage.s3 import S3ObjectStore


async def quota(db: Database, user: str) -> int:
    return int(await db.scalar("select remaining from user_quotas where user_id = :u", u=user))


async def test_declared_hash_returns_at_once_without_spending_quota(
    server: Running, big_video: bytes, s3: S3ObjectStore, db: Database
) -> None:
    user = f"dedup-declared-{id(server)}"
    client = server.client(user)
    first = await client.upload(big_video)
    assert not first.deduplicated
    remaining = await quota(db, user)

    sent = 0

    def counted() -> object:
        nonlocal sent
        for start in range(0, len(big_video), 256 * 1024):
            sent += 256 * 1024
            yield big_video[start : start + 256 * 1024]

    session = await client.new_session()
    again = await client.upload(
        counted(),  # type: ignore[arg-type]
        session_id=session.session_id,
        declared_sha256=hashlib.sha256(big_video).hexdigest(),
        declared_size=len(big_video),
    )
    assert again.deduplicated
    assert (again.video_id, again.analysis_id) == (first.video_id, first.analysis_id)
    assert again.s3_key == first.s3_key
    assert sent < len(big_video)  # the early return did not wait for the bytes
    assert await quota(db, user) == remaining
    assert await s3.list_keys(prefix=f"dashboard-uploads/{user}/") == [first.s3_key]
    status = await client.status(session.session_id)
    assert (status.status, status.session.video_id) == ("completed", first.video_id)


async def test_same_bytes_without_declaration_reuse_the_first_copy(
    server: Running, videos: dict[str, bytes], s3: S3ObjectStore, db: Database
) -> None:
    user = f"dedup-final-{id(server)}"
    client = server.client(user)
    first = await client.upload(videos["mkv"])
    remaining = await quota(db, user)
    again = await client.upload(videos["mkv"], filename="renamed.mkv")
    assert again.deduplicated
    assert again.video_id == first.video_id
    assert await quota(db, user) == remaining
    assert await s3.list_keys(prefix=f"dashboard-uploads/{user}/") == [first.s3_key]
    assert await s3.list_multipart(prefix=f"dashboard-uploads/{user}/") == []
    assert await db.scalar("select count(*) from videos where user_id = :u", u=user) == 1


async def test_never_across_users(
    server: Running, videos: dict[str, bytes], s3: S3ObjectStore
) -> None:
    alice: Client = server.client()
    bob: Client = server.client()
    data = videos["avi"]
    mine = await alice.upload(data)
    digest = hashlib.sha256(data).hexdigest()
    theirs = await bob.upload(data, declared_sha256=digest, declared_size=len(data))
    assert not theirs.deduplicated
    assert theirs.video_id != mine.video_id
    assert theirs.s3_key != mine.s3_key
    assert await s3.read_range(theirs.s3_key, start=0, length=len(data)) == data
