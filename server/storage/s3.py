"""ObjectStore on S3 (or MinIO) through aiobotocore.

Depends only on the narrow set of S3 calls listed in ``_S3_CALLS``; every botocore
exception is translated in ``map_botocore_errors`` and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError
from opentelemetry.trace import SpanKind

from server import tracing
from server.errors import Internal, ObjectGone, Reason, Unavailable
from server.storage.port import PendingMultipart, StoredObject, UploadedPart, multipart_etag
from server.uncancellable import run_to_end

_S3_CALLS = [
    "head_bucket",
    "put_object",
    "create_bucket",
    "create_multipart_upload",
    "upload_part",
    "complete_multipart_upload",
    "abort_multipart_upload",
    "list_multipart_uploads",
    "delete_object",
    "head_object",
    "get_object",
    "list_objects_v2",
]

# How long a failed completion waits for a concurrent one to land before calling it
# an error (a completion takes milliseconds; this only covers a busy store).
_COMPLETION_SETTLE_S = (0.1, 0.3, 0.6, 1.0, 2.0)

_GONE_CODES = {"NoSuchUpload", "NoSuchKey", "NoSuchBucket", "404", "NotFound"}


def signs_payload(endpoint_url: str, setting: str) -> bool:
    """Whether SigV4 covers each request body with its SHA-256 (``x-amz-content-sha256``)
    or sends UNSIGNED-PAYLOAD. Deliberate, because botocore's own default costs a full
    SHA-256 pass over every part on the event loop whenever no checksum header is sent,
    over HTTPS too (and checksums are off: ``request_checksum_calculation``). Over
    HTTPS the bytes are guarded by TLS, so "auto" skips it there; over plain HTTP it
    is what keeps the body from being altered on the way. No endpoint: AWS, HTTPS."""
    if setting == "on":
        return True
    if setting == "off":
        return False
    return not (endpoint_url or "https://").lower().startswith("https://")


@contextlib.contextmanager
def map_botocore_errors(operation: str) -> Iterator[None]:
    """The one place where botocore's exceptions become vidscan errors (and, as every
    S3 call passes here, where each gets its trace span)."""
    with (
        tracing.span(
            f"S3 {operation}",
            {"rpc.system": "aws-api", "rpc.service": "S3", "rpc.method": operation},
            kind=SpanKind.CLIENT,
        ),
        _translated(operation),
    ):
        yield


@contextlib.contextmanager
def _translated(operation: str) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _GONE_CODES:
            message = f"{operation}: no such object or upload"
            raise ObjectGone(Reason.STORAGE_ERROR, message) from exc
        if status >= 500 or code in {"SlowDown", "ServiceUnavailable", "RequestTimeout"}:
            raise Unavailable(
                Reason.STORAGE_UNAVAILABLE, f"object storage unavailable during {operation}"
            ) from exc
        raise Internal(Reason.STORAGE_ERROR, f"object storage refused {operation}: {code}") from exc
    except (ConnectionError, HTTPClientError) as exc:
        raise Unavailable(
            Reason.STORAGE_UNAVAILABLE, f"object storage unreachable during {operation}"
        ) from exc
    except BotoCoreError as exc:
        raise Internal(Reason.STORAGE_ERROR, f"object storage failed {operation}") from exc


class S3ObjectStore:
    """S3 adapter. Create with :meth:`open`, release with :meth:`close`."""

    def __init__(self, *, client: Any, bucket: str, stack: AsyncExitStack) -> None:
        self._client = client
        self._bucket = bucket
        self._stack = stack

    @classmethod
    async def open(
        cls,
        *,
        endpoint_url: str,
        bucket: str,
        region: str,
        access_key_id: str,
        secret_access_key: str,
        create_bucket: bool = True,
        payload_signing: str = "auto",
    ) -> S3ObjectStore:
        """``payload_signing`` (VIDSCAN_S3_PAYLOAD_SIGNING): "auto" signs payloads
        over plain HTTP only, "on"/"off" always/never."""
        stack = AsyncExitStack()
        session = get_session()
        config = AioConfig(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            max_pool_connections=32,
            s3={
                "addressing_style": "path",
                "payload_signing_enabled": signs_payload(endpoint_url, payload_signing),
            },
            # Checksums only where S3 requires them: the default CRC32 pass over every
            # part costs a second copy of it in memory, and SHA-256 is ours anyway.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        client = await stack.enter_async_context(
            session.create_client(
                "s3",
                endpoint_url=endpoint_url or None,
                region_name=region,
                aws_access_key_id=access_key_id or None,
                aws_secret_access_key=secret_access_key or None,
                config=config,
            )
        )
        store = cls(client=client, bucket=bucket, stack=stack)
        if create_bucket:
            try:
                await store._ensure_bucket()
            except BaseException:
                await stack.aclose()
                raise
        return store

    async def _ensure_bucket(self) -> None:
        try:
            with map_botocore_errors("head_bucket"):
                await self._client.head_bucket(Bucket=self._bucket)
            return
        except ObjectGone:
            pass
        with map_botocore_errors("create_bucket"):
            await self._client.create_bucket(Bucket=self._bucket)

    @property
    def bucket(self) -> str:
        return self._bucket

    def object_uri(self, key: str) -> str:
        return f"s3://{self._bucket}/{key}"

    async def create_multipart(self, key: str, *, content_type: str) -> str:
        with map_botocore_errors("create_multipart_upload"):
            response = await self._client.create_multipart_upload(
                Bucket=self._bucket, Key=key, ContentType=content_type
            )
        return str(response["UploadId"])

    async def upload_part(
        self, key: str, *, upload_id: str, number: int, data: bytes
    ) -> UploadedPart:
        with map_botocore_errors("upload_part"):
            response = await self._client.upload_part(
                Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )
        return UploadedPart(number=number, etag=str(response["ETag"]), size=len(data))

    async def complete_multipart(
        self, key: str, *, upload_id: str, parts: list[UploadedPart]
    ) -> None:
        # Never cut off half-way: MinIO, when a completion's connection is closed
        # mid-request, can keep the upload but drop all of its parts (7 of 40 cut-off
        # completions in a probe), losing a sealed upload. A cancelled caller waits.
        try:
            with map_botocore_errors("complete_multipart_upload"):
                await run_to_end(
                    self._client.complete_multipart_upload(
                        Bucket=self._bucket,
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={
                            "Parts": [{"PartNumber": p.number, "ETag": p.etag} for p in parts]
                        },
                    )
                )
        except Internal as exc:
            # Completion is idempotent: an upload another stream completed (NoSuchUpload)
            # or is completing right now (MinIO answers InvalidPart while it moves the
            # parts, e.g. when a cut-off stream's request is still running there) is
            # fine once the object assembled from these parts is in place.
            if not await self._assembled_soon(key, parts):
                raise Internal(
                    Reason.STORAGE_ERROR,
                    f"completing the multipart upload failed ({exc.message}) and no object "
                    "assembled from its parts exists",
                ) from exc

    async def _assembled_soon(self, key: str, parts: list[UploadedPart]) -> bool:
        for pause in _COMPLETION_SETTLE_S:
            if await self._assembled_from(key, parts):
                return True
            await asyncio.sleep(pause)
        return await self._assembled_from(key, parts)

    async def _assembled_from(self, key: str, parts: list[UploadedPart]) -> bool:
        """True when ``key`` holds exactly what completing ``parts`` produces."""
        try:
            with map_botocore_errors("head_object"):
                head = await self._client.head_object(Bucket=self._bucket, Key=key)
        except ObjectGone:
            return False
        if int(head["ContentLength"]) != sum(p.size for p in parts):
            return False
        etag = str(head.get("ETag", "")).strip('"')
        # S3 and MinIO report md5(part md5s)-N for multipart objects (not with SSE-KMS
        # or SSE-C, whose ETags are opaque: there the size is what can be checked).
        return "-" not in etag or etag == multipart_etag(parts)

    async def abort_multipart(self, key: str, *, upload_id: str) -> None:
        try:
            with map_botocore_errors("abort_multipart_upload"):
                await self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=key, UploadId=upload_id
                )
        except ObjectGone:
            return  # already aborted (or completed): nothing to discard

    async def list_multipart(self, *, prefix: str) -> list[PendingMultipart]:
        # MinIO honours ListMultipartUploads' Prefix only when it names a whole key,
        # so list everything and filter here; AWS S3 gives the same answer either way.
        found: list[PendingMultipart] = []
        with map_botocore_errors("list_multipart_uploads"):
            paginator = self._client.get_paginator("list_multipart_uploads")
            async for page in paginator.paginate(Bucket=self._bucket):
                for upload in page.get("Uploads", []):
                    if not str(upload["Key"]).startswith(prefix):
                        continue
                    found.append(
                        PendingMultipart(
                            key=str(upload["Key"]),
                            upload_id=str(upload["UploadId"]),
                            initiated=upload["Initiated"],
                        )
                    )
        return found

    async def put_object(
        self, key: str, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> None:
        with map_botocore_errors("put_object"):
            await self._client.put_object(
                Bucket=self._bucket, Key=key, Body=data, ContentType=content_type
            )

    async def delete_object(self, key: str) -> None:
        with map_botocore_errors("delete_object"):
            await self._client.delete_object(Bucket=self._bucket, Key=key)

    async def object_size(self, key: str) -> int | None:
        try:
            with map_botocore_errors("head_object"):
                response = await self._client.head_object(Bucket=self._bucket, Key=key)
        except ObjectGone:
            return None
        return int(response["ContentLength"])

    async def read_range(self, key: str, *, start: int, length: int) -> bytes:
        with map_botocore_errors("get_object"):
            response = await self._client.get_object(
                Bucket=self._bucket, Key=key, Range=f"bytes={start}-{start + length - 1}"
            )
            async with response["Body"] as body:
                data: bytes = await body.read()
        return data

    async def list_keys(self, *, prefix: str) -> list[str]:
        keys: list[str] = []
        with map_botocore_errors("list_objects_v2"):
            paginator = self._client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix):
                keys.extend(str(item["Key"]) for item in page.get("Contents", []))
        return keys

    async def list_objects(self, *, prefix: str) -> list[StoredObject]:
        found: list[StoredObject] = []
        with map_botocore_errors("list_objects_v2"):
            paginator = self._client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix):
                found.extend(
                    StoredObject(
                        key=str(item["Key"]),
                        size=int(item["Size"]),
                        last_modified=item["LastModified"],
                    )
                    for item in page.get("Contents", [])
                )
        return found

    async def ping(self) -> None:
        with map_botocore_errors("head_bucket"):
            await self._client.head_bucket(Bucket=self._bucket)

    async def close(self) -> None:
        await self._stack.aclose()
