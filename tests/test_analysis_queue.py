"""The analysis queue on real Redis (and in memory): postponed jobs wait their delay
and back off, the queue knows which analyses it holds, and the recovery sweep
re-queues analyses whose jobs were lost (never enqueued, Redis flushed) without
duplicating those still held."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from support.services import PostgresServer, RedisServer

from server.analysis.analyzer import AnalysisWorker, Analyzer
from server.analysis.queue import (
    MAX_RETRY_DELAY_SECONDS,
    Job,
    MemoryQueue,
    RecoverableQueue,
    RedisStreamQueue,
    retry_delay,
)
from server.analysis.recovery import QueueRecovery
from server.clock import system_clock
from server.db.analyses import SqlAnalysisRepository
from server.db.engine import create_engine
from server.db.migrate import upgrade_to_head
from server.db.models import AnalysisRow, VideoRow
from server.errors import Reason, Unavailable, VidscanError
from server.records.model import AnalysisRecord, AnalysisStatus
from server.records.port import AnalysisRepository

QUEUE_DB = 7  # a Redis database of this module's own, flushed around each test
OLD = timedelta(minutes=10)
MIN_AGE = timedelta(minutes=1)


# --- backoff (pure) ---------------------------------------------------------------


def test_retry_delay_doubles_per_retry() -> None:
    assert [retry_delay(n, base_seconds=5) for n in range(5)] == [5, 10, 20, 40, 80]


def test_retry_delay_is_capped() -> None:
    assert retry_delay(6, base_seconds=5) == MAX_RETRY_DELAY_SECONDS  # 320 s capped
    assert retry_delay(10_000, base_seconds=5) == MAX_RETRY_DELAY_SECONDS  # no overflow
    assert retry_delay(3, base_seconds=1, max_seconds=6) == 6


def test_retry_delay_of_a_new_job_is_the_base() -> None:
    assert retry_delay(0, base_seconds=0.3) == 0.3
    assert retry_delay(-1, base_seconds=0.3) == 0.3


# --- fixtures ------------------------------------------------------------------------


def queue_url(redis_server: RedisServer) -> str:
    return redis_server.url.rsplit("/", 1)[0] + f"/{QUEUE_DB}"


@pytest.fixture
async def redis_admin(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(queue_url(redis_server), decode_responses=True)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def redis_queue(
    redis_server: RedisServer, redis_admin: aioredis.Redis
) -> AsyncIterator[RedisStreamQueue]:
    # A short reclaim time: a postponed job still pending would be reclaimed at once.
    queue = RedisStreamQueue.from_url(queue_url(redis_server), reclaim_after_seconds=0.05)
    yield queue
    await queue.close()


@pytest.fixture
async def memory_queue() -> AsyncIterator[MemoryQueue]:
    queue = MemoryQueue()
    yield queue
    await queue.close()


@pytest.fixture(params=["redis", "memory"])
def queue(request: pytest.FixtureRequest) -> RecoverableQueue:
    """Each behaviour test runs on both adapters."""
    name = "redis_queue" if request.param == "redis" else "memory_queue"
    return cast(RecoverableQueue, request.getfixturevalue(name))


async def receive(queue: RecoverableQueue, wait: float = 2.0) -> Job:
    job = await queue.receive(consumer="c1", wait_seconds=wait)
    assert job is not None, "no job arrived"
    return job


# --- delayed retries -------------------------------------------------------------------


async def test_postponed_job_waits_its_delay(queue: RecoverableQueue) -> None:
    await queue.enqueue("a-1")
    job = await receive(queue)
    assert job.retries == 0
    loop = asyncio.get_running_loop()
    postponed_at = loop.time()
    await queue.retry_later(job, delay_seconds=0.3)
    assert await queue.receive(consumer="c1", wait_seconds=0.1) is None
    assert await queue.receive(consumer="c2", wait_seconds=0.05) is None  # not reclaimed
    again = await receive(queue, wait=2.0)
    assert loop.time() - postponed_at >= 0.29
    assert (again.analysis_id, again.retries) == ("a-1", 1)


async def test_retry_count_grows_per_postponement(queue: RecoverableQueue) -> None:
    await queue.enqueue("a-2")
    job = await receive(queue)
    for expected in (1, 2, 3):
        await queue.retry_later(job, delay_seconds=0)
        job = await receive(queue)
        assert job.retries == expected
    await queue.ack(job)
    assert await queue.receive(consumer="c1", wait_seconds=0.1) is None


async def test_new_job_is_not_held_back_by_a_postponed_one(queue: RecoverableQueue) -> None:
    await queue.enqueue("slow")
    await queue.retry_later(await receive(queue), delay_seconds=5)
    await queue.enqueue("fast")
    assert (await receive(queue, wait=1.0)).analysis_id == "fast"


async def test_postponed_job_survives_the_worker(
    redis_server: RedisServer, redis_queue: RedisStreamQueue
) -> None:
    """The delayed set lives in Redis: another replica delivers the job when due."""
    await redis_queue.enqueue("a-3")
    await redis_queue.retry_later(await receive(redis_queue), delay_seconds=0.2)
    other = RedisStreamQueue.from_url(queue_url(redis_server), reclaim_after_seconds=30)
    try:
        job = await receive(other)
        assert (job.analysis_id, job.retries) == ("a-3", 1)
    finally:
        await other.close()


# --- held() ----------------------------------------------------------------------------


async def test_held_follows_a_job_until_its_ack(queue: RecoverableQueue) -> None:
    assert await queue.held([]) == set()
    await queue.enqueue("q-1")
    await queue.enqueue("q-2")
    assert await queue.held(["q-1", "q-2", "never"]) == {"q-1", "q-2"}  # queued
    first = await receive(queue)
    second = await receive(queue)
    assert await queue.held(["q-1", "q-2"]) == {"q-1", "q-2"}  # received, pending
    await queue.retry_later(first, delay_seconds=0.2)
    assert await queue.held(["q-1"]) == {"q-1"}  # postponed
    await queue.ack(second)
    assert await queue.held(["q-1", "q-2"]) == {"q-1"}  # acked
    again = await receive(queue)
    assert await queue.held(["q-1"]) == {"q-1"}  # back from the delayed set
    await queue.ack(again)
    assert await queue.held(["q-1", "q-2"]) == set()


async def test_held_counts_copies_and_ignores_a_second_ack(queue: RecoverableQueue) -> None:
    await queue.enqueue("dup")
    await queue.enqueue("dup")
    one = await receive(queue)
    await queue.ack(one)
    await queue.ack(one)  # a repeated ack must not drop the other copy
    assert await queue.held(["dup"]) == {"dup"}
    await queue.ack(await receive(queue))
    assert await queue.held(["dup"]) == set()


async def test_postponing_an_acked_job_does_nothing(queue: RecoverableQueue) -> None:
    await queue.enqueue("done")
    job = await receive(queue)
    await queue.ack(job)
    await queue.retry_later(job, delay_seconds=0)
    assert await queue.held(["done"]) == set()
    assert await queue.receive(consumer="c1", wait_seconds=0.1) is None


async def test_reclaimed_job_stays_held_once(redis_queue: RedisStreamQueue) -> None:
    """A job taken over from a slow worker is acknowledged by both; it counts once."""
    await redis_queue.enqueue("r-1")
    slow = await receive(redis_queue)
    await asyncio.sleep(0.1)  # past reclaim_after
    taken = await redis_queue.receive(consumer="c2", wait_seconds=0.1)
    assert taken is not None and taken.message_id == slow.message_id
    await redis_queue.ack(taken)
    await redis_queue.ack(slow)
    assert await redis_queue.held(["r-1"]) == set()


# --- Redis losing its data -------------------------------------------------------------


async def test_queue_works_again_after_flushdb(
    redis_queue: RedisStreamQueue, redis_admin: aioredis.Redis
) -> None:
    await redis_queue.enqueue("before")
    job = await receive(redis_queue)
    blocked = asyncio.create_task(redis_queue.receive(consumer="c1", wait_seconds=0.5))
    await asyncio.sleep(0.1)
    await redis_admin.flushdb()
    assert await blocked is None
    await redis_queue.ack(job)  # the job is gone with the data: a no-op, not an error
    await redis_queue.retry_later(job, delay_seconds=0)
    assert await redis_queue.held(["before"]) == set()
    await redis_queue.enqueue("after")
    assert (await receive(redis_queue)).analysis_id == "after"


async def test_unreachable_redis_is_unavailable() -> None:
    queue = RedisStreamQueue.from_url("redis://127.0.0.1:1/0", reclaim_after_seconds=1)
    try:
        with pytest.raises(Unavailable):
            await queue.enqueue("x")
        with pytest.raises(Unavailable):
            await queue.held(["x"])
    finally:
        await queue.close()


# --- the worker's backoff ------------------------------------------------------------------


class RecordingQueue(MemoryQueue):
    """Remembers the delays it was asked for and what was enqueued."""

    def __init__(self, *, want_delays: int = 0) -> None:
        super().__init__()
        self.delays: list[float] = []
        self.enqueued: list[str] = []
        self._want = want_delays
        self.changed = asyncio.Event()

    async def enqueue(self, analysis_id: str) -> None:
        self.enqueued.append(analysis_id)
        self.changed.set()
        await super().enqueue(analysis_id)

    async def retry_later(self, job: Job, *, delay_seconds: float) -> None:
        self.delays.append(delay_seconds)
        if len(self.delays) >= self._want:
            self.changed.set()
        await super().retry_later(job, delay_seconds=delay_seconds)


class PendingAnalyses:
    async def get(self, analysis_id: str) -> AnalysisRecord:
        return AnalysisRecord(
            id=analysis_id,
            video_id="v",
            user_id="u",
            status=AnalysisStatus.PENDING,
            model_name="frame_ensemble",
            created_at=datetime.now(UTC),
        )


class TritonDown:
    async def run(self, analysis_id: str) -> None:
        raise Unavailable(Reason.DETECTOR_UNAVAILABLE, "Triton is down")


async def test_worker_backs_off_per_retry() -> None:
    queue = RecordingQueue(want_delays=5)
    worker = AnalysisWorker(
        queue=queue,
        analyzer=cast(Analyzer, TritonDown()),
        analyses=cast(AnalysisRepository, PendingAnalyses()),
        name="w1",
    )
    stop = asyncio.Event()
    await queue.enqueue("backoff")
    queue.changed.clear()
    task = asyncio.create_task(worker.run_forever(stop=stop, retry_delay_seconds=0.01))
    try:
        await asyncio.wait_for(queue.changed.wait(), 10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await queue.close()
    assert queue.delays[:5] == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.16])


# --- recovery ------------------------------------------------------------------------------


@pytest.fixture
async def pg_engine(postgres: PostgresServer) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres.url)
    await upgrade_to_head(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """The embedded default's database (it gives timestamps back without a zone)."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'vidscan.db'}")
    await upgrade_to_head(engine)
    yield engine
    await engine.dispose()


async def add_analysis(
    engine: AsyncEngine,
    *,
    age: timedelta = OLD,
    status: str = "pending",
    lease_until: datetime | None = None,
) -> str:
    """A video and its analysis, created ``age`` ago."""
    created = datetime.now(UTC) - age
    video_id, analysis_id, user = str(uuid.uuid4()), str(uuid.uuid4()), "recovery-test"
    video: dict[str, Any] = {
        "id": video_id,
        "user_id": user,
        "session_id": str(uuid.uuid4()),
        "filename": "clip.mp4",
        "file_size": 1,
        "file_hash": "0" * 64,
        "format": "mp4",
        "codec": "h264",
        "duration_seconds": 1.0,
        "width": 2,
        "height": 2,
        "fps": 1.0,
        "bucket": "b",
        "s3_key": f"k/{video_id}",
        "content_type": "video/mp4",
        "status": "stored",
        "client_metadata": {},
        "created_at": created,
        "uploaded_at": created,
    }
    analysis = AnalysisRow(
        id=analysis_id,
        video_id=video_id,
        user_id=user,
        status=status,
        model_name="frame_ensemble",
        result=None,
        failure_reason="",
        failure_message="",
        attempts=0,
        estimated_seconds=0,
        created_at=created,
        lease_until=lease_until,
    )
    async with async_sessionmaker(engine)() as session, session.begin():
        session.add(VideoRow(**video))
        await session.flush()
        session.add(analysis)
    return analysis_id


class OnlyThese:
    """The shared PostgreSQL also holds other tests' unfinished analyses; the sweep
    here sees only this test's rows (read through the real repository)."""

    def __init__(self, repository: SqlAnalysisRepository, ids: Iterable[str]) -> None:
        self._repository = repository
        self.ids = set(ids)

    async def unfinished(self, *, limit: int = 100) -> list[str]:
        rows = await self._repository.unfinished(limit=100_000)
        return [aid for aid in rows if aid in self.ids][:limit]

    async def get(self, analysis_id: str) -> AnalysisRecord | None:
        return await self._repository.get(analysis_id)


def recovery(analyses: Any, queue: RecoverableQueue) -> QueueRecovery:
    return QueueRecovery(analyses=analyses, queue=queue, clock=system_clock, min_age=MIN_AGE)


async def drain(queue: RecoverableQueue) -> list[str]:
    """Every analysis id the queue delivers now, each job acknowledged."""
    seen = []
    while (job := await queue.receive(consumer="c1", wait_seconds=0.2)) is not None:
        seen.append(job.analysis_id)
        await queue.ack(job)
    return seen


async def test_recovery_requeues_lost_jobs_on_redis(
    pg_engine: AsyncEngine, redis_queue: RedisStreamQueue, redis_admin: aioredis.Redis
) -> None:
    repository = SqlAnalysisRepository(engine=pg_engine, clock=system_clock)
    lost = await add_analysis(pg_engine)  # its enqueue failed: never queued
    held = await add_analysis(pg_engine)
    young = await add_analysis(pg_engine, age=timedelta(seconds=1))  # enqueue may follow
    done = await add_analysis(pg_engine, status="analyzed")
    analyses = OnlyThese(repository, [lost, held, young, done])
    await redis_queue.enqueue(held)
    sweep = recovery(analyses, redis_queue)

    assert await sweep.sweep() == 1
    assert await redis_queue.held([lost, held, young, done]) == {lost, held}
    assert await sweep.sweep() == 0  # both held now: no duplicates
    assert sorted(await drain(redis_queue)) == sorted([lost, held])

    await redis_queue.enqueue(lost)
    await redis_queue.enqueue(held)
    await redis_admin.flushdb()  # Redis restarted without persistence
    assert await sweep.sweep() == 2
    assert sorted(await drain(redis_queue)) == sorted([lost, held])


async def test_recovery_leaves_postponed_and_pending_jobs_alone(
    pg_engine: AsyncEngine, redis_queue: RedisStreamQueue
) -> None:
    repository = SqlAnalysisRepository(engine=pg_engine, clock=system_clock)
    postponed, in_hand = await add_analysis(pg_engine), await add_analysis(pg_engine)
    await redis_queue.enqueue(postponed)
    await redis_queue.retry_later(await receive(redis_queue), delay_seconds=60)
    await redis_queue.enqueue(in_hand)
    await receive(redis_queue)
    assert await recovery(OnlyThese(repository, [postponed, in_hand]), redis_queue).sweep() == 0


async def test_recovery_sweep_fails_loudly_while_redis_is_down(pg_engine: AsyncEngine) -> None:
    repository = SqlAnalysisRepository(engine=pg_engine, clock=system_clock)
    analyses = OnlyThese(repository, [await add_analysis(pg_engine)])
    down = RedisStreamQueue.from_url("redis://127.0.0.1:1/0", reclaim_after_seconds=1)
    try:
        with pytest.raises(VidscanError):
            await recovery(analyses, down).sweep()
    finally:
        await down.close()


async def test_recovery_refills_the_memory_queue_after_a_restart(
    sqlite_engine: AsyncEngine,
) -> None:
    """The embedded default: SQLite and the in-memory queue of a fresh process."""
    repository = SqlAnalysisRepository(engine=sqlite_engine, clock=system_clock)
    pending = await add_analysis(sqlite_engine)
    # Its worker died with the old process: the lease ran out.
    expired = await add_analysis(
        sqlite_engine, status="running", lease_until=datetime.now(UTC) - timedelta(minutes=1)
    )
    leased = await add_analysis(
        sqlite_engine, status="running", lease_until=datetime.now(UTC) + timedelta(minutes=1)
    )
    await add_analysis(sqlite_engine, age=timedelta(seconds=1))
    await add_analysis(sqlite_engine, status="failed")
    queue = MemoryQueue()
    try:
        sweep = recovery(repository, queue)
        assert await sweep.sweep() == 2
        assert await sweep.sweep() == 0
        assert sorted(await drain(queue)) == sorted([pending, expired])
        assert await queue.held([leased]) == set()
    finally:
        await queue.close()


async def test_recovery_runs_until_stopped(sqlite_engine: AsyncEngine) -> None:
    repository = SqlAnalysisRepository(engine=sqlite_engine, clock=system_clock)
    pending = await add_analysis(sqlite_engine)
    queue = RecordingQueue()
    stop = asyncio.Event()
    task = asyncio.create_task(
        recovery(repository, queue).run_forever(stop=stop, interval_seconds=0.05)
    )
    try:
        await asyncio.wait_for(queue.changed.wait(), 5)
        await asyncio.sleep(0.2)  # a few more rounds: the job is held, nothing is added
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await queue.close()
    assert queue.enqueued == [pending]
