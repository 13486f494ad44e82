"""What an interrupted upload has durably stored, so any replica can continue it.

Saved in the session (Redis or memory) after every S3 part completes, and once more
with the tail (the bytes after the last full part, kept as a temporary object, as
tusd keeps its `.part` object) when a stream ends without finishing. The SHA-256
state travels with it (see ``resumable_hash``), so the bytes are never read again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from enum import StrEnum

from server.media.messages import VideoInfo, from_dict, to_dict
from server.storage.port import UploadedPart


class UploadStage(StrEnum):
    """Where an upload stands. RECEIVING: bytes still arrive. SEALED: every byte is
    in the multipart upload's parts (or in the object, stored whole), the size and
    SHA-256 are final, and the session is only waiting to be finished (assemble,
    validate, record); a crash from here on is resumed by a stream that sends no
    bytes, only finish_write."""

    RECEIVING = "receiving"
    SEALED = "sealed"


@dataclass(frozen=True)
class UploadProgress:
    video_id: str
    key: str
    upload_id: str
    container: str
    parts: tuple[UploadedPart, ...]
    hash_state: bytes  # SHA-256 state over every committed byte (parts, then tail)
    tail_key: str = ""
    tail_size: int = 0
    stage: UploadStage = UploadStage.RECEIVING
    file_hash: str = ""  # SEALED only: the final SHA-256
    # SEALED only: the media worker's verdict on the whole file, once it was given
    # (None until then: a resumed upload is validated after it is assembled).
    info: VideoInfo | None = None
    # The object was stored whole in one request (a file smaller than a part, all of
    # it received by one stream): no multipart upload (``upload_id`` is empty), and
    # ``parts`` is one pseudo-part, number 0, giving its size.
    whole: bool = False

    @property
    def committed(self) -> int:
        return sum(p.size for p in self.parts) + self.tail_size

    @property
    def sealed(self) -> bool:
        return self.stage is UploadStage.SEALED

    def seal(self, *, file_hash: str, info: VideoInfo | None) -> UploadProgress:
        if self.tail_size:
            raise ValueError("a sealed upload keeps every byte in its parts, not a tail")
        return replace(self, stage=UploadStage.SEALED, file_hash=file_hash, info=info)

    def validated(self, info: VideoInfo) -> UploadProgress:
        return replace(self, info=info)

    def to_json(self) -> str:
        return json.dumps(
            {
                "video_id": self.video_id,
                "key": self.key,
                "upload_id": self.upload_id,
                "container": self.container,
                "parts": [[p.number, p.etag, p.size] for p in self.parts],
                "hash_state": self.hash_state.hex(),
                "tail_key": self.tail_key,
                "tail_size": self.tail_size,
                "stage": self.stage.value,
                "file_hash": self.file_hash,
                "info": to_dict(self.info) if self.info is not None else None,
                "whole": self.whole,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> UploadProgress | None:
        if not text:
            return None
        data = json.loads(text)
        return cls(
            video_id=data["video_id"],
            key=data["key"],
            upload_id=data["upload_id"],
            container=data["container"],
            parts=tuple(UploadedPart(number=n, etag=e, size=s) for n, e, s in data["parts"]),
            hash_state=bytes.fromhex(data["hash_state"]),
            tail_key=data["tail_key"],
            tail_size=int(data["tail_size"]),
            stage=UploadStage(data.get("stage", UploadStage.RECEIVING.value)),
            file_hash=str(data.get("file_hash", "")),
            info=from_dict(VideoInfo, data["info"]) if data.get("info") else None,
            whole=bool(data.get("whole", False)),
        )


def tail_key(key: str) -> str:
    return key + ".tail"
