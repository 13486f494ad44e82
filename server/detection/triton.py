"""Detector on NVIDIA Triton Inference Server through ``tritonclient.grpc.aio``.

One long-lived client per process, created inside the running event loop. Every
call has an explicit client timeout; UNAVAILABLE is retried with exponential
backoff; every ``InferenceServerException`` becomes a vidscan error in
``map_triton_errors`` and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import tritonclient.grpc.aio as triton
from tritonclient.utils import InferenceServerException

from server.detection.contract import ModelContract
from server.errors import Internal, InvalidUpload, Reason, Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

_TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "CANCELLED")


@dataclass(frozen=True)
class TritonOptions:
    url: str
    timeout_seconds: float = 30.0
    metadata_timeout_seconds: float = 5.0
    retries: int = 3
    backoff_seconds: float = 0.5


@contextlib.contextmanager
def map_triton_errors(operation: str) -> Iterator[None]:
    """The one place where tritonclient's exceptions become vidscan errors."""
    try:
        yield
    except InferenceServerException as exc:
        status = str(exc.status() or "")
        if any(code in status for code in _TRANSIENT):
            raise Unavailable(
                Reason.DETECTOR_UNAVAILABLE, f"Triton unavailable during {operation}"
            ) from exc
        if "INVALID_ARGUMENT" in status or "NOT_FOUND" in status:
            raise Internal(
                Reason.DETECTOR_ERROR, f"Triton refused {operation}: {exc.message()}"
            ) from exc
        raise Internal(
            Reason.DETECTOR_ERROR, f"Triton failed {operation}: {exc.message()}"
        ) from exc
    except (OSError, TimeoutError) as exc:
        raise Unavailable(
            Reason.DETECTOR_UNAVAILABLE, f"Triton unreachable during {operation}"
        ) from exc


class TritonDetector:
    def __init__(self, *, options: TritonOptions, models: Sequence[str]) -> None:
        self._options = options
        self._models = tuple(models)
        self._client: triton.InferenceServerClient | None = None
        self._contracts: dict[str, ModelContract] = {}

    def _get_client(self) -> triton.InferenceServerClient:
        if self._client is None:  # created lazily, inside the running loop
            self._client = triton.InferenceServerClient(self._options.url)
        return self._client

    async def _retry(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        delay = self._options.backoff_seconds
        for attempt in range(self._options.retries + 1):
            try:
                with map_triton_errors(operation):
                    return await call()
            except Unavailable:
                if attempt == self._options.retries:
                    raise
                log.warning("Triton unavailable (%s); retry in %.1fs", operation, delay)
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    @property
    def loaded(self) -> bool:
        return len(self._contracts) == len(self._models)

    async def load(self) -> None:
        """Reads every allowed model's contract; fails if one is missing or not ready."""
        client = self._get_client()
        timeout = self._options.metadata_timeout_seconds
        for name in self._models:
            ready = await self._retry(
                f"readiness of {name}",
                lambda n=name: client.is_model_ready(n, client_timeout=timeout),  # type: ignore[misc]
            )
            if not ready:
                raise Unavailable(Reason.DETECTOR_UNAVAILABLE, f"model {name} is not ready")
            config: dict[str, Any] = await self._retry(
                f"config of {name}",
                lambda n=name: client.get_model_config(n, as_json=True, client_timeout=timeout),  # type: ignore[misc]
            )
            metadata: dict[str, Any] = await self._retry(
                f"metadata of {name}",
                lambda n=name: client.get_model_metadata(n, as_json=True, client_timeout=timeout),  # type: ignore[misc]
            )
            versions = metadata.get("versions") or ["1"]
            self._contracts[name] = ModelContract.from_triton(
                name=name, config=config.get("config", config), version=str(max(versions))
            )

    def contract(self, model: str) -> ModelContract:
        try:
            return self._contracts[model]
        except KeyError:
            raise InvalidUpload(
                Reason.MODEL_NOT_ALLOWED, f"model {model!r} is not loaded"
            ) from None

    async def ready(self) -> bool:
        try:
            with map_triton_errors("readiness"):
                return bool(
                    await self._get_client().is_server_ready(
                        client_timeout=self._options.metadata_timeout_seconds
                    )
                )
        except (Unavailable, Internal):
            return False

    async def infer(self, model: str, frames: np.ndarray) -> list[float]:
        """Per-frame fake probabilities. Frames go in as few requests as the model's
        max batch size allows (all of them in one when they fit)."""
        contract = self.contract(model)
        client = self._get_client()
        scores: list[float] = []
        for start in range(0, len(frames), contract.max_batch_size):
            batch = np.ascontiguousarray(frames[start : start + contract.max_batch_size])
            tensor = triton.InferInput(contract.input_name, list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch)
            output = triton.InferRequestedOutput(contract.output_name)

            async def call(t: Any = tensor, o: Any = output) -> Any:
                return await client.infer(
                    model, [t], outputs=[o], client_timeout=self._options.timeout_seconds
                )

            result = await self._retry(f"inference on {model}", call)
            values = result.as_numpy(contract.output_name)
            if values is None:
                raise Internal(Reason.DETECTOR_ERROR, f"{model} returned no {contract.output_name}")
            scores.extend(float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1))
        return scores

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
