"""Log lines: JSON (python-json-logger) carrying the ids of what is being done.

Every record gets the fields of the current *log context*: ``request_id`` (the
gateway's ``X-Request-Id``, forwarded as ``x-request-id`` metadata, or one made up
per RPC), ``trace_id`` when tracing is on, ``user_id``, ``session_id``, ``video_id``,
``analysis_id`` -- whichever are known. The context is a ``contextvars`` value, so
it follows each RPC's task and the tasks it starts, never another RPC's.

What is never logged: tokens, secrets, client metadata. Nothing here logs request
bodies or headers; the fields are ids only.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator

from pythonjsonlogger.json import JsonFormatter

from server import tracing

FIELDS = ("request_id", "trace_id", "user_id", "session_id", "video_id", "analysis_id")

# Never mutated in place: bind() and scope() set a new dict, so a task started with a
# copy of the context keeps the fields it had.
_EMPTY: dict[str, str] = {}
_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar(
    "vidscan_log_context", default=_EMPTY
)


def bind(**fields: str) -> None:
    """Adds ids to the current context (this task and the tasks it starts from now)."""
    unknown = set(fields) - set(FIELDS)
    assert not unknown, f"not a log context field: {unknown}"
    _context.set({**_context.get(), **{k: v for k, v in fields.items() if v}})
    tracing.annotate(**fields)  # the same ids on the current span


@contextlib.contextmanager
def scope(**fields: str) -> Iterator[None]:
    """A fresh context for one unit of work (an RPC, a queue job)."""
    token = _context.set({k: v for k, v in fields.items() if v})
    try:
        yield
    finally:
        _context.reset(token)


def current() -> dict[str, str]:
    return dict(_context.get())


REQUEST_ID_KEY = "x-request-id"


def request_id_metadata() -> tuple[tuple[str, str], ...]:
    """The current request id as gRPC metadata (empty outside an RPC)."""
    rid = _context.get().get("request_id")
    return ((REQUEST_ID_KEY, rid),) if rid else ()


class ContextFilter(logging.Filter):
    """Copies the log context onto every record (as attributes, so formatters see them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            setattr(record, key, value)
        trace_id = tracing.trace_id()
        if trace_id is not None:
            record.trace_id = trace_id
        return True


class TextFormatter(logging.Formatter):
    """``make run``'s human format: the JSON fields as key=value after the message."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{k}={getattr(record, k)}" for k in FIELDS if hasattr(record, k))
        return f"{line} {extra}" if extra else line


def configure(*, level: str, fmt: str) -> None:
    """Root logging for a server process: one handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            timestamp=False,
        )
    else:
        formatter = TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
