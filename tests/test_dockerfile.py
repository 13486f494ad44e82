"""The Dockerfile, checked without a Docker engine.

scripts/dockercheck.sh replays the build stage natively into a fresh venv (pip, from
the local cache where it can), deletes the build tree, and runs the installed server
the way the image would: mint-token, migrate, the media worker, `serve` and the
Dockerfile's own HEALTHCHECK command. Its header says what that proves and what not.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_dockerfile_build_and_runtime_replay() -> None:
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "dockercheck.sh")],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=590,
    )
    output = result.stdout + result.stderr
    failures = "\n".join(line for line in output.splitlines() if line.startswith("FAIL"))
    assert result.returncode == 0, f"{failures}\n--- output tail ---\n{output[-6000:]}"
    assert "dockercheck: OK" in result.stdout
