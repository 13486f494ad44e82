"""Container sniffing from the first bytes of an upload (no decoding, no PyAV).

``sniff`` needs at most ``SNIFF_BYTES``; it names the container or refuses, so that
a non-video upload is refused after its first chunk.
"""

from __future__ import annotations

from enum import StrEnum

SNIFF_BYTES = 64

_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
# QuickTime files may open with one of these atoms instead of `ftyp`.
_QUICKTIME_FIRST_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip"}


class Container(StrEnum):
    MP4 = "mp4"
    MOV = "mov"
    MKV = "mkv"
    WEBM = "webm"
    AVI = "avi"

    @property
    def content_type(self) -> str:
        return _CONTENT_TYPES[self]


_CONTENT_TYPES = {
    Container.MP4: "video/mp4",
    Container.MOV: "video/quicktime",
    Container.MKV: "video/x-matroska",
    Container.WEBM: "video/webm",
    Container.AVI: "video/x-msvideo",
}


def sniff(head: bytes) -> Container | None:
    """The container the first bytes announce, or None if they announce none we take.

    ``head`` should hold ``SNIFF_BYTES`` bytes unless the whole file is shorter.
    """
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return Container.MOV if head[8:12] == b"qt  " else Container.MP4
    if len(head) >= 8 and head[4:8] in _QUICKTIME_FIRST_ATOMS:
        return Container.MOV
    if head.startswith(_EBML_MAGIC):
        if b"webm" in head[:SNIFF_BYTES]:
            return Container.WEBM
        if b"matroska" in head[:SNIFF_BYTES]:
            return Container.MKV
        return None
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return Container.AVI
    return None
