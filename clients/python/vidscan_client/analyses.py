"""What waiting for an analysis means, shared by the sync and asyncio clients.

An analysis is final once ANALYZED or FAILED. ``settle`` folds a final analysis into
the UploadResult that answered PROCESSING, so ``vidscan upload --wait`` prints what
the server would have answered had its own wait budget been long enough.
"""

from __future__ import annotations

from vidscan_client.protos import analysis_pb2, upload_pb2

__all__ = ["FINAL_STATUSES", "is_final", "settle"]

FINAL_STATUSES = frozenset(
    {analysis_pb2.ANALYSIS_STATUS_ANALYZED, analysis_pb2.ANALYSIS_STATUS_FAILED}
)


def is_final(analysis: analysis_pb2.Analysis) -> bool:
    return analysis.status in FINAL_STATUSES


def settle(
    result: upload_pb2.UploadResult, analysis: analysis_pb2.Analysis
) -> upload_pb2.UploadResult:
    """A copy of ``result`` with the final ``analysis`` in it, as the server writes
    an analysed or failed UploadResult (status, verdict and its mirrors; no
    ``processing_time``, which only the server can measure). Unchanged while the
    analysis is not final."""
    settled = upload_pb2.UploadResult()
    settled.CopyFrom(result)
    if analysis.status == analysis_pb2.ANALYSIS_STATUS_ANALYZED:
        settled.upload_status = upload_pb2.UPLOAD_STATUS_ANALYZED
        settled.estimated_processing_time = 0
        settled.detection_result.CopyFrom(analysis.detection)
        settled.confidence_score = analysis.detection.confidence
        settled.is_fake = analysis.detection.is_fake
    elif analysis.status == analysis_pb2.ANALYSIS_STATUS_FAILED:
        settled.upload_status = upload_pb2.UPLOAD_STATUS_ANALYSIS_FAILED
        settled.estimated_processing_time = 0
    return settled
