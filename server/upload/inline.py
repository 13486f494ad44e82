"""How much data is worth a thread.

Hashing and spool writes of large pieces go to a thread (libcrypto and file writes
release the GIL, so the event loop goes on receiving meanwhile). For small pieces
the hand-over costs more than the work: a thread wake-up, a loop wake-up for the
result and GIL traffic, against ~20 us to hash or write 64 KiB. A small upload (a
clip sent in one message) is hashed and spooled on the loop.
"""

from __future__ import annotations

INLINE_BYTES = 64 * 1024
