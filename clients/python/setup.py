"""Builds vidscan-client: generates the stubs first, then declares what they need.

Everything static is in pyproject.toml. Only the dependencies are computed here,
because the floors of grpcio and protobuf are those of the grpcio-tools that
generated the stubs (see build_stubs.runtime_requirements).
"""

import sys
from pathlib import Path

from setuptools import setup

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_stubs

setup(install_requires=build_stubs.runtime_requirements(build_stubs.generate()))
