"""One budget per server process for the bytes held in S3 parts (filling or in
flight), so that 50 concurrent uploads do not cost 50 times one upload's window.

A writer reserves a whole part before it starts filling it and the reservation is
returned when that part's upload ends (sent, failed or cancelled). Reserving whole
parts, never a few bytes at a time, is what keeps this free of deadlock: a writer
that holds a reservation needs only the client's bytes to finish its part, never
more budget. Waiters are served first come, first served; one that waits blocks its
stream's reads, so gRPC's flow control pushes back on the client instead of the
server buffering.
"""

from __future__ import annotations

import asyncio
import collections


class PartBudget:
    def __init__(self, *, limit_bytes: int) -> None:
        if limit_bytes <= 0:
            raise ValueError("the part budget must be positive")
        self.limit = limit_bytes
        self._free = limit_bytes
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    @property
    def in_use(self) -> int:
        return self.limit - self._free

    @property
    def contended(self) -> bool:
        """Some stream waits for budget (server/upload/stall.py cuts idle ones sooner)."""
        return bool(self._waiters)

    async def acquire(self, size: int) -> int:
        """Takes ``size`` bytes (capped at the whole budget, so a part larger than
        the budget still runs, alone); returns what was taken, for ``release``."""
        size = min(size, self.limit)
        if not self._waiters and self._free >= size:
            self._free -= size
            return size
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, waiter)
        self._waiters.append(entry)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release(size)  # granted just as we were cancelled: give it back
            else:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                self._wake()
            raise
        return size

    def release(self, size: int) -> None:
        self._free = min(self.limit, self._free + size)
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._waiters[0][0] <= self._free:
            size, waiter = self._waiters.popleft()
            if waiter.done():
                continue
            self._free -= size
            waiter.set_result(None)
