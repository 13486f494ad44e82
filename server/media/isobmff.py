"""An incremental walker over the top-level boxes of an MP4/MOV stream.

It sees every byte once, keeps no payload, and answers two questions while the
upload streams: is the box structure sane (garbage after a valid `ftyp` is refused
at once), and has the complete `moov` box (the header PyAV needs) arrived yet, and
did the media data (`mdat`) come before it?
"""

from __future__ import annotations

import struct


class BoxStructureError(ValueError):
    pass


class TopLevelBoxWalker:
    def __init__(self) -> None:
        self._received = 0
        self._box_start = 0  # absolute offset of the box whose header is being read
        self._header = b""  # header bytes collected so far (8, or 16 for 64-bit sizes)
        self._skip = 0  # payload bytes of the current box still to pass over
        self._to_end = False  # a size-0 box runs to the end of the file
        self.moov_end: int | None = None
        # An `mdat` box (the samples) began before `moov` did: the header comes last,
        # as most encoders write it, so once it is in, so is the media.
        self.media_before_header = False

    def feed(self, data: bytes) -> None:
        self._received += len(data)
        pos, end = 0, len(data)
        while pos < end and not self._to_end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            want = 16 if len(self._header) >= 8 and self._is_large() else 8
            step = min(want - len(self._header), end - pos)
            self._header += data[pos : pos + step]
            pos += step
            if len(self._header) == 8 and self._is_large():
                continue
            if len(self._header) in (8, 16):
                self._open_box()

    def _is_large(self) -> bool:
        size: int = struct.unpack(">I", self._header[:4])[0]
        return size == 1

    def _open_box(self) -> None:
        size, box_type = struct.unpack(">I4s", self._header[:8])
        if not all(0x20 <= c <= 0x7E for c in box_type):
            raise BoxStructureError(f"invalid box type at offset {self._box_start}")
        if size == 1:
            size = struct.unpack(">Q", self._header[8:16])[0]
        if size == 0:
            self._to_end = True
            return
        if size < len(self._header):
            raise BoxStructureError(f"invalid box size {size} at offset {self._box_start}")
        if box_type == b"moov" and self.moov_end is None:
            self.moov_end = self._box_start + size
        elif box_type == b"mdat" and self.moov_end is None:
            self.media_before_header = True
        self._skip = size - len(self._header)
        self._box_start += size
        self._header = b""

    def finish(self) -> None:
        """Checks that the stream did not end inside a box (a truncated file)."""
        if self._to_end:
            return
        if self._header or self._skip:
            raise BoxStructureError("the file ends inside a box")

    @property
    def header_complete(self) -> bool:
        """True once a `moov` box has been received in full."""
        return self.moov_end is not None and self._received >= self.moov_end
