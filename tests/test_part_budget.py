"""The process-wide budget for bytes held in S3 parts (pure logic, no servers)."""

from __future__ import annotations

import asyncio

import pytest

from server.upload.budget import PartBudget


async def test_waiters_are_served_in_order_once_bytes_come_back() -> None:
    budget = PartBudget(limit_bytes=10)
    assert await budget.acquire(6) == 6
    order: list[str] = []

    async def take(name: str, size: int) -> None:
        await budget.acquire(size)
        order.append(name)

    first = asyncio.create_task(take("first", 8))
    second = asyncio.create_task(take("second", 2))  # would fit, but waits its turn
    await asyncio.sleep(0)
    assert order == [] and budget.in_use == 6
    budget.release(6)
    await asyncio.gather(first, second)
    assert order == ["first", "second"] and budget.in_use == 10


async def test_a_cancelled_waiter_leaves_nothing_held_and_unblocks_the_next() -> None:
    budget = PartBudget(limit_bytes=10)
    await budget.acquire(10)
    blocked = asyncio.create_task(budget.acquire(10))
    small = asyncio.create_task(budget.acquire(3))
    await asyncio.sleep(0)
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    budget.release(10)
    assert await asyncio.wait_for(small, 1) == 3
    assert budget.in_use == 3


async def test_a_part_larger_than_the_budget_runs_alone() -> None:
    budget = PartBudget(limit_bytes=8)
    assert await budget.acquire(20) == 8
    assert budget.in_use == 8
    budget.release(8)
    assert budget.in_use == 0


def test_the_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        PartBudget(limit_bytes=0)
