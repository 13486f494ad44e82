"""Frames to Triton through system shared memory (``VIDSCAN_TRITON_SHM``).

When Triton runs on this host, one region per analysis replaces the ``.npy`` spool
file and the frames inside the gRPC request: the server creates a POSIX
shared-memory object (``tritonclient.utils.shared_memory``) and registers it with
Triton; the media worker writes the frames straight into it (the server process
never copies them); the inference request names the region. The region is
unregistered and unlinked on every way out (success, failure, cancellation).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

import tritonclient.utils.shared_memory as triton_shm

MODES = ("auto", "on", "off")
PREFIX = "vidscan_frames_"


@dataclass(frozen=True)
class FrameRegion:
    name: str  # Triton's name of the region; also the object's name under /dev/shm
    byte_size: int

    @property
    def key(self) -> str:
        """The POSIX name Triton opens (shm_open wants the leading slash)."""
        return f"/{self.name}"


def is_local(url: str) -> bool:
    """Whether a Triton gRPC address names this host: a unix socket, localhost, a
    loopback address or this machine's host name."""
    if url.startswith("unix:"):
        return True
    address = url.split("://", 1)[-1].rsplit("/", 1)[0]
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    if host in ("localhost", "", socket.gethostname()):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def wanted(mode: str, url: str) -> bool:
    if mode not in MODES:
        raise ValueError(f"unknown shared-memory mode {mode!r}")
    return mode == "on" or (mode == "auto" and is_local(url))


def create(byte_size: int) -> tuple[FrameRegion, Any]:
    """A new, zeroed region of its own name; the handle is for ``destroy``."""
    region = FrameRegion(name=f"{PREFIX}{uuid.uuid4().hex}", byte_size=byte_size)
    handle = triton_shm.create_shared_memory_region(
        region.name, region.name, byte_size, create_only=True
    )
    try:
        # Reserve the pages now: a full /dev/shm fails here with ENOSPC, instead of
        # with a SIGBUS in the media worker writing into it (read as a decoder crash).
        fd = os.open(f"/dev/shm/{region.name}", os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, byte_size)
        finally:
            os.close(fd)
    except OSError:
        destroy(handle)
        raise
    return region, handle


def exists(name: str) -> bool:
    """Whether the object of a region still exists on this host."""
    return os.path.exists(f"/dev/shm/{name}")


def destroy(handle: Any) -> None:
    """Closes and unlinks the region (its /dev/shm entry is gone afterwards); one
    already removed by someone else is fine."""
    with contextlib.suppress(FileNotFoundError):
        triton_shm.destroy_shared_memory_region(handle)
