"""SHA-256 whose running state can be saved and restored, for resumable uploads.

``hashlib`` cannot export its state, and the ``rehash`` package refuses OpenSSL 3, so
this calls OpenSSL's SHA256_Init/Update/Final through ctypes (deprecated in OpenSSL 3
but exported and stable) on a ``SHA256_CTX`` we own: 112 bytes that can be stored next
to the upload's parts and loaded by any replica. Speed is OpenSSL's, like hashlib.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
from functools import cache

_CTX_BYTES = 112  # sizeof(SHA256_CTX): 8 words of state, Nl, Nh, 16 words of data, num, md_len


@cache
def _libcrypto() -> ctypes.CDLL:
    name = ctypes.util.find_library("crypto") or "libcrypto.so.3"
    lib = ctypes.CDLL(name)
    for fn in (lib.SHA256_Init, lib.SHA256_Update, lib.SHA256_Final):
        fn.restype = ctypes.c_int
    lib.SHA256_Init.argtypes = [ctypes.c_void_p]
    lib.SHA256_Update.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.SHA256_Final.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    return lib


class ResumableSha256:
    def __init__(self, state: bytes | None = None) -> None:
        self._ctx = ctypes.create_string_buffer(_CTX_BYTES)
        if state is None:
            if _libcrypto().SHA256_Init(self._ctx) != 1:
                raise RuntimeError("SHA256_Init failed")
        else:
            if len(state) != _CTX_BYTES:
                raise ValueError("not a saved SHA-256 state")
            ctypes.memmove(self._ctx, state, _CTX_BYTES)

    def update(self, data: bytes) -> None:
        if data and _libcrypto().SHA256_Update(self._ctx, data, len(data)) != 1:
            raise RuntimeError("SHA256_Update failed")

    def state(self) -> bytes:
        """The running state; ``ResumableSha256(state)`` continues from here."""
        return self._ctx.raw

    def copy(self) -> ResumableSha256:
        return ResumableSha256(self.state())

    def hexdigest(self) -> str:
        digest = ctypes.create_string_buffer(32)
        ctx = self.copy()._ctx  # finalising destroys the context; keep ours usable
        if _libcrypto().SHA256_Final(digest, ctx) != 1:
            raise RuntimeError("SHA256_Final failed")
        return digest.raw.hex()


def self_check() -> None:
    """Fails loudly at start if the OpenSSL binding disagrees with hashlib."""
    hasher = ResumableSha256()
    hasher.update(b"vidscan ")
    resumed = ResumableSha256(hasher.state())
    resumed.update(b"resumes")
    if resumed.hexdigest() != hashlib.sha256(b"vidscan resumes").hexdigest():
        raise RuntimeError("the resumable SHA-256 disagrees with hashlib")
