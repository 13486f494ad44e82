"""gRPC server reflection that also answers for method names.

ghz (and some other clients) ask ``FileContainingSymbol`` for a method, e.g.
``vidscan.v1.UploadService.UploadVideo``. With the upb protobuf runtime the default
pool cannot find method symbols, so grpcio-reflection answers NOT_FOUND and ghz gives
up. Looking the method's service up instead gives the same file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer


class MethodAwareReflectionServicer(ReflectionServicer):
    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        response = super()._file_containing_symbol(request, fully_qualified_name)
        if response.HasField("error_response") and "." in fully_qualified_name:
            parent = fully_qualified_name.rsplit(".", 1)[0]
            retry = super()._file_containing_symbol(request, parent)
            if not retry.HasField("error_response"):
                return retry
        return response


def enable_reflection(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        MethodAwareReflectionServicer(list(service_names)), server
    )
