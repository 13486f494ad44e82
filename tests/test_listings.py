"""ListVideos and ListAnalyses against the real server on PostgreSQL: keyset pages
newest first, only the caller's own rows, opaque tokens bound to the request, the
status filter, and the REST routes through the gateway."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

import grpc
import httpx
import pytest
from conftest import Database, Running
from support.gateway import start_gateway
from support.rpc import Client, details
from vidscan.v1 import analysis_pb2

A_CLIPS = ("mp4", "mp4-faststart", "mov", "webm", "mkv")


def user(tag: str) -> str:
    return f"list-{tag}-{uuid.uuid4().hex[:10]}"


async def list_videos(client: Client, **fields: Any) -> analysis_pb2.ListVideosResponse:
    response: analysis_pb2.ListVideosResponse = await client.analyses.ListVideos(
        analysis_pb2.ListVideosRequest(**fields), metadata=client.metadata
    )
    return response


async def list_analyses(client: Client, **fields: Any) -> analysis_pb2.ListAnalysesResponse:
    response: analysis_pb2.ListAnalysesResponse = await client.analyses.ListAnalyses(
        analysis_pb2.ListAnalysesRequest(**fields), metadata=client.metadata
    )
    return response


async def all_pages(client: Client, **fields: Any) -> list[list[analysis_pb2.Video]]:
    pages: list[list[analysis_pb2.Video]] = []
    token = ""
    while True:
        page = await list_videos(client, page_token=token, **fields)
        pages.append(list(page.videos))
        token = page.next_page_token
        if not token:
            return pages
        assert len(pages) < 20, "the pages never end"


async def upload_all(client: Client, videos: dict[str, bytes], names: tuple[str, ...]) -> list[str]:
    """Uploads one after the other (so created_at rises); the video ids, oldest first."""
    return [(await client.upload(videos[name])).video_id for name in names]


async def refused(call: Awaitable[object]) -> tuple[grpc.StatusCode, str, list[str]]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    found = details(raised.value)
    return found.code, found.reason, found.field_violations


async def test_pages_are_newest_first_complete_and_own_only(
    server: Running, videos: dict[str, bytes]
) -> None:
    alice, bob = server.client(user("a")), server.client(user("b"))
    alice_ids = await upload_all(alice, videos, A_CLIPS)
    (bob_id,) = await upload_all(bob, videos, ("avi",))

    pages = await all_pages(alice, page_size=2)
    assert [len(p) for p in pages] == [2, 2, 1]  # the last page's token is empty
    listed = [v.video_id for page in pages for v in page]
    assert listed == alice_ids[::-1]  # newest first, each once, nothing of Bob's
    stamps = [v.created_at.ToDatetime() for page in pages for v in page]
    assert stamps == sorted(stamps, reverse=True)

    # Each item is the Video GetVideo returns.
    first = pages[0][0]
    assert first == await alice.video(first.video_id)
    assert first.latest_analysis_id

    # An exact multiple of page_size: no empty trailing page.
    assert [len(p) for p in await all_pages(alice, page_size=5)] == [5]
    # Default page size; above the maximum is the maximum.
    assert len((await list_videos(alice)).videos) == 5
    assert len((await list_videos(alice, page_size=10_000)).videos) == 5

    assert [v.video_id for p in await all_pages(bob) for v in p] == [bob_id]
    assert (await list_videos(server.client(user("none")))).videos == []


async def test_a_page_does_not_shift_when_newer_videos_arrive(
    server: Running, videos: dict[str, bytes]
) -> None:
    alice = server.client(user("stable"))
    ids = await upload_all(alice, videos, A_CLIPS[:3])
    first = await list_videos(alice, page_size=2)
    await upload_all(alice, videos, A_CLIPS[3:])  # newer than everything listed
    rest = await list_videos(alice, page_size=2, page_token=first.next_page_token)
    assert [v.video_id for v in (*first.videos, *rest.videos)] == ids[::-1]
    assert rest.next_page_token == ""


async def test_bad_page_size_and_tokens_are_refused(
    server: Running, videos: dict[str, bytes]
) -> None:
    alice, bob = server.client(user("tok-a")), server.client(user("tok-b"))
    await upload_all(alice, videos, A_CLIPS[:3])
    await upload_all(bob, videos, A_CLIPS[:3])
    token = (await list_videos(alice, page_size=1)).next_page_token
    assert token

    invalid = (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    code, reason, fields = await refused(list_videos(alice, page_size=-1))
    assert ((code, reason), fields) == (invalid, ["page_size"])
    for bad in ("not a token", "e30", token[:-3], "%%%", token + "x"):
        code, reason, fields = await refused(list_videos(alice, page_token=bad))
        assert ((code, reason), fields) == (invalid, ["page_token"]), bad
    # Another user's token, and a token used with another filter.
    code, reason, fields = await refused(list_videos(bob, page_token=token))
    assert ((code, reason), fields) == (invalid, ["page_token"])
    pending = analysis_pb2.ANALYSIS_STATUS_PENDING
    code, reason, fields = await refused(
        list_videos(alice, page_token=token, analysis_status=pending)
    )
    assert ((code, reason), fields) == (invalid, ["page_token"])
    code, reason, fields = await refused(list_videos(alice, analysis_status=99))
    assert ((code, reason), fields) == (invalid, ["analysis_status"])
    # ListAnalyses checks the same way.
    video_id = (await list_videos(alice)).videos[0].video_id
    code, reason, fields = await refused(list_analyses(alice, video_id=video_id, page_size=-5))
    assert ((code, reason), fields) == (invalid, ["page_size"])
    code, reason, fields = await refused(list_analyses(alice, video_id=video_id, page_token=token))
    assert ((code, reason), fields) == (invalid, ["page_token"])


async def test_filter_by_latest_analysis_status(
    server: Running, videos: dict[str, bytes], db: Database
) -> None:
    alice = server.client(user("filter"))
    ids = await upload_all(alice, videos, A_CLIPS[:4])
    # No detector is configured, so every analysis stays pending unless set here.
    await db.execute("update analyses set status = 'analyzed' where video_id = :v", v=ids[0])
    await db.execute("update analyses set status = 'failed' where video_id = :v", v=ids[2])

    async def having(status: int, **fields: Any) -> list[str]:
        pages = await all_pages(alice, analysis_status=status, **fields)
        return [v.video_id for page in pages for v in page]

    assert await having(analysis_pb2.ANALYSIS_STATUS_ANALYZED) == [ids[0]]
    assert await having(analysis_pb2.ANALYSIS_STATUS_FAILED) == [ids[2]]
    assert await having(analysis_pb2.ANALYSIS_STATUS_PENDING, page_size=1) == [ids[3], ids[1]]
    assert await having(analysis_pb2.ANALYSIS_STATUS_RUNNING) == []
    assert await having(analysis_pb2.ANALYSIS_STATUS_UNSPECIFIED) == ids[::-1]


async def add_analysis(db: Database, *, first: str, minutes: int) -> str:
    """One more analysis of the video of analysis ``first``, ``minutes`` after it."""
    analysis_id = str(uuid.uuid4())
    await db.execute(
        "insert into analyses (id, video_id, user_id, status, model_name, created_at)"
        " select :id, video_id, user_id, 'failed', model_name, created_at + :later"
        " from analyses where id = :first",
        id=analysis_id,
        first=first,
        later=timedelta(minutes=minutes),
    )
    return analysis_id


async def test_list_analyses_of_a_video(
    server: Running, videos: dict[str, bytes], db: Database
) -> None:
    alice = server.client(user("analyses"))
    result = await alice.upload(videos["mp4"])
    second = await add_analysis(db, first=result.analysis_id, minutes=1)
    third = await add_analysis(db, first=result.analysis_id, minutes=2)

    first_page = await list_analyses(alice, video_id=result.video_id, page_size=2)
    assert [a.analysis_id for a in first_page.analyses] == [third, second]
    assert first_page.analyses[0] == await alice.analysis(third)
    last_page = await list_analyses(
        alice, video_id=result.video_id, page_size=2, page_token=first_page.next_page_token
    )
    assert [a.analysis_id for a in last_page.analyses] == [result.analysis_id]
    assert last_page.next_page_token == ""

    failed = await list_analyses(
        alice, video_id=result.video_id, analysis_status=analysis_pb2.ANALYSIS_STATUS_FAILED
    )
    assert [a.analysis_id for a in failed.analyses] == [third, second]
    # The video's latest analysis is the newest one, in GetVideo and ListVideos alike.
    assert (await alice.video(result.video_id)).latest_analysis_id == third
    assert (await list_videos(alice)).videos[0].latest_analysis_id == third

    # Another user's video, or none: NOT_FOUND, as GetVideo answers.
    for client, video_id in ((server.client(user("other")), result.video_id), (alice, "nope")):
        code, reason, _ = await refused(list_analyses(client, video_id=video_id))
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "VIDEO_NOT_FOUND")


async def test_rest_routes_through_the_gateway(server: Running, videos: dict[str, bytes]) -> None:
    alice = server.client(user("rest"))
    ids = await upload_all(alice, videos, A_CLIPS[:3])
    ((key, value),) = alice.metadata
    headers = {key: value}
    gateway = await asyncio.to_thread(
        start_gateway,
        upstream=server.target,
        max_upload_bytes=server.settings.max_upload_bytes,
    )
    try:
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=60) as http:
            seen: list[str] = []
            token = ""
            while True:
                response = await http.get(
                    "/v1/videos", params={"page_size": 2, "page_token": token}, headers=headers
                )
                assert response.status_code == 200, response.text
                body = response.json()
                seen += [v["video_id"] for v in body["videos"]]
                token = body["next_page_token"]
                if not token:
                    break
            assert seen == ids[::-1]

            filtered = await http.get(
                "/v1/videos",
                params={"analysis_status": "failed"},  # the REST spelling
                headers=headers,
            )
            assert filtered.status_code == 200, filtered.text
            assert filtered.json()["videos"] == []

            analyses = await http.get(f"/v1/videos/{ids[0]}/analyses", headers=headers)
            assert analyses.status_code == 200, analyses.text
            (only,) = analyses.json()["analyses"]
            assert (only["video_id"], only["status"]) == (ids[0], "pending")
            assert analyses.json()["next_page_token"] == ""

            # The single-video route is still GetVideo.
            single = await http.get(f"/v1/videos/{ids[0]}", headers=headers)
            assert single.status_code == 200 and single.json()["video_id"] == ids[0]

            bad = await http.get("/v1/videos", params={"page_token": "garbage"}, headers=headers)
            assert bad.status_code == 400, bad.text
            assert bad.json()["error_code"] == "INVALID_FIELD"
            stranger = server.client(user("rest-other")).metadata[0]
            hidden = await http.get(
                f"/v1/videos/{ids[0]}/analyses", headers={stranger[0]: stranger[1]}
            )
            assert hidden.status_code == 404, hidden.text
            assert hidden.json()["error_code"] == "VIDEO_NOT_FOUND"
    finally:
        await asyncio.to_thread(gateway.stop)
