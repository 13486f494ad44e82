"""The generated vidscan.v1 messages and stubs, under the client's own package.

``build_stubs.py`` generates them into the private ``vidscan_client._proto`` at build
time (never committed); this module is the one place that path is spelt, so callers
write ``from vidscan_client.protos import upload_pb2``. The proto package stays
``vidscan.v1`` (it is the wire name); only the Python import path differs from the
server's ``vidscan.v1`` modules, so both distributions can share a venv.
"""

from vidscan_client._proto.vidscan.v1 import (
    analysis_pb2,
    analysis_pb2_grpc,
    detection_pb2,
    errors_pb2,
    upload_pb2,
    upload_pb2_grpc,
)

__all__ = [
    "analysis_pb2",
    "analysis_pb2_grpc",
    "detection_pb2",
    "errors_pb2",
    "upload_pb2",
    "upload_pb2_grpc",
]
