"""Inputs that must be refused: made on the fly, never committed."""

from __future__ import annotations

import os
import struct
import zlib


def png_image(width: int = 64, height: int = 48) -> bytes:
    """A real, valid PNG (an image, not a video)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    rows = b"".join(b"\x00" + bytes([x % 256, 0, 0] * width) for x in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def random_bytes(size: int) -> bytes:
    return os.urandom(size)


def garbage_after_ftyp(size: int) -> bytes:
    """A valid-looking `ftyp` box followed by noise: claims MP4, is not."""
    ftyp = struct.pack(">I4s4sI4s4s", 24, b"ftyp", b"isom", 512, b"isom", b"mp41")
    return ftyp + b"\xff" * 8 + os.urandom(size - len(ftyp) - 8)
