"""Faults injected at every step of an upload's finish line, against real services.

A stack of its own (PostgreSQL behind a TCP proxy that can lose a COMMIT's reply,
Redis with an fsynced AOF as production runs it, MinIO), so that services can be
stopped, killed and restarted without disturbing other tests. Faults are placed
with the documented ``VIDSCAN_FAULT_POINTS`` setting (server/faults.py): ``kill``
SIGKILLs a server process at a step, ``wait:<gate>`` holds an in-process server at
a step while the test breaks a backing service.

Every case must end in exactly one outcome: a finished upload (one row, the object
byte-identical to the file, the session completed, the quota unit spent once), or a
resumable session that another replica finishes -- and after a janitor pass, no
orphan of any kind.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from conftest import Database, Running, StartServer, service_settings
from sqlalchemy.engine import make_url
from support.process import ServerProcess
from support.rpc import CHUNK, details, header
from support.services import (
    MinioServer,
    PostgresServer,
    RedisServer,
    start_minio,
    start_postgres,
    start_redis,
)
from support.tcpproxy import TcpProxy
from vidscan.v1 import upload_pb2, upload_pb2_grpc
from vidscan_client.client import VidscanClient, VidscanError, resume_offset_from
from vidscan_client.protos import upload_pb2 as client_upload_pb2

from server.clock import system_clock
from server.config import DEFAULT_UPLOAD_QUOTA, Settings
from server.db.engine import create_engine
from server.db.repository import SqlRepository
from server.errors import Reason, reason_name
from server.janitor import OBJECT_MISSING, Janitor, JanitorReport
from server.main import token_authority
from server.sessions.port import SessionState
from server.sessions.redis import RedisSessionStore
from server.storage.s3 import S3ObjectStore
from server.upload.naming import OBJECT_PREFIX

BUCKET = "vidscan-faults"
LOCK_SECONDS = 2.0  # a killed replica's stream lock expires quickly


@dataclass
class Stack:
    postgres: PostgresServer
    redis: RedisServer
    minio: MinioServer
    pg_proxy: TcpProxy
    settings: Settings  # the server's view: PostgreSQL through the proxy
    direct_db: Database  # the test's view: PostgreSQL directly


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("faults")
    dirs = {name: root / name for name in ("pg", "redis", "minio")}
    for path in dirs.values():
        path.mkdir()
    with (
        start_postgres(workdir=dirs["pg"]) as postgres,
        start_redis(workdir=dirs["redis"], persistent=True) as redis_server,
        start_minio(workdir=dirs["minio"]) as minio,
    ):
        direct = make_url(postgres.url)
        with TcpProxy(f"127.0.0.1:{direct.port}") as proxy:
            through_proxy = direct.set(port=proxy.port).render_as_string(hide_password=False)
            settings = service_settings(
                database_url=through_proxy,
                redis_url=redis_server.url,
                minio=minio,
                bucket=BUCKET,
                data_dir=root / "server-data",
                shutdown_grace_seconds=2,
                stream_lock_seconds=LOCK_SECONDS,
            )
            yield Stack(postgres, redis_server, minio, proxy, settings, Database(postgres.url))


@pytest.fixture(scope="module")
def replica_b(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A second server process without faults: it finishes what the first left."""
    log = tmp_path_factory.mktemp("replica-b") / "server.log"
    process = ServerProcess(stack.settings, log_path=log)
    try:
        yield process
    finally:
        process.close()


@pytest.fixture
async def s3(stack: Stack) -> AsyncIterator[S3ObjectStore]:
    store = await S3ObjectStore.open(
        endpoint_url=stack.minio.endpoint_url,
        bucket=BUCKET,
        region=stack.minio.region,
        access_key_id=stack.minio.access_key,
        secret_access_key=stack.minio.secret_key,
    )
    yield store
    await store.close()


def new_user(tag: str) -> str:
    return f"faults-{tag}-{uuid.uuid4().hex[:10]}"


def token(stack: Stack, user: str) -> str:
    return token_authority(stack.settings).mint(user)


async def session_state(stack: Stack, session_id: str) -> tuple[SessionState, str, int]:
    store = RedisSessionStore.from_url(stack.redis.url)
    try:
        record = await store.get(session_id)
    finally:
        await store.close()
    assert record is not None
    return record.state, record.progress, record.committed_bytes


async def sweep(stack: Stack, s3: S3ObjectStore) -> JanitorReport:
    """A janitor pass that treats everything as older than the session TTL."""
    engine = create_engine(stack.postgres.url)
    repo = SqlRepository(engine=engine, clock=system_clock, default_quota=DEFAULT_UPLOAD_QUOTA)

    def later() -> datetime:
        return datetime.now(UTC) + timedelta(seconds=1)

    try:
        janitor = Janitor(
            store=s3, repository=repo, spool_dir=stack.settings.data_dir / "spool",
            max_age=timedelta(0), clock=later,
        )  # fmt: skip
        return await janitor.sweep()
    finally:
        await engine.dispose()


async def assert_finished(
    stack: Stack, s3: S3ObjectStore, *, user: str, session_id: str, data: bytes
) -> None:
    """One row, the object byte-identical, the session completed, quota spent once,
    and nothing else left for this user after a janitor pass."""
    db = stack.direct_db
    assert await db.scalar("SELECT count(*) FROM videos WHERE user_id = :u", u=user) == 1
    video_id = await db.scalar("SELECT id FROM videos WHERE user_id = :u", u=user)
    key = await db.scalar("SELECT s3_key FROM videos WHERE id = :v", v=video_id)
    assert await db.scalar("SELECT file_hash FROM videos WHERE id = :v", v=video_id) == (
        hashlib.sha256(data).hexdigest()
    )
    assert await db.scalar("SELECT count(*) FROM analyses WHERE video_id = :v", v=video_id) == 1
    stored = await s3.read_range(key, start=0, length=len(data) + 1)
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(data).hexdigest()
    state, progress, committed = await session_state(stack, session_id)
    assert (state, progress, committed) == (SessionState.COMPLETED, "", len(data))
    remaining = await db.scalar("SELECT remaining FROM user_quotas WHERE user_id = :u", u=user)
    assert remaining == DEFAULT_UPLOAD_QUOTA - 1  # spent exactly once
    held = "SELECT count(*) FROM quota_reservations WHERE user_id = :u"
    report = await sweep(stack, s3)
    assert report.rows_missing_objects == 0
    assert await db.scalar(held, u=user) == 0
    assert await s3.list_keys(prefix=f"{OBJECT_PREFIX}/{user}/") == [key]
    assert await s3.list_multipart(prefix=f"{OBJECT_PREFIX}/{user}/") == []
    status = await db.scalar("SELECT status FROM videos WHERE id = :v", v=video_id)
    assert status == "stored"


async def assert_nothing_kept(stack: Stack, s3: S3ObjectStore, user: str) -> None:
    """A discarded upload: no object, no multipart upload, no row, the quota whole."""
    db = stack.direct_db
    assert await s3.list_keys(prefix=f"{OBJECT_PREFIX}/{user}/") == []
    assert await s3.list_multipart(prefix=f"{OBJECT_PREFIX}/{user}/") == []
    assert await db.scalar("SELECT count(*) FROM videos WHERE user_id = :u", u=user) == 0
    remaining = await db.scalar("SELECT remaining FROM user_quotas WHERE user_id = :u", u=user)
    assert remaining == DEFAULT_UPLOAD_QUOTA
    held = "SELECT count(*) FROM quota_reservations WHERE user_id = :u"
    assert await db.scalar(held, u=user) == 0


@dataclass(frozen=True)
class Prepared:
    """A clip on disk and a new user's session on ``target``."""

    path: Path
    user: str
    tok: str
    session_id: str


async def prepared(stack: Stack, target: str, tmp_path: Path, data: bytes, tag: str) -> Prepared:
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    user = new_user(tag)
    tok = token(stack, user)
    session_id = await asyncio.to_thread(create_session, target, tok)
    return Prepared(path, user, tok, session_id)


def partial_stream(target: str, tok: str, session_id: str, data: bytes) -> None:
    """Sends ``data`` without finish_write: the server keeps it for a resume."""

    def messages() -> Iterator[upload_pb2.UploadVideoRequest]:
        yield header(session_id, filename="clip.mp4")
        for i in range(0, len(data), CHUNK):
            yield upload_pb2.UploadVideoRequest(chunk=data[i : i + CHUNK])

    with grpc.insecure_channel(target) as channel:
        stub = upload_pb2_grpc.UploadServiceStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as caught:
            stub.UploadVideo(messages(), metadata=(("authorization", f"Bearer {tok}"),))
    assert details(caught.value).reason == reason_name(Reason.UPLOAD_INCOMPLETE)


def upload_file(
    target: str, tok: str, path: Path, session_id: str, *, retries: int = 8
) -> client_upload_pb2.UploadResult:
    with VidscanClient(target, tok) as client:
        return client.upload(path, session_id=session_id, max_retries=retries)


def create_session(target: str, tok: str) -> str:
    with VidscanClient(target, tok) as client:
        return client.create_session().session_id


# -- a server process SIGKILLed at each step; another replica finishes --------------

FRESH_STEPS = ["sealed", "assembled", "before-record", "recorded", "completed"]
RESUMED_STEPS = ["sealed", "assembled", "before-download", "recorded"]


@pytest.mark.parametrize(
    ("resumed", "step"),
    [(False, s) for s in FRESH_STEPS] + [(True, s) for s in RESUMED_STEPS],
    ids=[f"fresh-{s}" for s in FRESH_STEPS] + [f"resumed-{s}" for s in RESUMED_STEPS],
)
async def test_server_killed_at_each_finish_step(
    resumed: bool,
    step: str,
    stack: Stack,
    replica_b: ServerProcess,
    videos: dict[str, bytes],
    s3: S3ObjectStore,
    tmp_path: Path,
) -> None:
    data = videos["mp4"]
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    user = new_user(f"kill-{step}")
    tok = token(stack, user)
    replica_a = await asyncio.to_thread(
        ServerProcess,
        stack.settings.model_copy(update={"fault_points": f"{step}=kill"}),
        log_path=tmp_path / "replica-a.log",
    )
    try:
        session_id = await asyncio.to_thread(create_session, replica_a.target, tok)
        if resumed:  # the first bytes arrive at B, the rest (and the finish) at A
            await asyncio.to_thread(
                partial_stream, replica_b.target, tok, session_id, data[: len(data) // 2]
            )
        with pytest.raises(VidscanError) as caught:
            await asyncio.to_thread(upload_file, replica_a.target, tok, path, session_id, retries=0)
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE, caught.value
        assert await asyncio.to_thread(replica_a.wait, 10) == -9  # died at the step
    finally:
        replica_a.close()
    assert f"fault injection: kill at {step}" in (tmp_path / "replica-a.log").read_text()

    if step == "completed":  # finished before the answer: nothing left to resume
        state, _, _ = await session_state(stack, session_id)
        assert state is SessionState.COMPLETED
    else:
        result = await asyncio.to_thread(upload_file, replica_b.target, tok, path, session_id)
        assert result.file_hash == hashlib.sha256(data).hexdigest()
        assert result.file_size == len(data)
    await assert_finished(stack, s3, user=user, session_id=session_id, data=data)


async def test_an_abandoned_assembled_upload_is_swept(
    stack: Stack, videos: dict[str, bytes], s3: S3ObjectStore, tmp_path: Path
) -> None:
    """Killed after assembly and never resumed: once the session is past its TTL the
    janitor deletes the object no row points at and gives the quota unit back."""
    data = videos["mp4"]
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    user = new_user("abandoned")
    tok = token(stack, user)
    replica = await asyncio.to_thread(
        ServerProcess,
        stack.settings.model_copy(update={"fault_points": "assembled=kill"}),
        log_path=tmp_path / "server.log",
    )
    try:
        session_id = await asyncio.to_thread(create_session, replica.target, tok)
        with pytest.raises(VidscanError):
            await asyncio.to_thread(upload_file, replica.target, tok, path, session_id, retries=0)
    finally:
        replica.close()
    keys = await s3.list_keys(prefix=f"{OBJECT_PREFIX}/{user}/")
    assert len(keys) == 1  # assembled, no row
    db = stack.direct_db
    assert await db.scalar("SELECT count(*) FROM videos WHERE user_id = :u", u=user) == 0

    report = await sweep(stack, s3)
    assert report.deleted_orphan_objects >= 1
    assert report.released_reservations >= 1
    await assert_nothing_kept(stack, s3, user)


# -- an in-process server held at a step while a backing service breaks --------------


GATE_WAIT_SECONDS = 60.0


@dataclass
class HeldUpload:
    """An upload whose in-process server waits at ``step`` until ``release()``."""

    server: Running
    gate: Path
    user: str
    tok: str
    session_id: str
    path: Path
    data: bytes
    call: asyncio.Task[client_upload_pb2.UploadResult]

    async def reached(self) -> None:
        reached = self.gate.with_name(self.gate.name + ".reached")
        deadline = time.monotonic() + GATE_WAIT_SECONDS
        while not reached.exists():
            assert time.monotonic() < deadline, f"the server never reached {self.gate.name}"
            await asyncio.sleep(0.02)

    def release(self) -> None:
        self.gate.touch()

    async def refused(self) -> VidscanError:
        with pytest.raises(VidscanError) as caught:
            await self.call
        return caught.value

    async def resume(self) -> client_upload_pb2.UploadResult:
        """The same session, on the same server, once the fault is over."""
        return await asyncio.to_thread(
            upload_file, self.server.target, self.tok, self.path, self.session_id
        )


async def held_upload(
    start_server: StartServer,
    stack: Stack,
    tmp_path: Path,
    data: bytes,
    *,
    step: str,
    resumed: bool = False,
) -> HeldUpload:
    """Starts an upload on a server that waits at ``step``; ``resumed``: half the
    bytes arrive first in a stream of their own, so the finish is a resumed one."""
    gate = tmp_path / f"gate-{step}"
    server = await start_server(
        stack.settings, fault_points=f"{step}=wait:{gate}", data_dir=tmp_path / "data"
    )
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    user = new_user(step)
    tok = token(stack, user)
    session_id = await asyncio.to_thread(create_session, server.target, tok)
    if resumed:
        await asyncio.to_thread(
            partial_stream, server.target, tok, session_id, data[: len(data) // 2]
        )
    call = asyncio.create_task(
        asyncio.to_thread(upload_file, server.target, tok, path, session_id, retries=0)
    )
    held = HeldUpload(server, gate, user, tok, session_id, path, data, call)
    await held.reached()
    return held


async def assert_sealed(stack: Stack, held: HeldUpload) -> None:
    """Resumable: the session is active with every byte stored and sealed."""
    state, progress, committed = await session_state(stack, held.session_id)
    assert state is SessionState.ACTIVE and committed == len(held.data)
    assert '"stage":"sealed"' in progress


async def assert_resumed_to_the_end(stack: Stack, s3: S3ObjectStore, held: HeldUpload) -> None:
    result = await held.resume()
    assert result.file_hash == hashlib.sha256(held.data).hexdigest()
    await assert_finished(stack, s3, user=held.user, session_id=held.session_id, data=held.data)


async def test_postgres_stopped_at_the_final_insert(
    stack: Stack, start_server: StartServer, videos: dict[str, bytes], s3: S3ObjectStore,
    tmp_path: Path,
) -> None:  # fmt: skip
    """PostgreSQL stops while the object is assembled and the row not yet written:
    UNAVAILABLE, nothing deleted, the quota unit still held by the session; once the
    database is back, the same session finishes without resending a byte."""
    held = await held_upload(start_server, stack, tmp_path, videos["mp4"], step="before-record")
    await asyncio.to_thread(stack.postgres.halt)
    try:
        held.release()
        error = await held.refused()
        assert (error.code, error.reason) == (
            grpc.StatusCode.UNAVAILABLE,
            reason_name(Reason.DATABASE_UNAVAILABLE),
        )
        assert error.cleanup is None or not error.cleanup.s3_cleanup
        await assert_sealed(stack, held)
        assert len(await s3.list_keys(prefix=f"{OBJECT_PREFIX}/{held.user}/")) == 1  # kept
    finally:
        await asyncio.to_thread(stack.postgres.restart)
    await assert_resumed_to_the_end(stack, s3, held)


async def test_a_lost_commit_acknowledgement_is_resolved_by_reading_back(
    stack: Stack, start_server: StartServer, videos: dict[str, bytes], s3: S3ObjectStore,
    tmp_path: Path,
) -> None:  # fmt: skip
    """The proxy delivers the final transaction's COMMIT, swallows its reply and
    cuts the connection: the transaction committed but the server never heard so.
    It runs the (idempotent) record once more, finds the row, and answers OK --
    with exactly one row and the quota unit spent once."""
    held = await held_upload(start_server, stack, tmp_path, videos["mp4"], step="before-record")
    dropped = stack.pg_proxy.replies_dropped
    stack.pg_proxy.drop_reply_to(b"COMMIT")
    held.release()
    result = await held.call
    assert stack.pg_proxy.replies_dropped == dropped + 1, "no COMMIT went through the proxy"
    assert result.file_hash == hashlib.sha256(held.data).hexdigest()
    await assert_finished(stack, s3, user=held.user, session_id=held.session_id, data=held.data)


async def test_minio_killed_during_the_post_resume_download(
    stack: Stack, start_server: StartServer, videos: dict[str, bytes], s3: S3ObjectStore,
    tmp_path: Path,
) -> None:  # fmt: skip
    """A resumed upload downloads the assembled object to validate it; MinIO is
    SIGKILLed as that download starts. UNAVAILABLE, the object kept, the session
    sealed; with MinIO back the same session finishes."""
    held = await held_upload(
        start_server, stack, tmp_path, videos["mp4"], step="before-download", resumed=True
    )
    await asyncio.to_thread(stack.minio.kill)
    try:
        held.release()
        error = await held.refused()
        assert (error.code, error.reason) == (
            grpc.StatusCode.UNAVAILABLE,
            reason_name(Reason.STORAGE_UNAVAILABLE),
        )
        await assert_sealed(stack, held)
    finally:
        await asyncio.to_thread(stack.minio.restart)
    await assert_resumed_to_the_end(stack, s3, held)


async def test_minio_down_when_a_small_file_is_stored_in_one_request(
    stack: Stack, replica_b: ServerProcess, videos: dict[str, bytes], s3: S3ObjectStore,
    tmp_path: Path,
) -> None:  # fmt: skip
    """A file smaller than a part is stored with one PutObject at the end; MinIO is
    down then. UNAVAILABLE, nothing sealed or committed (the bytes were never stored,
    or stored under a name nothing refers to), the session still active; with MinIO
    back the same session uploads again from byte 0 and finishes, and the janitor
    finds nothing else."""
    data = videos["mp4"]
    up = await prepared(stack, replica_b.target, tmp_path, data, "put-down")
    await asyncio.to_thread(stack.minio.kill)
    try:
        with pytest.raises(VidscanError) as caught:
            await asyncio.to_thread(
                upload_file, replica_b.target, up.tok, up.path, up.session_id, retries=0
            )
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE, caught.value
        assert caught.value.reason == reason_name(Reason.STORAGE_UNAVAILABLE)
        state, progress, committed = await session_state(stack, up.session_id)
        assert (state, progress, committed) == (SessionState.ACTIVE, "", 0)
    finally:
        await asyncio.to_thread(stack.minio.restart)
    result = await asyncio.to_thread(upload_file, replica_b.target, up.tok, up.path, up.session_id)
    assert result.file_size == len(data)
    await assert_finished(stack, s3, user=up.user, session_id=up.session_id, data=data)


async def test_a_small_file_stored_whole_is_deleted_when_its_session_is_cancelled(
    stack: Stack, start_server: StartServer, videos: dict[str, bytes], s3: S3ObjectStore,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Sealed with its object put whole (no multipart upload), then the session is
    cancelled before the row is written: CANCELLED, the object deleted, the quota
    unit back, nothing for the janitor."""
    held = await held_upload(start_server, stack, tmp_path, videos["mp4"], step="sealed")
    await assert_sealed(stack, held)
    assert '"whole":true' in (await session_state(stack, held.session_id))[1]
    assert len(await s3.list_keys(prefix=f"{OBJECT_PREFIX}/{held.user}/")) == 1
    with VidscanClient(held.server.target, held.tok) as client:
        await asyncio.to_thread(client.cancel, held.session_id)
    try:  # the stream's lock keeper notices within a second and interrupts it
        error = await asyncio.wait_for(held.refused(), timeout=30)
    finally:
        held.release()
    assert error.code == grpc.StatusCode.CANCELLED, error
    assert (await session_state(stack, held.session_id))[0] is SessionState.CANCELLED
    await assert_nothing_kept(stack, s3, held.user)


async def test_redis_killed_when_the_session_is_completed(
    stack: Stack, start_server: StartServer, videos: dict[str, bytes], s3: S3ObjectStore,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Redis dies after the row is committed, before the session is marked done (one
    atomic write now, so it is either done or not). UNAVAILABLE; with Redis back
    (its AOF kept the session) the resume finds the row and completes the session,
    without spending a second unit. The server's pooled Redis connections died with
    Redis: the first command on each is retried once on a fresh connection."""
    held = await held_upload(start_server, stack, tmp_path, videos["mp4"], step="recorded")
    await asyncio.to_thread(stack.redis.kill)
    try:
        held.release()
        error = await held.refused()
        assert (error.code, error.reason) == (
            grpc.StatusCode.UNAVAILABLE,
            reason_name(Reason.SESSION_STORE_UNAVAILABLE),
        )
    finally:
        await asyncio.to_thread(stack.redis.restart)
    await assert_sealed(stack, held)
    with VidscanClient(held.server.target, held.tok) as client:  # no retries: first try works
        status = await asyncio.to_thread(client.session_status, held.session_id, retries=0)
    assert status.status == "active"
    await assert_resumed_to_the_end(stack, s3, held)


async def test_redis_clients_retry_once_on_a_dropped_pooled_connection(stack: Stack) -> None:
    store = RedisSessionStore.from_url(stack.redis.url)
    try:
        await store.ping()  # a pooled connection now exists
        await asyncio.to_thread(stack.redis.kill)
        await asyncio.to_thread(stack.redis.restart)
        await store.ping()  # meets the dead connection, retried on a fresh one
    finally:
        await store.close()


# -- the stream lock and the janitor's reconciliation -------------------------------


async def test_a_stream_that_loses_its_lock_stops_at_once(
    stack: Stack, start_server: StartServer, videos: dict[str, bytes], tmp_path: Path
) -> None:
    """Another owner takes the lock (as after an expiry): the stream ends with
    ABORTED/SESSION_LOCK_LOST within about a refresh interval, and writes nothing
    more to the session."""
    server = await start_server(stack.settings, data_dir=tmp_path / "data")
    user = new_user("lock")
    tok = token(stack, user)
    session_id = await asyncio.to_thread(create_session, server.target, tok)
    data = videos["mp4"]
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow() -> Iterator[upload_pb2.UploadVideoRequest]:
        yield header(session_id, filename="clip.mp4")
        loop.call_soon_threadsafe(started.set)
        deadline = time.monotonic() + 30
        for i in range(0, len(data), 64):
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)
            yield upload_pb2.UploadVideoRequest(chunk=data[i : i + 64])
        yield upload_pb2.UploadVideoRequest(finish_write=True)

    def call() -> grpc.RpcError:
        with grpc.insecure_channel(server.target) as channel:
            stub = upload_pb2_grpc.UploadServiceStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.RpcError) as caught:
                stub.UploadVideo(slow(), metadata=(("authorization", f"Bearer {tok}"),))
            return caught.value

    task = asyncio.create_task(asyncio.to_thread(call))
    await started.wait()
    await asyncio.sleep(0.5)
    client = aioredis.Redis.from_url(stack.redis.url)
    try:
        await client.set(f"vidscan:session:{session_id}:lock", "thief", px=60_000)
        stolen_at = time.monotonic()
        error = await task
        waited = time.monotonic() - stolen_at
        owner = await client.get(f"vidscan:session:{session_id}:lock")
    finally:
        await client.aclose()
    info = details(error)
    assert (info.code, info.reason) == (
        grpc.StatusCode.ABORTED,
        reason_name(Reason.SESSION_LOCK_LOST),
    )
    assert waited < LOCK_SECONDS * 2, waited  # one refresh interval, not the stream's end
    assert owner == b"thief"  # the lost stream did not release someone else's lock


async def test_a_row_whose_object_vanished_is_marked_loudly(
    stack: Stack, start_server: StartServer, videos: dict[str, bytes], s3: S3ObjectStore,
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    server = await start_server(stack.settings, data_dir=tmp_path / "data")
    up = await prepared(stack, server.target, tmp_path, videos["mp4"], "vanished")
    result = await asyncio.to_thread(upload_file, server.target, up.tok, up.path, up.session_id)
    await s3.delete_object(result.s3_key)  # lost behind the service's back

    with caplog.at_level(logging.ERROR, logger="server.janitor"):
        report = await sweep(stack, s3)
    assert report.rows_missing_objects == 1
    assert any(result.video_id in r.getMessage() for r in caplog.records), caplog.records
    db = stack.direct_db
    status = await db.scalar("SELECT status FROM videos WHERE id = :v", v=result.video_id)
    assert status == OBJECT_MISSING  # kept and marked, never deleted silently
    again = await sweep(stack, s3)
    assert again.rows_missing_objects == 0  # reported once


async def test_a_sealed_session_refuses_extra_bytes_without_discarding(
    stack: Stack, start_server: StartServer, videos: dict[str, bytes], s3: S3ObjectStore,
    tmp_path: Path,
) -> None:  # fmt: skip
    """A sealed session accepts finish_write alone: a stream that sends more bytes is
    told the offset (OUT_OF_RANGE) and the sealed upload stays whole."""
    held = await held_upload(start_server, stack, tmp_path, videos["mp4"], step="before-record")
    await asyncio.to_thread(stack.postgres.halt)
    try:
        held.release()
        await held.refused()
    finally:
        await asyncio.to_thread(stack.postgres.restart)
    size = len(held.data)

    def extra() -> grpc.RpcError:
        first = header(held.session_id, filename="clip.mp4", write_offset=size)
        messages = [first, upload_pb2.UploadVideoRequest(chunk=b"more"),
                    upload_pb2.UploadVideoRequest(finish_write=True)]  # fmt: skip
        auth = (("authorization", f"Bearer {held.tok}"),)
        with grpc.insecure_channel(held.server.target) as channel:
            stub = upload_pb2_grpc.UploadServiceStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.RpcError) as caught:
                stub.UploadVideo(iter(messages), metadata=auth)
            return caught.value

    info = details(await asyncio.to_thread(extra))
    assert (info.code, info.reason) == (
        grpc.StatusCode.OUT_OF_RANGE,
        reason_name(Reason.INVALID_OFFSET),
    )
    assert info.metadata["expected_offset"] == str(size)
    await assert_sealed(stack, held)
    await assert_resumed_to_the_end(stack, s3, held)


# -- pure logic ----------------------------------------------------------------------


def test_client_resumes_from_the_offset_the_server_names() -> None:
    def refusal(**metadata: str) -> VidscanError:
        return VidscanError(
            grpc.StatusCode.OUT_OF_RANGE, "INVALID_OFFSET", "stale", metadata=metadata
        )

    assert resume_offset_from(refusal(expected_offset="4096"), 10_000) == 4096
    assert resume_offset_from(refusal(expected_offset="0"), 10_000) == 0
    assert resume_offset_from(refusal(), 10_000) is None
    assert resume_offset_from(refusal(expected_offset="x"), 10_000) is None
    assert resume_offset_from(refusal(expected_offset="20000"), 10_000) is None
    other = VidscanError(grpc.StatusCode.UNAVAILABLE, "STORAGE_UNAVAILABLE", "down")
    assert resume_offset_from(other, 10_000) is None
