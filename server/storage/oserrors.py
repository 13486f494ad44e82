"""The one translation of local-filesystem errors (the embedded object store and the
upload spool): a full disk, a read-only or forbidden directory become stable reasons
instead of an ``OSError`` escaping as INTERNAL past the pipeline's cleanup."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

from server.errors import Internal, Reason, StorageFull, VidscanError

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_FORBIDDEN = {errno.EACCES, errno.EPERM, errno.EROFS}


@contextlib.contextmanager
def map_os_errors(operation: str) -> Iterator[None]:
    try:
        yield
    except VidscanError:
        raise
    except OSError as exc:
        if exc.errno in _FULL:
            raise StorageFull(
                Reason.STORAGE_FULL, f"no space left on the server's disk during {operation}"
            ) from exc
        if exc.errno in _FORBIDDEN:
            raise Internal(
                Reason.STORAGE_ERROR,
                f"the server may not write its storage directory during {operation}",
            ) from exc
        raise Internal(Reason.STORAGE_ERROR, f"local storage failed {operation}") from exc
