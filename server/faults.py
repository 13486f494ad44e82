"""Fault injection at the upload's finish line, for crash-recovery tests only.

Off unless ``VIDSCAN_FAULT_POINTS`` is set (like ``VIDSCAN_MEDIA_FAULT_INJECTION``
for the media worker); the server logs a warning at start when it is on. The value
is a comma-separated list of ``step=action``:

    sealed=kill                      SIGKILL this process when the step is reached
    recorded=stop                    SIGSTOP it (a hung process; SIGCONT resumes it)
    before-record=wait:/tmp/gate     create /tmp/gate.reached, then wait (up to 10
                                     minutes) until /tmp/gate exists, then go on

``wait`` lets a test act on the backing services (stop PostgreSQL, kill MinIO, cut a
connection) at an exact point of the sequence. The steps are the finish line's
crash points, in order (see ``server/upload/finish.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

WAIT_LIMIT_SECONDS = 600.0
WAIT_POLL_SECONDS = 0.02


class FinishStep(StrEnum):
    SEALED = "sealed"  # size, hash and parts saved in the session; nothing assembled
    ASSEMBLED = "assembled"  # the multipart upload is completed into the object
    BEFORE_DOWNLOAD = "before-download"  # a resumed upload fetches the object to validate it
    BEFORE_RECORD = "before-record"  # the database transaction is about to run
    RECORDED = "recorded"  # the video row is committed, the session not yet completed
    COMPLETED = "completed"  # the session is completed, the answer not yet sent


class FaultPoints(Protocol):
    async def reached(self, step: FinishStep) -> None: ...


class NoFaults:
    """Production: every step passes straight through."""

    async def reached(self, step: FinishStep) -> None:
        return None


@dataclass(frozen=True)
class _Action:
    kind: str  # "kill", "stop" or "wait"
    gate: Path | None = None


class InjectedFaults:
    def __init__(self, actions: dict[FinishStep, _Action]) -> None:
        self._actions = actions

    async def reached(self, step: FinishStep) -> None:
        action = self._actions.get(step)
        if action is None:
            return
        log.warning("fault injection: %s at %s", action.kind, step.value)
        if action.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action.kind == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
        elif action.gate is not None:
            await _wait_at(action.gate)


async def _wait_at(gate: Path) -> None:
    await asyncio.to_thread(gate.with_name(gate.name + ".reached").touch)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_LIMIT_SECONDS
    # The gate is a file another process creates: there is no event to wait on.
    while not gate.exists() and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(WAIT_POLL_SECONDS)


def parse_fault_points(spec: str) -> FaultPoints:
    """``NoFaults`` for "", else the parsed actions; ValueError names what is wrong."""
    actions: dict[FinishStep, _Action] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        step_name, sep, action = item.partition("=")
        if not sep:
            raise ValueError(f"fault point {item!r} is not step=action")
        try:
            step = FinishStep(step_name.strip())
        except ValueError:
            known = ", ".join(s.value for s in FinishStep)
            raise ValueError(f"unknown fault step {step_name!r}; one of {known}") from None
        kind, _, argument = action.strip().partition(":")
        if kind in ("kill", "stop") and not argument:
            actions[step] = _Action(kind)
        elif kind == "wait" and argument:
            actions[step] = _Action(kind, Path(argument))
        else:
            raise ValueError(f"fault action {action!r}: kill, stop or wait:<path>")
    return InjectedFaults(actions) if actions else NoFaults()
