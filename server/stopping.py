"""Stopping helper tasks that may not stop when cancelled.

redis-py 8 can lose a cancellation that lands inside a command: the task carries on as
if it had not been cancelled. A helper that calls Redis in a loop (the stream lock's
keeper, a stream slot's renewal, the background loops) therefore also checks a flag of
its own, and whoever stops it waits a bounded time: an upload that has finished, or a
shutdown, must never wait on such a task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Marks a task's outcome as seen (it may end after we stopped waiting)."""
    if not task.cancelled():
        task.exception()


async def cancel_and_wait(
    tasks: Collection[asyncio.Task[Any]], *, within: float
) -> set[asyncio.Task[Any]]:
    """Cancels ``tasks`` and waits at most ``within`` seconds for them to end; returns
    those still running. Their outcome is retrieved whenever they end, so a late one
    is not reported as never retrieved; ``task.result()`` still gives it."""
    for task in tasks:
        task.cancel()
        task.add_done_callback(_retrieve)
    if not tasks:
        return set()
    _, pending = await asyncio.wait(tasks, timeout=within)
    return pending
