"""Signed content links: the embedded store's answer to an S3 presigned URL.

A browser's ``<video src>`` sends no Authorization header, so the content route's URL
carries its own proof: ``?user=U&expires=T&signature=HMAC-SHA256(key, "U\\nV\\nT")``
for video V. The key is ``VIDSCAN_URL_SIGNING_KEY``, else derived from
``VIDSCAN_JWT_SECRET``; with the built-in development secret (the embedded default,
loopback only) it is random per process, so links die with the process.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from server.errors import Reason, Unauthenticated


@dataclass(frozen=True)
class SignedLink:
    user_id: str
    expires: int
    signature: str


class LinkSigner:
    def __init__(self, key: bytes, *, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._clock = clock

    @classmethod
    def for_secret(cls, secret: str | None) -> LinkSigner:
        """A signer keyed by ``secret`` (derived, so the JWT secret itself never
        signs links), or by a random key when there is none worth keeping."""
        if not secret:
            return cls(secrets.token_bytes(32))
        return cls(hmac.new(secret.encode(), b"vidscan content links", hashlib.sha256).digest())

    def _mac(self, user_id: str, video_id: str, expires: int) -> str:
        message = f"{user_id}\n{video_id}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign(self, *, user_id: str, video_id: str, lifetime_seconds: int) -> SignedLink:
        expires = int(self._clock()) + lifetime_seconds
        return SignedLink(user_id, expires, self._mac(user_id, video_id, expires))

    def verify(self, *, video_id: str, link: SignedLink) -> str:
        """The user the link was given to; UNAUTHENTICATED when forged or expired."""
        expected = self._mac(link.user_id, video_id, link.expires)
        if not hmac.compare_digest(expected, link.signature):
            raise Unauthenticated(Reason.UNAUTHENTICATED, "the content link's signature is invalid")
        if link.expires < self._clock():
            raise Unauthenticated(Reason.UNAUTHENTICATED, "the content link has expired")
        return link.user_id
