"""WatchAnalysis on the real services: the states of an analysis as they happen, the
end of the stream after a final state, ownership, deadlines that leave no watcher
behind, a change made by another replica, and the gateway's Server-Sent Events route.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from conftest import Database, Running, StartServer
from support.gateway import Gateway, start_gateway
from support.rpc import Client, details
from support.triton import TritonServer
from vidscan.v1 import analysis_pb2

from server.analysis.changes import ChangeHub
from server.config import Settings
from server.errors import Unavailable
from server.records.model import AnalysisRecord

PENDING = analysis_pb2.ANALYSIS_STATUS_PENDING
RUNNING = analysis_pb2.ANALYSIS_STATUS_RUNNING
ANALYZED = analysis_pb2.ANALYSIS_STATUS_ANALYZED


@pytest.fixture
def clip(videos: dict[str, bytes]) -> bytes:
    return videos["mp4"]


def new_user(tag: str) -> str:
    return f"watch-{tag}-{uuid.uuid4().hex[:10]}"


WatchCall = grpc.aio.UnaryStreamCall[
    analysis_pb2.WatchAnalysisRequest, analysis_pb2.WatchAnalysisResponse
]


def watch(client: Client, analysis_id: str, *, timeout: float | None = 60) -> WatchCall:
    call: WatchCall = client.analyses.WatchAnalysis(
        analysis_pb2.WatchAnalysisRequest(analysis_id=analysis_id),
        metadata=client.metadata,
        timeout=timeout,
    )
    return call


async def next_analysis(
    call: WatchCall,
) -> analysis_pb2.Analysis | None:
    """The next message's analysis; None when the stream ended OK."""
    message = await call.read()
    if message is grpc.aio.EOF:
        return None
    assert isinstance(message, analysis_pb2.WatchAnalysisResponse)
    return message.analysis


async def rest_of(
    call: WatchCall,
) -> list[analysis_pb2.Analysis]:
    found = []
    while (analysis := await next_analysis(call)) is not None:
        found.append(analysis)
    assert await call.code() == grpc.StatusCode.OK
    return found


async def run_analysis(running: Running, analysis_id: str) -> AnalysisRecord | None:
    """Runs the analysis in the server's own analyzer, once its detector is loaded."""
    analyzer = running.app.core.analyzer
    assert analyzer is not None
    deadline = time.monotonic() + 60
    while True:
        try:
            return await analyzer.run(analysis_id)
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def no_watchers(running: Running, *, within: float = 5.0) -> None:
    """The server holds no watch and no subscription (the call's end reaches the
    server's task a moment after the client sees it)."""
    hub = running.app.core.changes.hub  # type: ignore[attr-defined]
    assert isinstance(hub, ChangeHub)
    deadline = time.monotonic() + within
    while running.app.watch.watchers or hub.watched:
        assert time.monotonic() < deadline, (running.app.watch.watchers, hub.watched)
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------------------ gRPC


async def test_states_arrive_until_analyzed_and_the_stream_ends(
    start_server: StartServer, triton: TritonServer, clip: bytes
) -> None:
    # No workers and no inline wait: the analysis stays PENDING until the test runs it.
    running = await start_server(
        triton_url=triton.grpc_url, analysis_wait_seconds=0, analysis_workers=0
    )
    client = running.client(new_user("states"))
    uploaded = await client.upload(clip)
    call = watch(client, uploaded.analysis_id)
    first = await next_analysis(call)
    assert first is not None
    assert (first.analysis_id, first.status) == (uploaded.analysis_id, PENDING)
    assert running.app.watch.watchers == 1

    run = asyncio.create_task(run_analysis(running, uploaded.analysis_id))
    rest = await rest_of(call)
    await run
    statuses = [a.status for a in rest]
    assert statuses == [RUNNING, ANALYZED], statuses
    assert rest[0].attempts == 1
    final = rest[-1]
    assert final.detection.frames_analyzed > 0
    # The last message is what GetAnalysis answers.
    assert final == await client.analysis(uploaded.analysis_id)
    await no_watchers(running)


async def test_a_final_analysis_gives_one_message(detecting_server: Running, clip: bytes) -> None:
    client = detecting_server.client(new_user("final"))
    uploaded = await client.upload(clip)
    # Analyzed inline within the wait budget, or a moment later by the worker.
    for _ in range(600):
        if (await client.analysis(uploaded.analysis_id)).status == ANALYZED:
            break
        await asyncio.sleep(0.1)
    found = await rest_of(watch(client, uploaded.analysis_id))
    assert [a.status for a in found] == [ANALYZED]
    assert found[0] == await client.analysis(uploaded.analysis_id)


async def test_another_users_analysis_is_not_found(server: Running, clip: bytes) -> None:
    owner = server.client(new_user("owner"))
    uploaded = await owner.upload(clip)
    for analysis_id in (uploaded.analysis_id, "no-such-analysis"):
        call = watch(server.client(new_user("other")), analysis_id)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        error = details(caught.value)
        assert error.code == grpc.StatusCode.NOT_FOUND
        assert error.reason == "ANALYSIS_NOT_FOUND"
        assert error.metadata == {"analysis_id": analysis_id}
    await no_watchers(server)


async def test_a_deadline_ends_the_watch_and_leaves_no_watcher(
    start_server: StartServer, clip: bytes
) -> None:
    running = await start_server()  # no Triton: the analysis stays PENDING
    client = running.client(new_user("deadline"))
    uploaded = await client.upload(clip)
    started = time.monotonic()
    call = watch(client, uploaded.analysis_id, timeout=1.5)
    first = await next_analysis(call)
    assert first is not None and first.status == PENDING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5
    await no_watchers(running)

    # A client that goes away (cancels) frees its watcher too.
    call = watch(client, uploaded.analysis_id, timeout=None)
    assert await next_analysis(call) is not None
    assert running.app.watch.watchers == 1
    call.cancel()
    await no_watchers(running)


async def test_watchers_per_process_are_capped(start_server: StartServer, clip: bytes) -> None:
    running = await start_server(max_watchers_per_process=1)
    client = running.client(new_user("cap"))
    uploaded = await client.upload(clip)
    held = watch(client, uploaded.analysis_id, timeout=None)
    assert await next_analysis(held) is not None
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await watch(client, uploaded.analysis_id).read()
    error = details(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_BUSY")
    assert error.retry_after_seconds is not None
    held.cancel()
    await no_watchers(running)


async def test_a_change_made_by_another_replica_arrives(
    start_server: StartServer,
    real_settings: Settings,
    triton: TritonServer,
    clip: bytes,
    own_database: Database,
) -> None:
    """Server A (no Triton) watches; server B's queue worker runs the analysis. A
    re-reads only every 60 s, so the changes can only come through Redis in time."""
    shared = {
        "database_url": own_database.url,
        "redis_url": real_settings.redis_url.rsplit("/", 1)[0] + "/7",  # a queue of its own
    }
    a = await start_server(**shared, watch_poll_seconds=60, analysis_workers=0)
    client = a.client(new_user("replica"))
    uploaded = await client.upload(clip)
    call = watch(client, uploaded.analysis_id, timeout=90)
    first = await next_analysis(call)
    assert first is not None and first.status == PENDING

    started = time.monotonic()
    await start_server(**shared, triton_url=triton.grpc_url, analysis_workers=1)
    rest = await rest_of(call)
    assert [x.status for x in rest][-1] == ANALYZED
    assert RUNNING in [x.status for x in rest]
    assert time.monotonic() - started < 55  # not A's 60 s re-read
    await no_watchers(a)


# --------------------------------------------------------------------------- gateway


@dataclass
class Event:
    name: str
    id: str
    data: str


async def sse_events(response: httpx.Response) -> AsyncIterator[Event]:
    """Parses a text/event-stream body (comments skipped)."""
    name, event_id, data = "", "", list[str]()
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield Event(name or "message", event_id, "\n".join(data))
            name, event_id, data = "", "", list[str]()
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "id":
                event_id = value
            elif field == "data":
                data.append(value)


@pytest.fixture
async def start_gw(tmp_path: Path) -> AsyncIterator[Any]:
    started: list[Gateway] = []

    async def start(running: Running) -> Gateway:
        gateway = await asyncio.to_thread(
            start_gateway,
            upstream=running.target,
            max_upload_bytes=running.settings.max_upload_bytes,
            workdir=tmp_path,
        )
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await asyncio.to_thread(gateway.stop)


def bearer(running: Running, user: str) -> dict[str, str]:
    ((key, value),) = running.client(user).metadata
    return {key: value, "Accept": "text/event-stream"}


async def test_server_sent_events_through_the_gateway(
    start_server: StartServer, triton: TritonServer, clip: bytes, start_gw: Any
) -> None:
    running = await start_server(
        triton_url=triton.grpc_url, analysis_wait_seconds=0, analysis_workers=0
    )
    gateway = await start_gw(running)
    user = new_user("sse")
    uploaded = await running.client(user).upload(clip)
    path = f"/v1/analyses/{uploaded.analysis_id}"
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=60) as http:
        async with http.stream("GET", path + "/events", headers=bearer(running, user)) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            events: list[Event] = []
            run: asyncio.Task[AnalysisRecord | None] | None = None
            async for event in sse_events(resp):
                events.append(event)
                if run is None:  # the first event is there: now let it run
                    run = asyncio.create_task(run_analysis(running, uploaded.analysis_id))
            assert run is not None
            await run
        assert [e.name for e in events] == ["analysis"] * len(events)
        assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
        bodies = [json.loads(e.data) for e in events]
        assert bodies[0]["analysis_id"] == uploaded.analysis_id
        assert len(bodies) >= 2
        # The same JSON, field names and shape, as GET /v1/analyses/{analysis_id}.
        got = await http.get(path, headers=bearer(running, user))
        assert got.status_code == 200
        assert bodies[-1] == got.json()
        assert bodies[0].keys() == got.json().keys()
        assert bodies[0]["status"] != bodies[-1]["status"]

        # Another user's analysis: the usual JSON error body, before any event.
        other = await http.get(path + "/events", headers=bearer(running, new_user("x")))
        assert other.status_code == 404
        assert other.json()["error_code"] == "ANALYSIS_NOT_FOUND"


async def test_server_sent_events_error_after_the_first_event(
    start_server: StartServer, clip: bytes, start_gw: Any
) -> None:
    running = await start_server()  # no Triton: the analysis stays PENDING
    gateway = await start_gw(running)
    user = new_user("sse-deadline")
    uploaded = await running.client(user).upload(clip)
    headers = {**bearer(running, user), "Grpc-Timeout": "1S"}
    url = f"/v1/analyses/{uploaded.analysis_id}/events"
    async with (
        httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as http,
        http.stream("GET", url, headers=headers) as resp,
    ):
        assert resp.status_code == 200
        events = [event async for event in sse_events(resp)]
    assert [e.name for e in events] == ["analysis", "error"]
    assert json.loads(events[1].data)["error_code"] == "DEADLINE_EXCEEDED"
    await no_watchers(running)

    # A client that goes away ends the gRPC stream, and so the server's watcher.
    async with (
        httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as http,
        http.stream("GET", url, headers=bearer(running, user)) as resp,
    ):
        async for _ in sse_events(resp):
            break
        assert running.app.watch.watchers == 1
    await no_watchers(running)
