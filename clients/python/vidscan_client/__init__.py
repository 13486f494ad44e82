"""Python client for vidscan: a sync and an asyncio library, and the `vidscan` CLI.

::

    from vidscan_client import VidscanClient, VidscanError

    with VidscanClient("127.0.0.1:50051", token) as client:
        result = client.upload("clip.mp4", on_progress=lambda sent, total: ...)

    async with AsyncVidscanClient("127.0.0.1:50051", token) as client:
        result = await client.upload("clip.mp4")

Uploads resume by themselves after transient failures (ByteStream-style: ask the
session's committed offset, continue from there); refusals raise VidscanError with
the server's stable reason and cleanup report. The generated messages are in
``vidscan_client.protos``.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("vidscan-client")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

from vidscan_client.aio import AsyncVidscanClient
from vidscan_client.analyses import is_final, settle
from vidscan_client.backoff import Backoff
from vidscan_client.client import UploadResult, VidscanClient, tls_credentials
from vidscan_client.errors import VidscanError
from vidscan_client.service_config import SERVICE_CONFIG, channel_options

__all__ = [
    "SERVICE_CONFIG",
    "AsyncVidscanClient",
    "Backoff",
    "UploadResult",
    "VidscanClient",
    "VidscanError",
    "__version__",
    "channel_options",
    "is_final",
    "settle",
    "tls_credentials",
]
