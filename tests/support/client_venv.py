"""A clean venv with only the vidscan-client wheel in it, as an outside service has.

The wheel is the one ``make test`` built (``$VIDSCAN_CLIENT_WHEEL``), else one built
here by scripts/build-client.sh from the tree under test. pip installs it and its
dependencies (from PyPI or pip's cache, at constraints.txt's versions) into a venv
that shares nothing with the dev venv; commands run from outside the repository with
an environment stripped of Python paths, so nothing of the server can leak in.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from email.message import Message
from email.parser import Parser
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PIP_TIMEOUT_SECONDS = 240


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


def client_wheel(scratch: Path) -> Path:
    given = os.environ.get("VIDSCAN_CLIENT_WHEEL")
    if given:
        return Path(given)
    built = subprocess.run(
        [str(REPO / "scripts" / "build-client.sh"), str(scratch)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        check=False,
        timeout=PIP_TIMEOUT_SECONDS,
    )
    assert built.returncode == 0, built.stderr
    return Path(built.stdout.strip())


def wheel_metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(archive.read(name).decode())


class ClientVenv:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "venv" / "bin"
        self.cwd = root / "cwd"  # outside the repository
        self.cwd.mkdir(exist_ok=True)

    @classmethod
    def create(cls, root: Path, wheel: Path) -> ClientVenv:
        venv = cls(root)
        for argv in (
            [sys.executable, "-m", "venv", str(root / "venv")],
            [
                str(venv.bin / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-c",
                str(REPO / "constraints.txt"),
                str(wheel),
            ],
        ):
            done = subprocess.run(
                argv,
                cwd=venv.cwd,
                env=venv.env(),
                capture_output=True,
                text=True,
                check=False,
                timeout=PIP_TIMEOUT_SECONDS,
            )
            assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
        return venv

    def env(self, **extra: str) -> dict[str, str]:
        drop = ("PYTHON", "VIRTUAL_ENV", "VIDSCAN_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        env["PATH"] = os.pathsep.join([str(self.bin), "/usr/bin", "/bin"])
        env["PYTHONNOUSERSITE"] = "1"
        return {**env, **extra}

    async def run(self, program: str, *args: str, **env: str) -> Run:
        """``program`` from the venv's bin (``vidscan``, ``python``), without blocking
        the event loop that the in-process server runs on."""
        process = await asyncio.create_subprocess_exec(
            str(self.bin / program),
            *args,
            cwd=self.cwd,
            env=self.env(**env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode is not None
        return Run(process.returncode, stdout.decode(), stderr.decode())
