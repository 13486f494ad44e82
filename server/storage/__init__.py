"""Object storage: the ObjectStore port and its S3 and filesystem adapters."""
