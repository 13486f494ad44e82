"""The step after a video is stored: choose the model, run or queue the analysis.

Without a detector configured (no TRITON_URL and no embedded Triton), the analysis
row stays PENDING and the upload answers PROCESSING; the video is safely stored and
an analysis worker can pick it up later.
"""

from __future__ import annotations

from collections.abc import Sequence

from server.db.models import AnalysisRow
from server.errors import InvalidUpload, Reason
from server.upload.pipeline import StoredUpload


class AnalysisStage:
    def __init__(self, *, allowed_models: Sequence[str], default_model: str) -> None:
        self._allowed = tuple(allowed_models)
        self._default = default_model

    def check_model(self, requested: str) -> str:
        """The model to use for a request, refusing names outside the allow-list."""
        if not requested:
            return self._default
        if requested not in self._allowed:
            raise InvalidUpload(
                Reason.MODEL_NOT_ALLOWED,
                f"model {requested!r} is not offered; choose one of {', '.join(self._allowed)}",
                metadata={"allowed_models": ",".join(self._allowed)},
            )
        return requested

    async def after_upload(self, stored: StoredUpload) -> AnalysisRow:
        stored.spool_path.unlink(missing_ok=True)
        return stored.analysis
