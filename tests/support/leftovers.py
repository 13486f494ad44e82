"""What the server holds for one user after an upload path ran: S3 multipart uploads
and objects under the user's prefix, video rows, quota reservations and the quota
left. A refused or cancelled upload must leave ``nothing_left``."""

from __future__ import annotations

from typing import Any, Protocol

from server.config import Settings
from server.storage.s3 import S3ObjectStore


class Scalar(Protocol):
    async def scalar(self, sql: str, **params: Any) -> Any: ...


async def leftovers(user: str, s3: S3ObjectStore, db: Scalar) -> dict[str, Any]:
    """What the server holds for ``user``: S3 uploads/objects, rows, reservations."""
    prefix = f"dashboard-uploads/{user}/"
    return {
        "multipart": len(await s3.list_multipart(prefix=prefix)),
        "objects": len(await s3.list_keys(prefix=prefix)),
        "videos": await db.scalar("select count(*) from videos where user_id = :u", u=user),
        "reservations": await db.scalar(
            "select count(*) from quota_reservations where user_id = :u", u=user
        ),
        "remaining": await db.scalar(
            "select remaining from user_quotas where user_id = :u", u=user
        ),
    }


class Served(Protocol):
    @property
    def settings(self) -> Settings: ...


def nothing_left(running: Served) -> dict[str, Any]:
    return {
        "multipart": 0,
        "objects": 0,
        "videos": 0,
        "reservations": 0,
        "remaining": running.settings.default_upload_quota,
    }
