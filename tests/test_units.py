"""Unit tests of pure logic (no servers): sniffing, box walking, streaming checks,
naming, part sizing, aggregation, contracts, error mapping, tokens, session locks."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import struct
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from vidscan.v1 import errors_pb2

from server.auth import TokenAuthority
from server.config import MIB, Settings, part_size_for
from server.detection.aggregate import confident, mean
from server.detection.contract import ModelContract
from server.errors import (
    Cleanup,
    InvalidUpload,
    QuotaExceeded,
    QuotaViolation,
    Reason,
    Unauthenticated,
    invalid_field,
)
from server.media.isobmff import BoxStructureError, TopLevelBoxWalker
from server.media.sniff import Container, sniff
from server.sessions.memory import MemorySessionStore
from server.sessions.port import SessionRecord, SessionState
from server.uncancellable import run_to_end
from server.upload.naming import display_filename, object_key
from server.upload.validation import StreamValidator


def box(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


FTYP = box(b"ftyp", b"isom\x00\x00\x02\x00isomiso2")


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (FTYP + b"\0" * 40, Container.MP4),
        (box(b"ftyp", b"qt  \x00\x00\x00\x00") + b"\0" * 48, Container.MOV),
        (b"\x00\x00\x00\x08wide" + b"\0" * 56, Container.MOV),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm" + b"\0" * 48, Container.WEBM),
        (b"\x1a\x45\xdf\xa3\xa3\x42\x82\x88matroska" + b"\0" * 44, Container.MKV),
        (b"RIFF\x00\x10\x00\x00AVI LIST" + b"\0" * 48, Container.AVI),
        (b"RIFF\x00\x10\x00\x00WAVEfmt " + b"\0" * 48, None),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 56, None),
        (b"GIF89a" + b"\0" * 58, None),
        (b"\x1a\x45\xdf\xa3" + b"\0" * 60, None),
    ],
)
def test_sniff(head: bytes, expected: Container | None) -> None:
    assert sniff(head) == expected


def test_box_walker_across_every_chunk_boundary() -> None:
    data = FTYP + box(b"free") + box(b"moov", b"m" * 100) + box(b"mdat", b"d" * 300)
    moov_end = len(FTYP) + 8 + 108
    for size in (1, 2, 3, 5, 8, 13, 64, len(data)):
        walker = TopLevelBoxWalker()
        complete_at = None
        for start in range(0, len(data), size):
            walker.feed(data[start : start + size])
            if walker.header_complete and complete_at is None:
                complete_at = min(start + size, len(data))
        walker.finish()
        assert walker.moov_end == moov_end
        assert complete_at is not None and complete_at >= moov_end
        assert not walker.media_before_header  # faststart: the early probe is worth it


def test_box_walker_large_size_and_to_end_boxes() -> None:
    large = struct.pack(">I4sQ", 1, b"mdat", 16 + 50) + b"x" * 50
    walker = TopLevelBoxWalker()
    walker.feed(FTYP + large + box(b"moov", b"m" * 10))
    walker.finish()
    assert walker.header_complete
    assert walker.media_before_header  # `mdat` first: the header completes the file
    to_end = TopLevelBoxWalker()
    to_end.feed(FTYP + struct.pack(">I4s", 0, b"mdat") + b"anything at all")
    to_end.finish()


@pytest.mark.parametrize(
    "data",
    [
        FTYP + b"\xff\xfe\xfd\xfc\x00\x01\x02\x03",  # unprintable type
        FTYP + struct.pack(">I4s", 4, b"free"),  # size smaller than its header
        FTYP + struct.pack(">I4sQ", 1, b"mdat", 8),  # 64-bit size smaller than header
    ],
)
def test_box_walker_refuses_garbage(data: bytes) -> None:
    with pytest.raises(BoxStructureError):
        TopLevelBoxWalker().feed(data)


def test_box_walker_detects_truncation() -> None:
    walker = TopLevelBoxWalker()
    walker.feed(FTYP + box(b"mdat", b"d" * 100)[:-10])
    with pytest.raises(BoxStructureError):
        walker.finish()


def test_stream_validator_limits_and_declarations() -> None:
    data = FTYP + box(b"moov", b"m" * 100)
    digest = hashlib.sha256(data).hexdigest()
    ok = StreamValidator(max_bytes=1000, declared_size=len(data), declared_sha256=digest)
    for i in range(0, len(data), 7):
        ok.feed(data[i : i + 7])
    ok.finish(digest)
    assert ok.container is Container.MP4

    too_big = StreamValidator(max_bytes=100, declared_size=None, declared_sha256="")
    with pytest.raises(InvalidUpload) as caught:
        too_big.feed(data)
    assert caught.value.reason == Reason.FILE_TOO_LARGE
    with pytest.raises(InvalidUpload):
        StreamValidator(max_bytes=100, declared_size=101, declared_sha256="")

    overrun = StreamValidator(max_bytes=1000, declared_size=10, declared_sha256="")
    with pytest.raises(InvalidUpload) as caught:
        overrun.feed(data)
    assert caught.value.reason == Reason.SIZE_MISMATCH

    wrong_hash = StreamValidator(max_bytes=1000, declared_size=None, declared_sha256="ab" * 32)
    wrong_hash.feed(data)
    with pytest.raises(InvalidUpload) as caught:
        wrong_hash.finish(digest)
    assert caught.value.reason == Reason.HASH_MISMATCH
    assert caught.value.metadata["actual_sha256"] == digest

    empty = StreamValidator(max_bytes=1000, declared_size=None, declared_sha256="")
    with pytest.raises(InvalidUpload) as caught:
        empty.finish(hashlib.sha256(b"").hexdigest())
    assert caught.value.reason == Reason.EMPTY_UPLOAD


def test_resumable_sha256_state_round_trips() -> None:
    from server.upload.resumable_hash import ResumableSha256, self_check

    self_check()
    data = bytes(range(256)) * 1000
    first = ResumableSha256()
    first.update(data[:1000])
    saved = first.state()
    assert len(saved) == 112
    resumed = ResumableSha256(saved)
    resumed.update(data[1000:])
    assert resumed.hexdigest() == hashlib.sha256(data).hexdigest()
    assert first.hexdigest() == hashlib.sha256(data[:1000]).hexdigest()  # still usable


def test_object_keys_come_from_server_ids_only() -> None:
    assert object_key(user_id="alice", video_id="v1", extension="mp4") == (
        "dashboard-uploads/alice/v1.mp4"
    )
    assert object_key(user_id="../../x", video_id="v", extension="mkv") == (
        "dashboard-uploads/.._.._x/v.mkv"
    )
    assert object_key(user_id="..", video_id="v", extension="avi").startswith(
        "dashboard-uploads/_/"
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("holiday.mp4", "holiday.mp4"),
        ("C:\\Users\\me\\clip.mov", "clip.mov"),
        ("../../etc/passwd", "passwd"),
        ("bad\x00name\x1b[31m.mp4", "badname[31m.mp4"),
        ("...", "upload.mp4"),
        ("", "upload.mp4"),
        ("e\u0301.mp4", "\u00e9.mp4"),
        ("x" * 400, "x" * 255),
    ],
)
def test_display_filename(raw: str, expected: str) -> None:
    assert display_filename(raw, fallback="upload.mp4") == expected


def test_part_size_keeps_uploads_far_under_the_part_limit() -> None:
    assert part_size_for(500 * MIB) == 8 * MIB
    for limit in (1 * MIB, 500 * MIB, 5 * 1024 * MIB, 50 * 1024 * MIB):
        size = part_size_for(limit)
        assert size >= 5 * MIB
        assert -(-limit // size) <= 1000
    with pytest.raises(ValueError, match="jwt_secret"):
        Settings(jwt_secret="short")  # type: ignore[arg-type]


def test_aggregation_strategies() -> None:
    assert mean([0.2, 0.4]) == pytest.approx(0.3)
    mostly_real = [0.05] * 19 + [0.9]
    assert confident(mostly_real) == pytest.approx(0.05)
    segment_fake = [0.95] * 12 + [0.1] * 16
    assert confident(segment_fake) == pytest.approx(0.95)
    assert mean(segment_fake) < 0.5
    mixed = [0.3, 0.6, 0.5, 0.7]
    assert confident(mixed) == pytest.approx(mean(mixed))
    assert confident([]) == 0.0


def test_model_contract_is_read_from_the_config() -> None:
    params = {
        "input_name": "frames",
        "output_name": "fake_probability",
        "input_layout": "NCHW",
        "input_size": "224x224",
        "input_normalization_mean": "0.485,0.456,0.406",
        "input_normalization_std": "0.229,0.224,0.225",
        "reference_model": "true",
    }
    config = {
        "max_batch_size": 16,
        "parameters": {k: {"string_value": v} for k, v in params.items()},
    }
    contract = ModelContract.from_triton(name="m", config=config, version="3")
    assert (contract.size, contract.max_batch_size, contract.version) == (224, 16, "3")
    assert contract.reference_model and "no meaning" in contract.disclaimer
    with pytest.raises(Exception, match="frames contract"):
        ModelContract.from_triton(name="m", config={"parameters": {}}, version="1")


def test_model_contract_checks_the_declared_input() -> None:
    params = {
        "input_name": "frames",
        "output_name": "fake_probability",
        "input_layout": "NHWC",
        "input_datatype": "UINT8",
        "input_size": "224x224",
        "input_normalization_mean": "0.485,0.456,0.406",
        "input_normalization_std": "0.229,0.224,0.225",
    }

    def config(data_type: str, dims: list[str]) -> dict[str, object]:
        return {
            "max_batch_size": 32,
            "input": [{"name": "frames", "data_type": data_type, "dims": dims}],
            "parameters": {k: {"string_value": v} for k, v in params.items()},
        }

    contract = ModelContract.from_triton(
        name="m", config=config("TYPE_UINT8", ["224", "224", "3"]), version="1"
    )
    assert (contract.datatype, contract.shape, contract.frame_bytes) == (
        "UINT8",
        (224, 224, 3),
        224 * 224 * 3,
    )
    with pytest.raises(Exception, match="its parameters say UINT8"):
        ModelContract.from_triton(
            name="m", config=config("TYPE_FP32", ["3", "224", "224"]), version="1"
        )


def test_errors_become_rich_statuses() -> None:
    from google.rpc import error_details_pb2

    from server.api.status import to_rpc_status

    error = QuotaExceeded(
        Reason.QUOTA_EXCEEDED, "none left", quota_violations=[QuotaViolation("user:a", "0")]
    )
    error.cleanup = Cleanup(s3_cleanup=True, quota_released=True)
    status = to_rpc_status(error)
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    kinds = {d.TypeName() for d in status.details}
    assert kinds == {
        "google.rpc.ErrorInfo",
        "google.rpc.QuotaFailure",
        "vidscan.v1.CleanupReport",
    }
    report = errors_pb2.CleanupReport()
    next(d for d in status.details if d.Is(report.DESCRIPTOR)).Unpack(report)
    assert report.cleanup_performed and report.s3_cleanup and not report.session_cleanup
    bad = to_rpc_status(invalid_field("header.session_id", "required"))
    request = error_details_pb2.BadRequest()
    next(d for d in bad.details if d.Is(request.DESCRIPTOR)).Unpack(request)
    assert request.field_violations[0].field == "header.session_id"


def test_tokens_check_secret_issuer_and_audience() -> None:
    now = datetime.now(UTC)
    authority = TokenAuthority(
        secret="s" * 32, issuer="vidscan", audience="dashboard", clock=lambda: now
    )
    token = authority.mint("alice")
    assert authority.user_id(token) == "alice"
    assert authority.user_from_metadata([("authorization", f"Bearer {token}")]) == "alice"
    other = TokenAuthority(secret="s" * 32, issuer="other", audience="dashboard", clock=lambda: now)
    for bad in (other.mint("alice"), token + "x"):
        with pytest.raises(Unauthenticated):
            authority.user_id(bad)
    expired = TokenAuthority(
        secret="s" * 32,
        issuer="vidscan",
        audience="dashboard",
        clock=lambda: now - timedelta(days=2),
    ).mint("alice")
    with pytest.raises(Unauthenticated, match="expired"):
        authority.user_id(expired)
    with pytest.raises(Unauthenticated):
        authority.user_from_metadata([("authorization", f"Basic {token}")])


async def test_memory_session_lock_expires_and_state_transitions() -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = MemorySessionStore(clock=lambda: now[0])
    record = SessionRecord(
        session_id="s",
        user_id="u",
        state=SessionState.ACTIVE,
        created_at=now[0],
        expires_at=now[0] + timedelta(hours=1),
        max_bytes=10,
    )
    await store.create(record)
    assert await store.acquire_lock("s", owner="a", ttl_seconds=30)
    assert not await store.acquire_lock("s", owner="b", ttl_seconds=30)
    now[0] += timedelta(seconds=31)  # the holder died: its lock runs out
    assert await store.acquire_lock("s", owner="b", ttl_seconds=30)
    assert not await store.refresh_lock("s", owner="a", ttl_seconds=30)
    await store.release_lock("s", owner="a")  # not the owner: no effect
    assert not await store.acquire_lock("s", owner="c", ttl_seconds=30)
    assert await store.transition("s", expected=SessionState.ACTIVE, new=SessionState.COMPLETED)
    assert not await store.transition("s", expected=SessionState.ACTIVE, new=SessionState.CANCELLED)
    now[0] += timedelta(hours=2)
    found = await store.get("s")
    assert found is not None and found.effective_state(now[0]) is SessionState.COMPLETED


async def test_run_to_end_finishes_the_work_before_raising_the_cancellation() -> None:
    steps: list[str] = []

    async def work() -> str:
        steps.append("started")
        await asyncio.sleep(0.05)
        steps.append("finished")
        return "done"

    caller = asyncio.ensure_future(run_to_end(work()))
    await asyncio.sleep(0.01)
    caller.cancel()
    await asyncio.sleep(0.01)
    caller.cancel()  # cancelled again while it waits
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert steps == ["started", "finished"]
    assert await run_to_end(work()) == "done"

    async def failing() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        await run_to_end(failing())


async def test_a_background_loop_that_loses_its_cancellation_does_not_hold_the_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from server import background

    monkeypatch.setattr(background, "LOOP_STOP_SECONDS", 0.2)
    release = asyncio.Event()
    closed: list[str] = []

    async def stubborn() -> None:  # as a loop whose Redis call ate the cancellation
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)

    async def close() -> None:
        closed.append("adapter")
        release.set()  # closing the adapters is what ends such a loop

    tasks = background.Background()
    tasks.spawn(stubborn())
    tasks.closers.append(close)
    await asyncio.wait_for(tasks.close(), timeout=5)
    assert closed == ["adapter"]
    await asyncio.wait_for(asyncio.gather(*tasks.loops), timeout=5)


class _StubbornPubSub:
    """A pub/sub connection whose wait for a message loses the cancellation, as
    redis-py's can inside a command: it returns only at its own timeout."""

    async def __aenter__(self) -> _StubbornPubSub:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def subscribe(self, channel: str) -> None:
        return None

    async def get_message(
        self,
        *,
        ignore_subscribe_messages: bool,
        timeout: float,  # noqa: ASYNC109 - redis-py's signature
    ) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        while loop.time() < until:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)


class _StubbornRedis:
    def __init__(self) -> None:
        self.closed = False

    def pubsub(self) -> _StubbornPubSub:
        return _StubbornPubSub()

    async def aclose(self) -> None:
        self.closed = True


async def test_the_change_listener_that_loses_its_cancellation_does_not_hold_the_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from server.analysis import redis_changes

    monkeypatch.setattr(redis_changes, "STOP_SECONDS", 0.2)
    monkeypatch.setattr(redis_changes, "LISTEN_SECONDS", 1.0)
    publisher, listener = _StubbornRedis(), _StubbornRedis()
    changes = redis_changes.RedisChanges(publisher=publisher, listener=listener)  # type: ignore[arg-type]
    async with changes.subscribe("a-1"):
        pass  # starts the listener, which is now waiting for a message
    task = changes._task
    assert task is not None
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(changes.close(), timeout=5)
    assert loop.time() - started < 0.9  # not held until the wait's own timeout
    assert publisher.closed and listener.closed
    await asyncio.wait_for(task, timeout=5)  # it ends by itself at its next look at the flag
