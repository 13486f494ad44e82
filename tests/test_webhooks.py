"""Webhooks end to end: an upload's callback_url gets its final analysis, signed per
Standard Webhooks, at least once: through a receiver that is down, one that answers
500, and a server restart between attempts. A URL the server does not allow is
refused before any byte is stored, and a slow receiver never slows an upload.

The receiver is a real HTTP server in a thread; signatures are checked here with
hmac directly, not with the server's signer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from conftest import Running, StartServer
from prometheus_client import REGISTRY
from pydantic import SecretStr
from support.rpc import details
from support.services import RedisServer, free_port
from support.triton import TritonServer
from vidscan.v1 import upload_pb2

from server.records.model import AnalysisRecord, AnalysisStatus
from server.storage.s3 import S3ObjectStore
from server.webhooks.event import analysis_event
from server.webhooks.policy import CallbackPolicy, parse_host_patterns
from server.webhooks.signing import WebhookSigner, parse_secret

SECRET = "whsec_" + base64.b64encode(b"vidscan-webhook-test-key-32-bytes!").decode()
WEBHOOK_DB = 11  # a Redis database of this module's own, flushed around each test


# --- a receiver ------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """Answers each POST with the next of ``statuses`` (then 200), after ``hang``."""

    port: int
    statuses: list[int] = field(default_factory=list)
    hang: float = 0.0
    requests: list[Received] = field(default_factory=list)
    answered: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/vidscan?source=test"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append(
                    Received({k.lower(): v for k, v in self.headers.items()}, body, time.time())
                )
                if receiver.hang:
                    time.sleep(receiver.hang)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                receiver.answered += 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    async def wait_for(self, count: int, within: float = 60.0) -> list[Received]:
        deadline = time.monotonic() + within
        while len(self.requests) < count:
            assert time.monotonic() < deadline, f"{len(self.requests)} of {count} arrived"
            await asyncio.sleep(0.05)
        return self.requests


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    item = Receiver(port=free_port())
    yield item
    item.stop()


@pytest.fixture
async def webhook_redis(redis_server: RedisServer) -> AsyncIterator[str]:
    """A Redis database of its own, so no other test's deliveries are in its queue."""
    url = redis_server.url.rsplit("/", 1)[0] + f"/{WEBHOOK_DB}"
    admin = aioredis.Redis.from_url(url)
    await admin.flushdb()
    yield url
    await admin.flushdb()
    await admin.aclose()


def webhook_settings(redis_url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "redis_url": redis_url,
        "callback_hosts": "127.0.0.1:*",
        "callback_allow_http": True,
        "webhook_secret": SecretStr(SECRET),
        "webhook_retry_seconds": 0.3,
        "webhook_retry_max_seconds": 2.0,
        "webhook_timeout_seconds": 2.0,
        **overrides,
    }


async def detecting(
    start_server: StartServer, triton: TritonServer, redis_url: str, **overrides: Any
) -> Running:
    return await start_server(
        triton_url=triton.grpc_url, **webhook_settings(redis_url, **overrides)
    )


def verify(received: Received) -> None:
    """The Standard Webhooks check a receiver makes, written from the spec."""
    message_id = received.headers["webhook-id"]
    timestamp = received.headers["webhook-timestamp"]
    assert abs(int(timestamp) - time.time()) < 60
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + received.body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert expected in received.headers["webhook-signature"].split(" ")


def retried() -> float:
    value = REGISTRY.get_sample_value("vidscan_webhook_deliveries_total", {"outcome": "retried"})
    return value or 0.0


# --- end to end ------------------------------------------------------------------


async def test_callback_arrives_signed_once_the_analysis_is_final(
    start_server: StartServer,
    triton: TritonServer,
    webhook_redis: str,
    receiver: Receiver,
    videos: dict[str, bytes],
) -> None:
    receiver.start()
    running = await detecting(start_server, triton, webhook_redis)
    # A whole-frame model: a gradient has no face, and this test wants a verdict.
    result = await running.client().upload(
        videos["mp4"], callback_url=receiver.url, model="frame_ensemble"
    )
    (received,) = await receiver.wait_for(1)
    verify(received)
    assert received.headers["webhook-id"] == f"msg_{result.analysis_id}"
    assert received.headers["content-type"] == "application/json"
    event = json.loads(received.body)
    assert event["type"] == "analysis.completed"
    datetime.fromisoformat(event["timestamp"])
    data = event["data"]
    assert (data["video_id"], data["analysis_id"]) == (result.video_id, result.analysis_id)
    assert data["status"] == "analyzed"
    assert data["model"] == "frame_ensemble"
    if result.upload_status == upload_pb2.UPLOAD_STATUS_ANALYZED:
        assert data["is_fake"] == result.is_fake
        assert data["confidence_score"] == pytest.approx(result.confidence_score)
    assert isinstance(data["is_fake"], bool) and 0 <= data["confidence_score"] <= 1
    assert "token" not in received.body.decode().lower()
    await asyncio.sleep(1.5)  # a 2xx ends it: nothing more arrives
    assert len(receiver.requests) == 1


async def test_a_receiver_that_is_down_gets_it_after_the_backoff(
    start_server: StartServer,
    triton: TritonServer,
    webhook_redis: str,
    receiver: Receiver,
    videos: dict[str, bytes],
) -> None:
    before = retried()
    running = await detecting(start_server, triton, webhook_redis)
    result = await running.client().upload(videos["webm"], callback_url=receiver.url)
    deadline = time.monotonic() + 60
    while retried() < before + 1:  # the connection was refused at least once
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    receiver.start()
    (received,) = await receiver.wait_for(1, within=30)
    verify(received)
    assert received.headers["webhook-id"] == f"msg_{result.analysis_id}"


async def test_a_500_is_retried_with_the_same_id_and_body(
    start_server: StartServer,
    triton: TritonServer,
    webhook_redis: str,
    receiver: Receiver,
    videos: dict[str, bytes],
) -> None:
    receiver.statuses = [500, 503]
    receiver.start()
    running = await detecting(start_server, triton, webhook_redis)
    result = await running.client().upload(videos["mkv"], callback_url=receiver.url)
    first, second, third = await receiver.wait_for(3)
    for received in (first, second, third):
        verify(received)
        assert received.headers["webhook-id"] == f"msg_{result.analysis_id}"
        assert received.body == first.body
    # Exponential: the second wait is about twice the first (0.3 s, 0.6 s).
    assert third.at - second.at > (second.at - first.at) * 1.3
    await asyncio.sleep(1.5)
    assert len(receiver.requests) == 3


async def test_a_restarted_server_delivers_what_the_stopped_one_could_not(
    start_server: StartServer,
    triton: TritonServer,
    webhook_redis: str,
    receiver: Receiver,
    videos: dict[str, bytes],
) -> None:
    receiver.statuses = [500]
    receiver.start()
    # The retry is due well after the first server has stopped.
    overrides = {"webhook_retry_seconds": 4.0, "webhook_retry_max_seconds": 8.0}
    first_server = await detecting(start_server, triton, webhook_redis, **overrides)
    result = await first_server.client().upload(videos["mov"], callback_url=receiver.url)
    await receiver.wait_for(1)
    await first_server.app.stop(1.0)
    stopped = time.time()
    assert len(receiver.requests) == 1
    await detecting(start_server, triton, webhook_redis, **overrides)
    first, second = await receiver.wait_for(2, within=30)
    assert second.at > stopped
    verify(second)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert second.headers["webhook-id"] == f"msg_{result.analysis_id}"
    assert second.body == first.body


async def test_a_hanging_receiver_does_not_slow_the_upload(
    start_server: StartServer,
    triton: TritonServer,
    webhook_redis: str,
    receiver: Receiver,
    videos: dict[str, bytes],
) -> None:
    receiver.hang = 30.0
    receiver.start()
    running = await detecting(start_server, triton, webhook_redis, webhook_timeout_seconds=20.0)
    client = running.client()
    started = time.monotonic()
    result = await client.upload(videos["avi"], callback_url=receiver.url)
    elapsed = time.monotonic() - started
    assert result.video_id
    assert receiver.answered == 0  # the upload answered while no delivery had ended
    assert elapsed < 20.0
    await receiver.wait_for(1)  # the delivery runs beside it


# --- refused before any byte is stored --------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "url"),
    [
        ({}, "http://evil.example.com/hook"),  # host not allowed
        ({"callback_allow_http": False}, "http://127.0.0.1:8080/hook"),  # https required
        ({"callback_hosts": ""}, "https://127.0.0.1:8443/hook"),  # webhooks off
        ({}, "http://user:pw@127.0.0.1:8080/hook"),  # credentials in the URL
        ({}, "ftp://127.0.0.1/hook"),
        ({}, "not a url"),
    ],
)
async def test_a_url_that_is_not_allowed_is_refused_before_any_byte(
    start_server: StartServer,
    webhook_redis: str,
    videos: dict[str, bytes],
    s3: S3ObjectStore,
    overrides: dict[str, Any],
    url: str,
) -> None:
    running = await start_server(**webhook_settings(webhook_redis, **overrides))
    user = f"webhook-refused-{uuid.uuid4().hex[:8]}"
    client = running.client(user)
    session = await client.new_session()
    with pytest.raises(grpc.RpcError) as caught:
        await client.upload(videos["mp4"], session_id=session.session_id, callback_url=url)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = details(caught.value)
    assert info.reason == "CALLBACK_URL_NOT_ALLOWED"
    assert "pw" not in info.message
    assert await s3.list_keys(prefix=f"dashboard-uploads/{user}/") == []
    status = await client.status(session.session_id)
    assert (status.status, status.session.committed_bytes) == ("active", 0)


# --- the parts ------------------------------------------------------------------


def test_the_signature_matches_the_standard_webhooks_test_vector() -> None:
    signer = WebhookSigner.from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    signature = signer.signature(
        message_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp=1614265330,
        body=b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize(
    "secret", ["", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_%%%", "whsec_YQ=="]
)
def test_a_bad_secret_is_refused(secret: str) -> None:
    with pytest.raises(ValueError):
        parse_secret(secret)


def test_host_patterns() -> None:
    policy = CallbackPolicy(
        hosts=parse_host_patterns("hooks.example.com, *.partner.io, 10.0.0.5:8443, [::1]:*"),
        allow_http=False,
    )
    assert policy.allows("https://hooks.example.com/x")
    assert policy.allows("https://hooks.example.com:443/x")
    assert not policy.allows("https://hooks.example.com:8443/x")  # not the default port
    assert policy.allows("https://a.b.partner.io/x")
    assert not policy.allows("https://partner.io/x")  # subdomains only
    assert not policy.allows("https://evilpartner.io/x")
    assert policy.allows("https://10.0.0.5:8443/x")
    assert not policy.allows("https://10.0.0.5/x")
    assert policy.allows("https://[::1]:9000/x")
    assert not policy.allows("http://hooks.example.com/x")  # https only
    assert not policy.allows("https://hooks.example.com/x#frag")
    with pytest.raises(ValueError):
        parse_host_patterns("https://hooks.example.com")


def test_a_failed_analysis_announces_its_reason() -> None:
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    event = analysis_event(
        AnalysisRecord(
            id="a1",
            video_id="v1",
            user_id="u1",
            status=AnalysisStatus.FAILED,
            model_name="frame_cnn",
            created_at=now,
            completed_at=now,
            failure_reason="VIDEO_UNDECODABLE",
            callback_url="https://hooks.example.com/x",
        )
    )
    assert (event.type, event.message_id) == ("analysis.failed", "msg_a1")
    document = json.loads(event.body)
    assert document == {
        "type": "analysis.failed",
        "timestamp": "2025-01-02T03:04:05Z",
        "data": {
            "analysis_id": "a1",
            "video_id": "v1",
            "status": "failed",
            "model": "frame_cnn",
            "failure_reason": "VIDEO_UNDECODABLE",
        },
    }
    assert "u1" not in event.body.decode()  # ids of the upload only, no user
