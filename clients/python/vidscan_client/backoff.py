"""Exponential backoff, shared by retries (sync and asyncio) and analysis polling."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["DEFAULT_POLL", "Backoff"]


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``initial`` doubling up to ``maximum``, each delay scaled
    down by a random factor in ``[1 - jitter, 1]``."""

    initial: float = 0.5
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5
    _random: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, attempt: int) -> float:
        """The pause before retry number ``attempt`` (1-based)."""
        base = min(self.maximum, self.initial * self.multiplier ** max(0, attempt - 1))
        return base * (1.0 - self.jitter * self._random.random())


# How often `wait_for_analysis` asks: soon at first (a verdict takes seconds), then
# every few seconds at most.
DEFAULT_POLL = Backoff(initial=0.5, maximum=5.0, multiplier=1.5, jitter=0.2)
