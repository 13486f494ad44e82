"""Python client for vidscan (library and `vidscan` CLI).

::

    from vidscan_client import VidscanClient, VidscanError

    with VidscanClient("127.0.0.1:50051", token) as client:
        result = client.upload("clip.mp4", on_progress=lambda sent, total: ...)

Uploads resume by themselves after transient failures (ByteStream-style: ask the
session's committed offset, continue from there); refusals raise VidscanError with
the server's stable reason and cleanup report.
"""

from vidscan_client.client import Backoff, UploadResult, VidscanClient, VidscanError

__all__ = ["Backoff", "UploadResult", "VidscanClient", "VidscanError"]
