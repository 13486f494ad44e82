"""Server-side names: object keys from ids only, display filenames sanitised."""

from __future__ import annotations

import unicodedata

MAX_FILENAME_CHARS = 255
OBJECT_PREFIX = "dashboard-uploads"


def object_key(*, user_id: str, video_id: str, extension: str) -> str:
    """``dashboard-uploads/{user_id}/{video_id}.{ext}``; nothing comes from the client
    but the authenticated user id, which is escaped so it cannot add path segments."""
    safe_user = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in user_id) or "_"
    if safe_user in {".", ".."}:
        safe_user = "_"
    return f"{OBJECT_PREFIX}/{safe_user}/{video_id}.{extension}"


def display_filename(raw: str, *, fallback: str) -> str:
    """The client's filename reduced to something safe to store and show: last path
    segment, NFC, no control characters, at most 255 characters."""
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    name = name.lstrip(".") or fallback
    return name[:MAX_FILENAME_CHARS]
