"""The gRPC edge of the error tree: VidscanError -> google.rpc.Status with details.

Details attached: ErrorInfo (stable reason, domain, metadata), BadRequest (field
violations), QuotaFailure, and vidscan.v1.CleanupReport (what was released).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from vidscan.v1 import errors_pb2

from server import logs, metrics
from server.errors import Internal, Reason, VidscanError, reason_name

log = logging.getLogger(__name__)

ERROR_DOMAIN = "vidscan.v1"

# Every UNAVAILABLE carries google.rpc.RetryInfo; this is its delay where the error
# names none (a backing service down, the server draining: retry soon, and for
# SHUTTING_DOWN on another replica).
DEFAULT_RETRY_AFTER_SECONDS = 1.0

P = ParamSpec("P")
R = TypeVar("R")


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_rpc_status(error: VidscanError) -> status_pb2.Status:
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=reason_name(error.reason), domain=ERROR_DOMAIN, metadata=error.metadata
            )
        )
    ]
    if error.field_violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in error.field_violations
                    ]
                )
            )
        )
    if error.quota_violations:
        details.append(
            _pack(
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(
                            subject=v.subject, description=v.description
                        )
                        for v in error.quota_violations
                    ]
                )
            )
        )
    retry_after = error.retry_after_seconds
    if retry_after is None and error.code == grpc.StatusCode.UNAVAILABLE:
        retry_after = DEFAULT_RETRY_AFTER_SECONDS
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(round(retry_after * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    if error.cleanup is not None:
        c = error.cleanup
        details.append(
            _pack(
                errors_pb2.CleanupReport(
                    cleanup_performed=c.performed,
                    s3_cleanup=c.s3_cleanup,
                    session_cleanup=c.session_cleanup,
                    database_cleanup=c.database_cleanup,
                    quota_released=c.quota_released,
                )
            )
        )
    code = error.code.value[0]
    assert code != code_pb2.UNKNOWN
    return status_pb2.Status(code=code, message=error.message, details=details)


def rpc_errors(
    method: Callable[P, Awaitable[R]],
) -> Callable[P, Awaitable[R]]:
    """Wraps a servicer method so that every failure leaves as a precise status.

    The last positional argument of a servicer method is its ServicerContext.
    """

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        context: grpc.aio.ServicerContext[Any, Any] = args[-1]  # type: ignore[assignment]
        try:
            return await method(*args, **kwargs)
        except VidscanError as error:
            failure = error
        except Exception:
            log.exception("unexpected error in %s", method.__name__)
            failure = Internal(Reason.INTERNAL, "internal error; see the server log")
        await _abort(context, method.__name__, failure)
        raise AssertionError("abort_with_status returned")  # pragma: no cover

    return wrapper


def rpc_stream_errors(
    method: Callable[P, AsyncIterator[R]],
) -> Callable[P, AsyncIterator[R]]:
    """``rpc_errors`` for a server-streaming method (an async generator): a failure
    after some messages were sent ends the stream with the same precise status."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[R]:
        context: grpc.aio.ServicerContext[Any, Any] = args[-1]  # type: ignore[assignment]
        try:
            async for message in method(*args, **kwargs):
                yield message
            return
        except VidscanError as error:
            failure = error
        except Exception:
            log.exception("unexpected error in %s", method.__name__)
            failure = Internal(Reason.INTERNAL, "internal error; see the server log")
        await _abort(context, method.__name__, failure)

    return wrapper


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any], method_name: str, failure: VidscanError
) -> None:
    metrics.ERRORS.labels(method_name, reason_name(failure.reason)).inc()
    status = rpc_status.to_status(to_rpc_status(failure))
    # The abort's trailers replace any set before: keep the request id in them.
    trailers = (*status.trailing_metadata, *logs.request_id_metadata())
    await context.abort(status.code, status.details, trailing_metadata=trailers)
