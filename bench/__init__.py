"""Benchmarks for vidscan next to its alternatives (`make bench`, `python -m bench`).

One module per scenario, each with ``run(env) -> Section``; see bench/README.md.
"""
