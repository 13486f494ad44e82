"""OpenTelemetry traces: off unless the standard ``OTEL_*`` variables turn them on.

Tracing is on in a process when ``OTEL_SDK_DISABLED`` is not ``true`` and either
``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``; ``none`` turns it
off) or an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``). Everything else -- endpoint, headers,
``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc``, the default, or ``http/protobuf``),
``OTEL_TRACES_SAMPLER``, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_PROPAGATORS`` -- is read by the OpenTelemetry SDK itself, as documented there.
The service name defaults to ``vidscan-server`` (``vidscan-worker`` for the worker).

What is traced (one trace per upload when the caller sends a W3C ``traceparent``,
as the gateway does): the gRPC server span (opentelemetry-instrumentation-grpc),
every SQL statement (opentelemetry-instrumentation-sqlalchemy), every S3 call
(``storage/s3.py``), every media worker job (``media/isolation.py``) and every
Triton inference request (``detection/triton.py``, which forwards ``traceparent`` so
a Triton started with ``--trace-config mode=opentelemetry`` joins the trace). Spans
carry ids only (user, session, video, analysis), never tokens or media bytes.

This module is the only one that touches the SDK; the others use ``span()``,
``annotate()``, ``headers()`` and ``trace_id()``, which cost next to nothing when
tracing is off (the API's non-recording spans).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import grpc
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, suppress_instrumentation
from opentelemetry.trace import Span, SpanKind

from server.errors import VidscanError, reason_name

log = logging.getLogger(__name__)

Attribute = str | int | float | bool
_tracer = trace.get_tracer("vidscan")
_EXPORTERS = ("otlp", "console")
_active = False


@dataclass(frozen=True)
class TracingChoice:
    """What the environment asks for: which exporters, over which OTLP protocol."""

    exporters: tuple[str, ...]
    protocol: str

    @property
    def enabled(self) -> bool:
        return bool(self.exporters)


def choice(env: Mapping[str, str]) -> TracingChoice:
    """The tracing the ``OTEL_*`` variables in ``env`` ask for (pure; raises
    ValueError on an exporter or protocol this service cannot provide)."""
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    ).strip()
    if protocol not in ("grpc", "http/protobuf"):
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use 'grpc' or 'http/protobuf'")
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return TracingChoice((), protocol)
    named = [e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()]
    if "none" in named:
        return TracingChoice((), protocol)
    unknown = [e for e in named if e not in _EXPORTERS]
    if unknown:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER={','.join(unknown)!r}: this service ships 'otlp' and 'console'"
        )
    if named:
        return TracingChoice(tuple(dict.fromkeys(named)), protocol)
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return TracingChoice(("otlp",), protocol)
    return TracingChoice((), protocol)


def configure(service_name: str, env: Mapping[str, str] | None = None) -> Callable[[], None]:
    """Installs this process's tracer provider when the environment asks for one;
    returns the function that flushes and stops it (a no-op when tracing is off)."""
    global _active
    env = os.environ if env is None else env
    wanted = choice(env)
    if not wanted.enabled:
        return lambda: None

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    named = env.get("OTEL_SERVICE_NAME") or "service.name=" in env.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    resource = Resource.create({} if named else {"service.name": service_name})
    provider = TracerProvider(resource=resource)  # sampler: OTEL_TRACES_SAMPLER
    for name in wanted.exporters:
        exporter: SpanExporter
        if name == "console":
            exporter = ConsoleSpanExporter()
        elif wanted.protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpExporter,
            )

            exporter = HttpExporter()
        else:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )

            exporter = GrpcExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _active = True
    log.info("tracing on: %s (%s)", ",".join(wanted.exporters), wanted.protocol)

    def shutdown() -> None:
        provider.shutdown()  # flushes what is batched

    return shutdown


def active() -> bool:
    """True once ``configure`` installed a provider in this process."""
    return _active


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """The gRPC server's tracing interceptor (empty when tracing is off). Health
    and reflection calls are not traced: probes would drown the real traces."""
    if not _active:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    quiet = filters.any_of(
        filters.service_prefix("grpc.health.v1"), filters.service_prefix("grpc.reflection")
    )
    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
        filter_=filters.negate(quiet)
    )
    return [interceptor]


def instrument_engine(sync_engine: object) -> None:
    """One span per SQL statement on this SQLAlchemy engine (when tracing is on).
    The instrumentor is per process: a serving process has one engine."""
    if not _active:
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    instrumentor = SQLAlchemyInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        log.warning("SQL tracing covers the first engine of this process only")
        return
    # The instrumentation declares sqlalchemy < 2.1; it only listens to the engine's
    # cursor events, which 2.1 keeps (tests/test_tracing.py checks the SQL spans).
    instrumentor.instrument(engine=sync_engine, enable_commenter=False, skip_dep_check=True)


@contextlib.contextmanager
def span(
    name: str,
    attributes: Mapping[str, Attribute] | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[Span]:
    """A child span of the current one; a vidscan error ending it is recorded with
    its stable reason (``vidscan.reason``) as well as the exception."""
    if not is_instrumentation_enabled():  # inside untraced()
        yield trace.INVALID_SPAN
        return
    with _tracer.start_as_current_span(name, kind=kind, attributes=attributes) as current:
        try:
            yield current
        except VidscanError as exc:
            current.set_attribute("vidscan.reason", reason_name(exc.reason))
            raise


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """No spans (ours or the instrumentations') for what runs inside, including the
    tasks started here: they copy this context."""
    with suppress_instrumentation():
        yield


def annotate(**ids: str) -> None:
    """Puts ids (``user_id=...``) on the current span as ``vidscan.<name>``."""
    current = trace.get_current_span()
    if current.is_recording():
        for key, value in ids.items():
            if value:
                current.set_attribute(f"vidscan.{key}", value)


def event(name: str, **attributes: Attribute) -> None:
    trace.get_current_span().add_event(name, attributes=attributes)


def headers() -> dict[str, str]:
    """The current trace context as W3C headers (``traceparent``), for a call out."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def trace_id() -> str | None:
    """The current trace id (32 hex digits), or None outside a sampled trace."""
    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else None
