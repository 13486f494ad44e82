"""Checks applied to every byte while it arrives: size limit, sniffing and the MP4
box structure. Pure logic, no I/O; the pipeline feeds it chunk by chunk. (The SHA-256
is computed by the PartWriter, in step with the parts it stores.)"""

from __future__ import annotations

from server.errors import InvalidUpload, Reason
from server.media.isobmff import BoxStructureError, TopLevelBoxWalker
from server.media.sniff import SNIFF_BYTES, Container, sniff


def _too_large(limit: int) -> InvalidUpload:
    return InvalidUpload(
        Reason.FILE_TOO_LARGE,
        f"the upload exceeds the limit of {limit} bytes",
        metadata={"max_bytes": str(limit)},
    )


class StreamValidator:
    def __init__(self, *, max_bytes: int, declared_size: int | None, declared_sha256: str) -> None:
        if declared_size is not None and declared_size > max_bytes:
            raise _too_large(max_bytes)
        self._max_bytes = max_bytes
        self._declared_size = declared_size
        self._declared_sha256 = declared_sha256
        self._head = b""
        self._walker: TopLevelBoxWalker | None = None
        self.received = 0
        self.container: Container | None = None

    def feed(self, chunk: bytes) -> None:
        """Accounts for one chunk; raises as soon as the stream is known to be bad."""
        self.received += len(chunk)
        if self.received > self._max_bytes:
            raise _too_large(self._max_bytes)
        if self._declared_size is not None and self.received > self._declared_size:
            raise self._size_mismatch()
        if self.container is None:
            earlier = len(self._head)  # bytes of previous chunks already in the head
            self._head += chunk[: SNIFF_BYTES - earlier]
            if len(self._head) >= SNIFF_BYTES:
                self._decide_container()
                if self._walker is not None:
                    self._feed_walker(self._head[:earlier])
        self._feed_walker(chunk)

    def _feed_walker(self, data: bytes) -> None:
        if self._walker is not None:
            try:
                self._walker.feed(data)
            except BoxStructureError as exc:
                raise InvalidUpload(
                    Reason.CORRUPT_CONTAINER, f"the {self.container} box structure is broken: {exc}"
                ) from exc

    def _decide_container(self) -> None:
        container = sniff(self._head)
        if container is None:
            raise InvalidUpload(
                Reason.UNSUPPORTED_FORMAT,
                "the file is not a supported video container (mp4, mov, mkv, webm, avi)",
            )
        self.container = container
        if container in (Container.MP4, Container.MOV):
            self._walker = TopLevelBoxWalker()

    @property
    def header_complete(self) -> bool:
        """True once an MP4/MOV `moov` box has fully arrived (PyAV can read streams)."""
        return self._walker is not None and self._walker.header_complete

    @property
    def media_before_header(self) -> bool:
        """An MP4/MOV whose `mdat` came before its `moov`, as most encoders write it:
        with the header, the samples are in too (a file with more `mdat` after its
        `moov` only loses the early refusal; the whole-file validation still runs)."""
        return self._walker is not None and self._walker.media_before_header

    @classmethod
    def resumed(
        cls,
        *,
        max_bytes: int,
        declared_size: int | None,
        declared_sha256: str,
        received: int,
        container: Container,
    ) -> StreamValidator:
        """A validator for a stream that continues at ``received``. The MP4 box walk
        is not carried over; the full PyAV validation at the end still applies."""
        validator = cls(
            max_bytes=max_bytes, declared_size=declared_size, declared_sha256=declared_sha256
        )
        validator.received = received
        validator.container = container
        return validator

    def finish(self, digest: str) -> None:
        """Checks the end of the stream against the declarations, given the SHA-256."""
        if self.received == 0:
            raise InvalidUpload(Reason.EMPTY_UPLOAD, "the upload contained no bytes")
        if self.container is None:
            self._decide_container()
        if self._declared_size is not None and self.received != self._declared_size:
            raise self._size_mismatch()
        if self._walker is not None:
            try:
                self._walker.finish()
            except BoxStructureError as exc:
                raise InvalidUpload(
                    Reason.CORRUPT_CONTAINER, f"the {self.container} file is truncated: {exc}"
                ) from exc
        if self._declared_sha256 and digest != self._declared_sha256:
            raise InvalidUpload(
                Reason.HASH_MISMATCH,
                "the SHA-256 of the received bytes does not match the declared one",
                metadata={"declared_sha256": self._declared_sha256, "actual_sha256": digest},
            )

    def _size_mismatch(self) -> InvalidUpload:
        return InvalidUpload(
            Reason.SIZE_MISMATCH,
            f"received {self.received} bytes, declared {self._declared_size}",
            metadata={"declared_size": str(self._declared_size), "received": str(self.received)},
        )
