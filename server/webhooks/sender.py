"""The HTTP call of one delivery attempt: a small port and its aiohttp adapter.

An attempt never raises: its outcome (an HTTP status, or why there was none) is a
value the delivery worker decides on. Bounded: one total timeout per attempt, no
redirects (a 3xx could lead off the allowed hosts), the response body is not read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

USER_AGENT = "vidscan-webhooks/1"


@dataclass(frozen=True)
class Attempt:
    status: int | None  # the HTTP status; None when no answer came
    error: str = ""  # why there was no answer (or a non-2xx one)

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class WebhookSender(Protocol):
    async def post(self, url: str, *, body: bytes, headers: Mapping[str, str]) -> Attempt: ...

    async def close(self) -> None: ...


def describe_http_error(exc: BaseException) -> str:
    """The one place where aiohttp's (and the socket's) exceptions become the reason
    an attempt got no answer."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"


class AiohttpSender:
    def __init__(self, *, timeout_seconds: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running loop (aiohttp binds it to the loop).
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, headers={"User-Agent": USER_AGENT}
            )
        return self._session

    async def post(self, url: str, *, body: bytes, headers: Mapping[str, str]) -> Attempt:
        try:
            async with self._client().post(
                url,
                data=body,
                headers={**headers, "Content-Type": "application/json"},
                allow_redirects=False,
            ) as response:
                status = response.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return Attempt(status=None, error=describe_http_error(exc))
        return Attempt(status=status, error="" if 200 <= status < 300 else f"HTTP {status}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            # Lets the connector's transports close before the loop goes (aiohttp's advice).
            await asyncio.sleep(0)
