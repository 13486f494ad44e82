"""The gRPC server's interceptors, one concern each:

- ``RequestContext``: one log context and one access-log line per RPC. The request id
  is the client's ``x-request-id`` metadata (the gateway forwards its
  ``X-Request-Id``), or a new one; it is sent back as ``x-request-id`` *trailing*
  metadata so a caller can quote it. Not as initial metadata: headers sent early
  commit the call, and the client's channel could no longer retry it transparently
  (gRPC retries only calls that got no response headers). Health and reflection
  calls (probes, every few seconds) are logged at DEBUG only.
- ``RpcMetrics``: started / handled-by-code / latency per method (server/metrics.py).

Both wrap the method's behaviour (``Around``) so that they run inside the RPC's own
task, where its log context lives and its final status code is known.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

import grpc

from server import logs, metrics, tracing

log = logging.getLogger("vidscan.rpc")

REQUEST_ID = logs.REQUEST_ID_KEY
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_QUIET = ("/grpc.health.v1.", "/grpc.reflection.")

Context = grpc.aio.ServicerContext[Any, Any]
if TYPE_CHECKING:  # grpc's classes are generic in the stubs only
    Handler = grpc.RpcMethodHandler[Any, Any]
    Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]
    Around = Callable[[Context], AbstractAsyncContextManager[None]]

_KINDS: dict[str, tuple[Callable[..., Handler], bool]] = {
    "unary_unary": (grpc.unary_unary_rpc_method_handler, False),
    "stream_unary": (grpc.stream_unary_rpc_method_handler, False),
    "unary_stream": (grpc.unary_stream_rpc_method_handler, True),
    "stream_stream": (grpc.stream_stream_rpc_method_handler, True),
}


def rpc_type(handler: Handler) -> str:
    for kind in _KINDS:
        if getattr(handler, kind) is not None:
            return kind
    return "unknown"


def status_name(context: Context, failed: BaseException | None) -> str:
    """The status the RPC ended with (grpc.aio records aborts on the context)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
    return "OK" if failed is None else "UNKNOWN"


def wrap(handler: Handler, around: Around) -> Handler:
    """``handler`` with its behaviour run inside ``around(context)``."""
    for kind, (make, streaming) in _KINDS.items():
        behavior = getattr(handler, kind)
        if behavior is None:
            continue
        if streaming:

            async def streamed(
                request: Any, context: Context, b: Any = behavior
            ) -> AsyncIterator[Any]:
                async with around(context):
                    async for response in b(request, context):
                        yield response

            new = streamed
        else:

            async def unary(request: Any, context: Context, b: Any = behavior) -> Any:
                async with around(context):
                    return await b(request, context)

            new = unary  # type: ignore[assignment]
        return make(
            new,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


def request_id(metadata: Any) -> str:
    """The caller's request id when it is a sane token, else a new one."""
    for key, value in metadata or ():
        if key == REQUEST_ID:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            if _VALID_ID.match(text):
                return text
    return uuid.uuid4().hex


class RequestContext(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = str(handler_call_details.method)
        rid = request_id(handler_call_details.invocation_metadata)
        level = logging.DEBUG if method.startswith(_QUIET) else logging.INFO

        @asynccontextmanager
        async def around(context: Context) -> AsyncIterator[None]:
            with logs.scope(request_id=rid):
                tracing.annotate(request_id=rid)
                context.set_trailing_metadata(((REQUEST_ID, rid),))
                started = time.monotonic()
                failed: BaseException | None = None
                try:
                    yield
                except BaseException as exc:
                    failed = exc
                    raise
                finally:
                    name = status_name(context, failed)
                    elapsed_ms = (time.monotonic() - started) * 1000
                    log.log(
                        level,
                        "%s %s %.1f ms",
                        method,
                        name,
                        elapsed_ms,
                        extra={"rpc_method": method, "grpc_code": name},
                    )

        return wrap(handler, around)


class RpcMetrics(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        service, method = metrics.split_method(str(handler_call_details.method))
        labels = (service, method, rpc_type(handler))

        @asynccontextmanager
        async def around(context: Context) -> AsyncIterator[None]:
            metrics.RPC_STARTED.labels(*labels).inc()
            started = time.monotonic()
            failed: BaseException | None = None
            try:
                yield
            except BaseException as exc:
                failed = exc
                raise
            finally:
                metrics.RPC_SECONDS.labels(*labels).observe(time.monotonic() - started)
                metrics.RPC_HANDLED.labels(*labels, status_name(context, failed)).inc()

        return wrap(handler, around)
