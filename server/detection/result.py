"""The detection result, one typed message from the analyzer to the API.

The analyzer builds a ``vidscan.v1.Detection`` (a misnamed field fails at once),
the database keeps it as JSON with every field written out, and reading it back is
strict: an unknown or missing field is an error, never a silently empty value.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from vidscan.v1 import detection_pb2

from server.errors import Internal, Reason

FIELDS = frozenset(f.name for f in detection_pb2.Detection.DESCRIPTOR.fields)
# Fields added after results were first stored: older documents may lack them.
ADDED_LATER = frozenset(
    {
        "frame_times",
        "frame_policy",
        # faces (issue 16): absent from whole-frame results stored before
        "outcome",
        "outcome_reason",
        "face_detector",
        "frames_with_faces",
        "faces_analyzed",
        "faces",
        "face_margin",
        "face_detection_ms",
        "face_classification_ms",
    }
)


def to_document(message: detection_pb2.Detection) -> dict[str, Any]:
    document: dict[str, Any] = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return document


def from_document(document: dict[str, Any]) -> detection_pb2.Detection:
    missing = FIELDS - ADDED_LATER - set(document)
    if missing:
        raise Internal(
            Reason.INTERNAL, f"stored detection result lacks {', '.join(sorted(missing))}"
        )
    message = detection_pb2.Detection()
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise Internal(Reason.INTERNAL, f"stored detection result is malformed: {exc}") from exc
    return message
