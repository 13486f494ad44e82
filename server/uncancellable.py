"""Awaiting work that must not be cut off half-way by the caller's cancellation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def run_to_end(work: Awaitable[T]) -> T:
    """Awaits ``work`` to its end even when the caller is cancelled meanwhile (as often
    as it is), then raises the caller's cancellation; uncancelled, returns its result.

    For requests whose interruption costs more than their wait, e.g. a multipart
    completion: MinIO, cut off mid-request, can drop every part of the upload."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        with contextlib.suppress(BaseException):
            task.result()  # retrieved, so that its failure is not reported as unawaited
        raise asyncio.CancelledError
    return task.result()
