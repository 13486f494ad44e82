"""The gateway's upload page (/) in real headless Chromium (Debian's package, driven by
Playwright for Python; Playwright never downloads a browser here), in front of the real
server on PostgreSQL, Redis, MinIO and Triton.

Each test saves a screenshot of every state it sees under var/test-output/upload-page/.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import Running
from playwright.async_api import BrowserContext, Page, async_playwright
from support.gateway import REPO_ROOT, Gateway, start_gateway
from support.photos import Placement, compose, photo, write_video
from support.tcpproxy import TcpProxy
from vidscan.v1 import analysis_pb2

SCREENSHOTS = REPO_ROOT / "var" / "test-output" / "upload-page"
MIB = 1024 * 1024

# What the machine's closed network needs (no Google services, no QUIC, no GPU), as root.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed: run scripts/install-deps.sh (make test does)")
    return found


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """A fresh Chromium profile per test."""
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=chromium(),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1000, "height": 1100},
        )
        try:
            yield context
        finally:
            await context.close()


@pytest.fixture
async def server(detecting_server: Running) -> Running:
    """The server with detection on a real tritonserver, for the page's verdicts."""
    return detecting_server


@pytest.fixture
async def gateway(server: Running, tmp_path: Path) -> AsyncIterator[Gateway]:
    started = await asyncio.to_thread(
        start_gateway,
        upstream=server.target,
        max_upload_bytes=server.settings.max_upload_bytes,
        workdir=tmp_path,
    )
    yield started
    await asyncio.to_thread(started.stop)


def token_of(server: Running, user: str) -> str:
    ((_, value),) = server.client(user).metadata
    return value.removeprefix("Bearer ")


async def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def open_page(context: BrowserContext, base_url: str, token: str) -> Page:
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{base_url}/")
    await page.wait_for_selector("body[data-state=idle]")
    assert errors == [], errors
    await page.fill("#token-input", token)
    await page.click("#token-save")
    await page.wait_for_selector("#videos[data-loaded=yes]", state="attached")
    return page


async def wait_for_state(page: Page, *states: str, timeout_s: float = 90) -> str:
    selector = ", ".join(f"body[data-state={state}]" for state in states)
    await page.wait_for_selector(selector, timeout=timeout_s * 1000)
    return str(await page.get_attribute("body", "data-state"))


async def test_a_browser_uploads_a_video_and_sees_the_verdict(
    server: Running, gateway: Gateway, browser: BrowserContext, tmp_path: Path
) -> None:
    """A video of a real portrait (scikit-image's astronaut.png, panned): the page shows
    the verdict over the face found in each frame, with the reference-model caveat."""
    user = f"page-upload-{uuid.uuid4().hex[:8]}"
    page = await open_page(browser, gateway.base_url, token_of(server, user))
    assert await page.text_content("#recent-status") == "No videos yet."
    await screenshot(page, "upload-1-ready")

    astronaut = photo("astronaut")
    clip = write_video(
        tmp_path / "portrait.mp4",
        size=(1280, 720),
        frames=10,
        draw=lambda i: compose((1280, 720), [(astronaut, Placement(0.8, 60 + 40 * i, 40))]),
    )
    data = clip.read_bytes()
    await page.set_input_files("#file", str(clip))
    await wait_for_state(page, "uploading", "processing", "done")
    await screenshot(page, "upload-2-uploading")
    assert await wait_for_state(page, "done", "error") == "done"
    await screenshot(page, "upload-3-verdict")

    video_id = str(await page.text_content("#video-id"))
    video = await server.client(user).video(video_id)
    assert (video.filename, video.file_size) == ("portrait.mp4", len(data))
    assert video.file_hash == hashlib.sha256(data).hexdigest()
    assert await page.is_visible("#verdict")
    label = await page.text_content("#verdict-label")
    assert label in ("Flagged as fake", "Not flagged")
    detail = str(await page.text_content("#verdict-detail"))
    assert "10 faces in 10 of 10 frames" in detail, detail
    faces = await page.locator("#faces li").all_text_contents()
    assert len(faces) == 10 and all("face at (" in f for f in faces), faces
    # The bundled classifiers are untrained: the page must say so with the verdict.
    disclaimer = str(await page.text_content("#disclaimer"))
    assert await page.is_visible("#disclaimer")
    assert "reference model" in disclaimer.lower(), disclaimer
    assert await page.text_content("#percent") == "100.0 %"
    # The recent videos list now shows it.
    await page.wait_for_selector("#videos tr")
    assert "portrait.mp4" in str(await page.text_content("#videos"))


async def test_a_dropped_connection_resumes_by_itself(
    server: Running, gateway: Gateway, browser: BrowserContext, big_video: bytes, tmp_path: Path
) -> None:
    """The browser reaches the gateway through a TCP proxy that cuts every connection
    after 7 MiB of the upload: tus-js-client asks for the committed offset and sends
    the rest, with no click."""
    user = f"page-drop-{uuid.uuid4().hex[:8]}"
    proxy = TcpProxy(gateway.base_url.removeprefix("http://"))
    try:
        page = await open_page(browser, f"http://{proxy.target}", token_of(server, user))
        clip = tmp_path / "dropped.mp4"
        clip.write_bytes(big_video)
        proxy.cut_after(7 * MIB)
        await page.set_input_files("#file", str(clip))
        await wait_for_state(page, "reconnecting", "done", "error")
        await screenshot(page, "drop-1-reconnecting")
        assert await wait_for_state(page, "done", "error") == "done"
        await screenshot(page, "drop-2-finished")
        assert proxy.cuts == 1
    finally:
        proxy.stop()
    retries = str(await page.text_content("#retries"))
    assert retries.startswith("resumed "), retries
    # Noise has no face: the page says nothing was judged rather than show a verdict.
    label = await page.text_content("#verdict-label")
    assert label == "No face found: nothing judged", label
    video = await server.client(user).video(str(await page.text_content("#video-id")))
    assert video.file_size == len(big_video)
    assert video.file_hash == hashlib.sha256(big_video).hexdigest()


async def test_a_non_video_is_refused_with_the_error_shown(
    server: Running, gateway: Gateway, browser: BrowserContext, tmp_path: Path
) -> None:
    user = f"page-refused-{uuid.uuid4().hex[:8]}"
    page = await open_page(browser, gateway.base_url, token_of(server, user))
    notes = tmp_path / "notes.mp4"
    notes.write_bytes(b"these are my notes, not a video\n" * 2000)
    await page.set_input_files("#file", str(notes))
    assert await wait_for_state(page, "done", "error") == "error"
    await screenshot(page, "refused-1-error")
    assert await page.is_visible("#error")
    assert await page.text_content("#error-reason") == "UNSUPPORTED_FORMAT"
    assert str(await page.text_content("#error-message")) != ""
    assert not await page.is_visible("#verdict")
    client = server.client(user)
    listed = await client.analyses.ListVideos(
        analysis_pb2.ListVideosRequest(), metadata=client.metadata
    )
    assert list(listed.videos) == []


async def test_without_a_token_the_page_shows_the_refusal(
    gateway: Gateway, browser: BrowserContext, tmp_path: Path
) -> None:
    page = await browser.new_page()
    await page.goto(f"{gateway.base_url}/")
    await page.wait_for_selector("body[data-state=idle]")
    clip = tmp_path / "anon.mp4"
    clip.write_bytes(b"\x00" * 4096)
    await page.set_input_files("#file", str(clip))
    assert await wait_for_state(page, "done", "error") == "error"
    assert await page.text_content("#error-reason") == "UNAUTHENTICATED"
    await screenshot(page, "anonymous-1-error")
