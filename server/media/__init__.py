"""Media inspection: byte-level sniffing in-process, PyAV only in a worker process."""
