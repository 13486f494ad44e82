"""The event a final analysis announces, built from its record at delivery time.

Built from the database row on every attempt rather than carried in the job: the
job stays an id, and the body is the same bytes on each retry (the timestamp in it
is the analysis' completion, not the attempt's). Ids and the verdict only: no
tokens, no playback links (they expire; GetVideo makes a fresh one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from vidscan.v1 import detection_pb2

from server.detection.result import from_document
from server.records.model import AnalysisRecord, AnalysisStatus

COMPLETED = "analysis.completed"
FAILED = "analysis.failed"


@dataclass(frozen=True)
class WebhookEvent:
    message_id: str  # webhook-id: one per analysis, so every retry repeats it
    type: str
    body: bytes


def message_id(analysis_id: str) -> str:
    """An analysis becomes final once, so its id names the event."""
    return f"msg_{analysis_id}"


def analysis_event(analysis: AnalysisRecord) -> WebhookEvent:
    if not analysis.status.terminal:
        raise ValueError(f"analysis {analysis.id} is {analysis.status.value}, not final")
    analyzed = analysis.status is AnalysisStatus.ANALYZED
    data: dict[str, Any] = {
        "video_id": analysis.video_id,
        "analysis_id": analysis.id,
        "status": analysis.status.value,
        "model": analysis.model_name,
    }
    if analyzed and analysis.result is not None:
        detection = from_document(dict(analysis.result))
        judged = detection.outcome != detection_pb2.DETECTION_OUTCOME_NO_FACE_DETECTED
        data |= {
            # null when a face model found no face: nothing was judged
            "is_fake": detection.is_fake if judged else None,
            "confidence_score": detection.confidence if judged else None,
            "outcome": detection_pb2.DetectionOutcome.Name(detection.outcome),
            "threshold": detection.threshold,
            "model_version": detection.model_version,
            "frames_analyzed": detection.frames_analyzed,
        }
    else:
        data |= {"failure_reason": analysis.failure_reason}
    moment = analysis.completed_at or analysis.created_at
    document = {
        "type": COMPLETED if analyzed else FAILED,
        "timestamp": moment.isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    return WebhookEvent(
        message_id=message_id(analysis.id),
        type=str(document["type"]),
        body=json.dumps(document, separators=(",", ":"), sort_keys=True).encode(),
    )
