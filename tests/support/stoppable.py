"""``with`` support for the test helpers that start something and must stop it."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Stoppable:
    """Mixin: ``with thing:`` calls ``thing.stop()`` on the way out."""

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
