"""The reasons are defined once, as vidscan.v1.ErrorReason: every value must have a
mapping in the server (its error class, hence its gRPC code), in the gateway (its
HTTP status) and in the client (what it does next), and the three must agree.

These read the real tables (the server's and the client's modules, the gateway's Go
source) rather than a copy of them, so adding a proto value without its mappings, or
pairing a reason with another class at a raise site, fails here.
"""

from __future__ import annotations

import ast
import re
from http import HTTPStatus
from pathlib import Path

import grpc
import pytest
from vidscan.v1 import errors_pb2
from vidscan.v1.errors_pb2 import ErrorReason
from vidscan_client import errors as client_errors
from vidscan_client.protos import errors_pb2 as client_errors_pb2

from server import errors
from server.errors import (
    ERROR_CLASSES,
    GATEWAY_REASONS,
    LimitExceeded,
    Reason,
    VidscanError,
    reason_from_name,
    reason_name,
)

ROOT = Path(__file__).resolve().parent.parent
GATEWAY_TABLE = ROOT / "gateway" / "internal" / "apierr" / "apierr.go"

UNSPECIFIED = Reason.ERROR_REASON_UNSPECIFIED
ALL_REASONS = frozenset(
    reason_from_name(v.name, UNSPECIFIED)
    for v in errors_pb2.ErrorReason.DESCRIPTOR.values
    if v.number != UNSPECIFIED
)

# grpc-gateway v2's runtime.HTTPStatusFromCode, the mapping the gateway starts from.
GRPC_GATEWAY_HTTP = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}
# Where the gateway deliberately differs from that mapping (see apierr.go).
HTTP_EXCEPTIONS = {
    Reason.FILE_TOO_LARGE: 413,
    Reason.STORAGE_FULL: 507,
    Reason.RANGE_NOT_SATISFIABLE: 416,
}


def _go_status(expr: str) -> int:
    if expr.isdigit():
        return int(expr)
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", expr.removeprefix("http.Status")).upper()
    return int(HTTPStatus[name])


def gateway_http_statuses() -> dict[ErrorReason, int]:
    """The gateway's reasonHTTPStatus map, read from its Go source."""
    source = GATEWAY_TABLE.read_text()
    body = source[source.index("var reasonHTTPStatus") :]
    body = body[: body.index("\n}\n")]
    entries = re.findall(r"vidscanv1\.ErrorReason_([A-Z_]+):\s+(http\.Status\w+|\d+)", body)
    assert entries, "reasonHTTPStatus not found in apierr.go"
    table = {reason_from_name(name, UNSPECIFIED): _go_status(expr) for name, expr in entries}
    assert len(table) == len(entries), "a reason appears twice in reasonHTTPStatus"
    return table


def test_the_server_and_the_client_share_one_proto_enum() -> None:
    assert Reason is errors_pb2.ErrorReason
    assert client_errors_pb2.ErrorReason.DESCRIPTOR.full_name == "vidscan.v1.ErrorReason"
    server_values = [(v.name, v.number) for v in errors_pb2.ErrorReason.DESCRIPTOR.values]
    client_values = [(v.name, v.number) for v in client_errors_pb2.ErrorReason.DESCRIPTOR.values]
    assert server_values == client_values, "the client's stubs are stale: run make proto"
    assert reason_name(Reason.FILE_TOO_LARGE) == "FILE_TOO_LARGE"


def test_every_reason_is_the_servers_or_the_gateways() -> None:
    server = set(ERROR_CLASSES)
    assert not server & GATEWAY_REASONS
    missing = ALL_REASONS - server - GATEWAY_REASONS
    assert not missing, f"reasons without an error class: {sorted(map(reason_name, missing))}"
    for reason, cls in ERROR_CLASSES.items():
        assert issubclass(cls, VidscanError), reason_name(reason)


def _error_classes() -> dict[str, type[VidscanError]]:
    return {
        name: obj
        for name, obj in vars(errors).items()
        if isinstance(obj, type) and issubclass(obj, VidscanError)
    }


def test_every_raise_site_pairs_its_reason_with_the_tables_class() -> None:
    classes = _error_classes()
    checked = 0
    mismatched: list[str] = []
    for path in sorted((ROOT / "server").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in classes
                and node.args
                and isinstance(node.args[0], ast.Attribute)
                and isinstance(node.args[0].value, ast.Name)
                and node.args[0].value.id == "Reason"
            ):
                continue
            cls = classes[node.func.id]
            reason = reason_from_name(node.args[0].attr, UNSPECIFIED)
            checked += 1
            expected = ERROR_CLASSES.get(reason)
            if expected is None or cls.code != expected.code:
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                mismatched.append(f"{where}: {cls.__name__}({node.args[0].attr})")
    assert checked > 50, f"only {checked} raise sites found: is the scan still right?"
    assert not mismatched, mismatched


@pytest.mark.parametrize("reason", sorted(ALL_REASONS), ids=reason_name)
def test_the_gateway_has_an_http_status_that_agrees_with_the_code(reason: ErrorReason) -> None:
    statuses = gateway_http_statuses()
    assert reason in statuses, f"{reason_name(reason)} has no HTTP status in apierr.go"
    status = statuses[reason]
    if reason in GATEWAY_REASONS:
        assert 400 <= status < 500, "the gateway's own refusals are client errors"
        return
    expected = HTTP_EXCEPTIONS.get(reason, GRPC_GATEWAY_HTTP[ERROR_CLASSES[reason].code])
    assert status == expected


def test_the_gateway_has_no_status_for_unspecified() -> None:
    assert UNSPECIFIED not in gateway_http_statuses()


def test_the_gateway_sends_reasons_only_from_the_generated_enum() -> None:
    literals: list[str] = []
    for path in (ROOT / "gateway" / "internal").rglob("*.go"):
        if path.name.endswith("_test.go"):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r'Reason:\s*"|e\.Reason\s*=\s*"', line):
                literals.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not literals, literals


@pytest.mark.parametrize("reason", sorted(ALL_REASONS), ids=reason_name)
def test_the_client_knows_what_to_do_after_every_reason(reason: ErrorReason) -> None:
    recovery = client_errors.RECOVERY.get(reason)
    assert recovery is not None, f"{reason_name(reason)} has no entry in the client's RECOVERY"
    if reason in GATEWAY_REASONS:
        return
    code = ERROR_CLASSES[reason].code
    if code == grpc.StatusCode.UNAVAILABLE:
        assert recovery is client_errors.Recovery.RETRY, "UNAVAILABLE is always retried"
    if recovery is client_errors.Recovery.RETRY:
        # Retrying a refusal would only repeat it: only transient conditions retry
        # (an abuse limit frees up; the server says when, in RetryInfo).
        assert (
            code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)
            or reason in (Reason.UPLOAD_INCOMPLETE,)
            or ERROR_CLASSES[reason] is LimitExceeded
        )
    if recovery is client_errors.Recovery.RESUME_AT_OFFSET:
        assert code == grpc.StatusCode.OUT_OF_RANGE


def test_the_client_reports_an_unknown_reason_as_sent() -> None:
    error = client_errors.VidscanError(grpc.StatusCode.UNAVAILABLE, "SOMETHING_NEWER", "m")
    assert error.reason == "SOMETHING_NEWER"
    assert error.recovery is None
    assert error.transient  # the code decides for a reason this client does not know
