"""Detector on NVIDIA Triton Inference Server through ``tritonclient.grpc.aio``.

One long-lived client per process, created inside the running event loop. Every
call has an explicit client timeout; UNAVAILABLE is retried with exponential
backoff; every ``InferenceServerException`` becomes a vidscan error in
``map_triton_errors`` and nowhere else. Frames go either inside the request
(``infer``) or in a system shared-memory region (``frame_region`` +
``infer_region``, ``server/detection/shm.py``) when Triton shares this host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import tritonclient.grpc.aio as triton
from opentelemetry.trace import SpanKind
from tritonclient.utils import InferenceServerException
from tritonclient.utils.shared_memory import SharedMemoryException

from server import metrics, tracing
from server.detection import faces, shm
from server.detection.contract import ModelContract
from server.detection.inference import Inference
from server.errors import Internal, InvalidUpload, Reason, Unavailable, VidscanError, reason_name

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
    shared_memory: str = "off"  # VIDSCAN_TRITON_SHM: auto, on or off


@contextlib.contextmanager
def map_triton_errors(operation: str) -> Iterator[None]:
    """The one place where tritonclient's exceptions become vidscan errors (each
    counted in vidscan_triton_errors_total by its reason)."""
    try:
        yield
    except InferenceServerException as exc:
        status = str(exc.status() or "")
        if any(code in status for code in _TRANSIENT):
            raise _counted(
                Unavailable(Reason.DETECTOR_UNAVAILABLE, f"Triton unavailable during {operation}")
            ) from exc
        if "INVALID_ARGUMENT" in status or "NOT_FOUND" in status:
            raise _counted(
                Internal(Reason.DETECTOR_ERROR, f"Triton refused {operation}: {exc.message()}")
            ) from exc
        raise _counted(
            Internal(Reason.DETECTOR_ERROR, f"Triton failed {operation}: {exc.message()}")
        ) from exc
    except SharedMemoryException as exc:
        raise _counted(
            Internal(Reason.DETECTOR_ERROR, f"shared memory for {operation} failed: {exc}")
        ) from exc
    except (OSError, TimeoutError) as exc:
        raise _counted(
            Unavailable(Reason.DETECTOR_UNAVAILABLE, f"Triton unreachable during {operation}")
        ) from exc


def _counted(error: VidscanError) -> VidscanError:
    metrics.TRITON_ERRORS.labels(reason_name(error.reason)).inc()
    return error


class TritonDetector:
    def __init__(self, *, options: TritonOptions, models: Sequence[str]) -> None:
        self._options = options
        self._models = tuple(models)
        self._client: triton.InferenceServerClient | None = None
        self._contracts: dict[str, ModelContract] = {}
        self._shared_memory = shm.wanted(options.shared_memory, options.url)

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
        if self._shared_memory:
            await self._forget_orphaned_regions()

    async def _forget_orphaned_regions(self) -> None:
        """Unregisters frame regions whose /dev/shm object is gone: a process killed
        mid-analysis (its resource tracker unlinks the object, Triton keeps the
        mapping). A live region always has its object: it is unlinked only after it
        was unregistered."""
        client = self._get_client()
        timeout = self._options.metadata_timeout_seconds
        status: dict[str, Any] = await self._retry(
            "shared-memory status",
            lambda: client.get_system_shared_memory_status(as_json=True, client_timeout=timeout),
        )
        for region in status.get("regions", {}).values():
            name = str(region.get("name", ""))
            if name.startswith(shm.PREFIX) and not shm.exists(name):
                log.warning("unregistering orphaned frame region %s", name)
                await _unregister(client, name, timeout)

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

    @property
    def shared_memory(self) -> bool:
        """Whether frames should go through shared memory (config, and not refused)."""
        return self._shared_memory

    @contextlib.asynccontextmanager
    async def frame_region(self, byte_size: int) -> AsyncIterator[shm.FrameRegion | None]:
        """A shared-memory region registered with Triton for one analysis, removed
        (unregistered, unlinked) however the block ends. None, and the caller sends
        the frames in the request, when /dev/shm has no room (this analysis only) or
        when Triton cannot map the region in ``auto`` mode (another host after all:
        shared memory is then off for this process)."""
        try:
            region, handle = shm.create(byte_size)
        except (SharedMemoryException, OSError) as exc:
            log.warning("no frame region (%s); sending frames inline", exc)
            region, handle = None, None
        if region is None:
            yield None
            return
        try:
            if not await self._register(region):
                yield None
                return
            try:
                yield region
            finally:
                await _unregister(
                    self._get_client(), region.name, self._options.metadata_timeout_seconds
                )
        finally:
            shm.destroy(handle)

    async def _register(self, region: shm.FrameRegion) -> bool:
        client = self._get_client()
        timeout = self._options.metadata_timeout_seconds
        try:
            await self._retry(
                "registering a frame region",
                lambda: client.register_system_shared_memory(
                    region.name, region.key, region.byte_size, client_timeout=timeout
                ),
            )
        except Internal as exc:
            if self._options.shared_memory != "auto":
                raise
            log.warning("Triton cannot map shared memory; sending frames inline: %s", exc)
            self._shared_memory = False
            return False
        return True

    async def infer_region(self, model: str, region: shm.FrameRegion, *, frames: int) -> Inference:
        """Like ``infer`` for ``frames`` frames the media worker wrote into ``region``."""
        contract = self.contract(model)
        if frames * contract.frame_bytes > region.byte_size:
            raise Internal(Reason.DETECTOR_ERROR, f"{frames} frames do not fit the frame region")

        def tensor(start: int, stop: int) -> Any:
            item = triton.InferInput(
                contract.input_name, [stop - start, *contract.shape], contract.datatype
            )
            item.set_shared_memory(
                region.name,
                (stop - start) * contract.frame_bytes,
                offset=start * contract.frame_bytes,
            )
            return item

        return await self._infer(model, contract, frames, tensor)

    async def infer(self, model: str, frames: np.ndarray) -> Inference:
        """Per-frame fake probabilities (and a face model's faces). Frames go in as few
        requests as the model's max batch size allows (all of them in one when they fit)."""
        contract = self.contract(model)

        def tensor(start: int, stop: int) -> Any:
            batch = np.ascontiguousarray(frames[start:stop])
            item = triton.InferInput(contract.input_name, list(batch.shape), contract.datatype)
            item.set_data_from_numpy(batch)
            return item

        return await self._infer(model, contract, len(frames), tensor)

    async def _infer(
        self,
        model: str,
        contract: ModelContract,
        count: int,
        make_input: Callable[[int, int], Any],
    ) -> Inference:
        client = self._get_client()
        names = (contract.output_name, *(faces.OUTPUTS if contract.faces else ()))
        scores: list[float] = []
        face_batches: list[dict[str, np.ndarray]] = []
        for start in range(0, count, contract.max_batch_size):
            tensor = make_input(start, min(count, start + contract.max_batch_size))
            outputs = [triton.InferRequestedOutput(name) for name in names]

            async def call(t: Any = tensor, o: Any = outputs) -> Any:
                return await client.infer(
                    model,
                    [t],
                    outputs=o,
                    client_timeout=self._options.timeout_seconds,
                    headers=tracing.headers(),  # W3C traceparent: Triton can join the trace
                )

            with tracing.span(
                f"Triton infer {model}",
                {"rpc.system": "grpc", "vidscan.model": model, "vidscan.frames": count},
                kind=SpanKind.CLIENT,
            ):
                result = await self._retry(f"inference on {model}", call)
            answered = {name: result.as_numpy(name) for name in names}
            missing = [name for name, values in answered.items() if values is None]
            if missing:
                raise Internal(Reason.DETECTOR_ERROR, f"{model} returned no {', '.join(missing)}")
            values = answered[contract.output_name]
            scores.extend(float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1))
            if contract.faces:
                face_batches.append({name: np.asarray(answered[name]) for name in faces.OUTPUTS})
        found = faces.FaceTensors.concatenate(model, face_batches) if contract.faces else None
        return Inference(scores=scores, faces=found)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


# Triton answers "currently in use" for a moment after an inference that read the
# region has returned (its backend releases the mapping afterwards): retried.
_IN_USE_RETRIES_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)


async def _unregister(client: Any, name: str, wait_seconds: float) -> None:
    """Triton forgets the region; shielded so that a cancelled analysis still does
    it. A failure is logged: Triton then maps an unlinked object until it restarts
    (or the orphan sweep at the next start forgets it)."""
    call = asyncio.ensure_future(_unregister_when_free(client, name, wait_seconds))
    try:
        await asyncio.shield(call)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(call, wait_seconds + sum(_IN_USE_RETRIES_S))
        raise
    except (Unavailable, Internal) as exc:
        log.warning("frame region %s not unregistered: %s", name, exc.message)


async def _unregister_when_free(client: Any, name: str, wait_seconds: float) -> None:
    for pause in (*_IN_USE_RETRIES_S, None):
        try:
            with map_triton_errors("unregistering a frame region"):
                await client.unregister_system_shared_memory(name, client_timeout=wait_seconds)
            return
        except Internal as exc:
            if pause is None or "in use" not in exc.message:
                raise
            await asyncio.sleep(pause)
