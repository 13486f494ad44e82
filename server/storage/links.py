"""Playable URLs for stored videos (``s3_url`` in UploadResult and Video).

A browser must be able to open the URL, and it must never name a server path:
- S3 (or MinIO): a presigned GET URL, valid ``expires_seconds``, with the video's
  content type and an inline disposition, signed for the endpoint browsers reach
  (``S3_PUBLIC_ENDPOINT_URL``, else ``S3_ENDPOINT_URL``). Signing is local
  arithmetic (SigV4 query string): no request leaves the server.
- The embedded filesystem store has no URL of its own: the gateway serves the bytes
  at ``GET /v1/videos/{video_id}/content`` (ContentService, HTTP ranges; with the
  caller's token, or signed query parameters valid ``expires_seconds``), and that
  path, signed -- under ``VIDSCAN_PUBLIC_BASE_URL`` when set -- is the URL.
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import quote, urlencode

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError

from server.errors import Internal, Reason
from server.records.model import VideoRecord
from server.storage.signing import LinkSigner


class PlaybackLinks(Protocol):
    def playback_url(self, video: VideoRecord) -> str: ...


def content_path(video_id: str) -> str:
    return f"/v1/videos/{video_id}/content"


class ContentRouteLinks:
    """The gateway's content route for each video (embedded store), signed so that
    it plays without a token (server/storage/signing.py)."""

    def __init__(self, *, signer: LinkSigner, expires_seconds: int, base_url: str = "") -> None:
        self._signer = signer
        self._expires = expires_seconds
        self._base = base_url.rstrip("/")

    def playback_url(self, video: VideoRecord) -> str:
        link = self._signer.sign(
            user_id=video.user_id, video_id=video.id, lifetime_seconds=self._expires
        )
        query = urlencode(
            {"user": link.user_id, "expires": link.expires, "signature": link.signature}
        )
        return f"{self._base}{content_path(video.id)}?{query}"


def inline_disposition(video: VideoRecord) -> str:
    """``inline`` with the original file name: ASCII fallback plus RFC 8187 UTF-8."""
    name = video.filename or f"{video.id}.{video.format}"
    fallback = "".join(c for c in name if c.isascii() and c.isprintable() and c not in '"\\')
    return f"inline; filename=\"{fallback or video.id}\"; filename*=UTF-8''{quote(name, safe='')}"


class PresignedLinks:
    """Presigned S3 GET URLs, one per call (each valid for ``expires_seconds``)."""

    def __init__(
        self,
        *,
        endpoint_url: str,
        bucket: str,
        region: str,
        access_key_id: str,
        secret_access_key: str,
        expires_seconds: int,
    ) -> None:
        self._bucket = bucket
        self._expires = expires_seconds
        self._client: Any = botocore.session.get_session().create_client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region,
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def playback_url(self, video: VideoRecord) -> str:
        params = {
            "Bucket": self._bucket,
            "Key": video.s3_key,
            "ResponseContentType": video.content_type or "application/octet-stream",
            "ResponseContentDisposition": inline_disposition(video),
        }
        try:
            url: str = self._client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=self._expires
            )
        except BotoCoreError as exc:  # a credential problem, say
            raise Internal(Reason.STORAGE_ERROR, "could not sign the playback URL") from exc
        return url
