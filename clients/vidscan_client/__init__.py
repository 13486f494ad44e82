"""Python client for vidscan (library and `vidscan` CLI)."""
