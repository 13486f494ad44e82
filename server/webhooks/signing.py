"""Standard Webhooks signatures (https://www.standardwebhooks.com).

Each request carries ``webhook-id`` (the same on every retry of one event, so the
receiver can drop repeats), ``webhook-timestamp`` (seconds since the epoch, of this
attempt: receivers refuse stale ones) and ``webhook-signature``: ``v1,`` and the
base64 HMAC-SHA256 of ``"{id}.{timestamp}.{body}"`` under the secret's bytes. The
secret is configured as ``whsec_`` + base64 (VIDSCAN_WEBHOOK_SECRET), the form the
spec's libraries read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
# The spec asks for 24 to 64 random bytes.
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


def parse_secret(text: str) -> bytes:
    """The key bytes of a ``whsec_<base64>`` secret; raises ValueError."""
    if not text.startswith(SECRET_PREFIX):
        raise ValueError(f"the webhook secret must start with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(text[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error as exc:
        raise ValueError("the webhook secret is not valid base64 after 'whsec_'") from exc
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"the webhook secret must hold {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes"
        )
    return key


class WebhookSigner:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def from_secret(cls, text: str) -> WebhookSigner:
        return cls(parse_secret(text))

    def signature(self, *, message_id: str, timestamp: int, body: bytes) -> str:
        signed = f"{message_id}.{timestamp}.".encode() + body
        digest = hmac.new(self._key, signed, hashlib.sha256).digest()
        return "v1," + base64.b64encode(digest).decode()

    def headers(self, *, message_id: str, timestamp: int, body: bytes) -> Mapping[str, str]:
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": self.signature(
                message_id=message_id, timestamp=timestamp, body=body
            ),
        }
