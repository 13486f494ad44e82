"""Typed messages between the server and the isolated media worker process.

Each crosses the process boundary as JSON and is decoded strictly: a missing or
unknown field raises ``MessageError`` instead of vanishing (a misspelt key in a
dict would). The same records travel further inside the server: ``VideoInfo`` is
saved with a sealed upload and becomes the video row's media columns.

Wire shape: request ``{"op": ..., "sandbox": {...}, "request": {...}}``; answer
``{"ok": true, "result": {...}}`` or ``{"ok": false, "refusal": {...}}``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar, Union

T = TypeVar("T")


class MessageError(ValueError):
    """A message that does not have exactly the fields of its type."""


@dataclass(frozen=True)
class MediaLimits:
    max_pixels: int
    max_seconds: float
    max_fps: float


@dataclass(frozen=True)
class Sandbox:
    """The limits the worker applies to itself before it imports PyAV."""

    memory_bytes: int
    cpu_seconds: int
    fault: str = ""  # VIDSCAN_MEDIA_FAULT_INJECTION, tests only


@dataclass(frozen=True)
class ProbeRequest:
    path: str


@dataclass(frozen=True)
class ValidateRequest:
    path: str
    limits: MediaLimits


@dataclass(frozen=True)
class SampleRequest:
    path: str
    count: int
    duration: float
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layout: str  # NHWC or NCHW, as the model's contract says
    datatype: str  # UINT8 (pixels as decoded) or FP32 (normalised by the worker)
    policy: str  # VIDSCAN_FRAME_POLICY: cheapest or exact (server/media/frame_plan.py)
    max_packets: int  # bound on the packet index read before planning
    min_frames: int
    out: str  # where the worker writes the frame tensor (.npy) when shm_key is empty
    shm_key: str = ""  # a POSIX shared-memory object the server created for the tensor
    shm_bytes: int = 0  # its size
    resize: str = "stretch"  # or "letterbox" (aspect kept, top-left): the model's contract
    threads: int = 1  # VIDSCAN_DECODE_THREADS: decoding threads sharing the planned runs


@dataclass(frozen=True)
class HeaderInfo:
    codec: str


@dataclass(frozen=True)
class VideoInfo:
    container: str
    codec: str
    width: int
    height: int
    fps: float
    duration_seconds: float


@dataclass(frozen=True)
class SampledFrames:
    frames: int
    times: tuple[float, ...]  # seconds, of the frames actually decoded, ascending
    decode_ms: float
    plan: str  # the plan taken: keyframes, after_keyframes, exact, all, or seek (fallback)
    decoded: int  # packets fed to the decoder
    nbytes: int  # size of the tensor written


@dataclass(frozen=True)
class Refusal:
    reason: str  # a Reason name, e.g. VIDEO_UNDECODABLE
    message: str


Request = ProbeRequest | ValidateRequest | SampleRequest
OPS: dict[str, type[Any]] = {
    "probe_header": ProbeRequest,
    "validate": ValidateRequest,
    "sample_frames": SampleRequest,
}
RESULTS: dict[type[Any], type[Any]] = {
    ProbeRequest: HeaderInfo,
    ValidateRequest: VideoInfo,
    SampleRequest: SampledFrames,
}


def to_dict(message: Any) -> dict[str, Any]:
    return dataclasses.asdict(message)


def from_dict(cls: type[T], data: Any) -> T:
    """``cls`` from ``data`` with exactly its fields (defaults may be left out)."""
    if not isinstance(data, dict):
        raise MessageError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - set(fields)
    if unknown:
        raise MessageError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in data:
            if field.default is dataclasses.MISSING:
                raise MessageError(f"{cls.__name__}: missing field {name!r}")
            continue
        values[name] = _value(hints[name], data[name], f"{cls.__name__}.{name}")
    return cls(**values)


def _value(kind: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        return from_dict(kind, value)  # type: ignore[arg-type]
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise MessageError(f"{where}: expected a list")
        (item,) = {a for a in typing.get_args(kind) if a is not Ellipsis}
        return tuple(_value(item, v, where) for v in value)
    if origin in (Union, types.UnionType):
        raise MessageError(f"{where}: unions are not message fields")  # pragma: no cover
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind in (int, str, bool) and type(value) is kind:
        return value
    raise MessageError(f"{where}: expected {getattr(kind, '__name__', kind)}")


def encode_request(request: Request, sandbox: Sandbox) -> bytes:
    op = next(name for name, cls in OPS.items() if isinstance(request, cls))
    payload = {"op": op, "sandbox": to_dict(sandbox), "request": to_dict(request)}
    return json.dumps(payload).encode()


def decode_request(raw: str | bytes) -> tuple[Request, Sandbox]:
    data = json.loads(raw)
    if not isinstance(data, dict) or set(data) != {"op", "sandbox", "request"}:
        raise MessageError("a media request has exactly op, sandbox and request")
    cls = OPS.get(str(data["op"]))
    if cls is None:
        raise MessageError(f"unknown media operation {data['op']!r}")
    request: Request = from_dict(cls, data["request"])
    return request, from_dict(Sandbox, data["sandbox"])


def encode_answer(answer: HeaderInfo | VideoInfo | SampledFrames | Refusal) -> str:
    if isinstance(answer, Refusal):
        return json.dumps({"ok": False, "refusal": to_dict(answer)})
    return json.dumps({"ok": True, "result": to_dict(answer)})


def decode_answer(raw: str | bytes, result: type[T]) -> T | Refusal:
    data = json.loads(raw)
    if not isinstance(data, dict) or "ok" not in data or len(data) != 2:
        raise MessageError("a media answer has exactly ok and result/refusal")
    if data["ok"] is True:
        return from_dict(result, data.get("result"))
    return from_dict(Refusal, data.get("refusal"))
