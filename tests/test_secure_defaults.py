"""Secure defaults: the built-in development JWT secret never serves beyond loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from server.config import DEVELOPMENT_JWT_SECRET, Settings, is_loopback

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.0.0.2:1", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        ("10.1.2.3:50051", False),
        ("vidscan.internal:50051", False),
        (":50051", False),
    ],
)
def test_loopback_addresses(listen: str, loopback: bool) -> None:
    assert is_loopback(listen) is loopback


def test_the_development_secret_is_refused_off_loopback(tmp_path: Path) -> None:
    problem = Settings(grpc_listen="0.0.0.0:50051", data_dir=tmp_path).serving_problem()
    assert problem is not None and "VIDSCAN_JWT_SECRET" in problem
    # make run's default
    assert Settings(grpc_listen="127.0.0.1:50051", data_dir=tmp_path).serving_problem() is None
    secret = SecretStr("a-real-secret-of-at-least-32-bytes!!")
    assert Settings(grpc_listen="0.0.0.0:50051", jwt_secret=secret).serving_problem() is None
    jwks = Settings(grpc_listen="0.0.0.0:50051", jwks_url="https://idp.example/jwks.json")
    assert jwks.serving_problem() is None and not jwks.accepts_hs256
    assert DEVELOPMENT_JWT_SECRET not in repr(Settings())


def test_the_server_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDSCAN_")}
    env.update(VIDSCAN_GRPC_LISTEN="0.0.0.0:0", VIDSCAN_DATA_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", "serve"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "VIDSCAN_JWT_SECRET" in lines[0] and "0.0.0.0:0" in lines[0]
    assert DEVELOPMENT_JWT_SECRET not in done.stderr


def test_one_off_commands_need_no_secret(tmp_path: Path) -> None:
    """migrate, mint-token and quotas listen on nothing: the image's 0.0.0.0 address
    does not stop them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDSCAN_")}
    env.update(VIDSCAN_GRPC_LISTEN="0.0.0.0:0", VIDSCAN_DATA_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", "mint-token", "someone"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(".") == 2  # a JWT
