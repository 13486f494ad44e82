"""gRPC servicers: thin translation between protobuf messages and use cases."""
