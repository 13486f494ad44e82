"""What an interrupted upload has durably stored, so any replica can continue it.

Saved in the session (Redis or memory) after every S3 part completes, and once more
with the tail (the bytes after the last full part, kept as a temporary object, as
tusd keeps its `.part` object) when a stream ends without finishing. The SHA-256
state travels with it (see ``resumable_hash``), so the bytes are never read again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from server.storage.port import UploadedPart


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

    @property
    def committed(self) -> int:
        return sum(p.size for p in self.parts) + self.tail_size

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
        )


def tail_key(key: str) -> str:
    return key + ".tail"
