"""When the OTEL_* variables turn tracing on (pure logic: server/tracing.py:choice)."""

from __future__ import annotations

import pytest

from server.tracing import TracingChoice, choice

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, TracingChoice((), "grpc")),  # off by default
        (ENDPOINT, TracingChoice(("otlp",), "grpc")),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://h:4318/v1/traces"},
            TracingChoice(("otlp",), "grpc"),
        ),
        ({"OTEL_TRACES_EXPORTER": "console"}, TracingChoice(("console",), "grpc")),
        (
            {"OTEL_TRACES_EXPORTER": "otlp, console,otlp"},
            TracingChoice(("otlp", "console"), "grpc"),
        ),
        ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, TracingChoice((), "grpc")),
        ({**ENDPOINT, "OTEL_SDK_DISABLED": "TRUE"}, TracingChoice((), "grpc")),
        ({**ENDPOINT, "OTEL_SDK_DISABLED": "false"}, TracingChoice(("otlp",), "grpc")),
        (
            {**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            TracingChoice(("otlp",), "http/protobuf"),
        ),
        (
            {
                **ENDPOINT,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
            },
            TracingChoice(("otlp",), "grpc"),
        ),
    ],
)
def test_choice(env: dict[str, str], expected: TracingChoice) -> None:
    assert choice(env) == expected
    assert choice(env).enabled == bool(expected.exporters)


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_TRACES_EXPORTER": "zipkin"},
        {**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
    ],
)
def test_what_this_service_cannot_export_is_refused_at_start(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="OTEL_"):
        choice(env)
