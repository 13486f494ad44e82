"""The vidscan-client wheel as an outside service gets it: installed alone into a
clean venv (no server, no PyAV, SQLAlchemy or tritonclient), its `vidscan` CLI and
its library run against the real server.

The venv is built once per session (support/client_venv.py); pip fetches the
client's four dependencies at constraints.txt's versions.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Running, StartServer
from support.client_venv import ClientVenv, client_wheel, wheel_metadata
from support.triton import TritonServer
from support.videos import SPECS, make_video

from server.main import token_authority

pytestmark = pytest.mark.timeout(300)  # the first test also builds the venv

CLIENT_DEPENDENCIES = {"grpcio", "protobuf", "grpcio-status", "googleapis-common-protos"}
SERVER_ONLY_MODULES = ["av", "sqlalchemy", "tritonclient", "server", "vidscan", "grpc_tools"]
# The documented exit codes (exit_codes.py, `vidscan --help`, clients/python/README.md).
EXIT_CODES = [0, 1, 2, 3, 4, 5, 130]


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return client_wheel(tmp_path_factory.mktemp("client-wheel"))


@pytest.fixture(scope="session")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClientVenv]:
    yield ClientVenv.create(tmp_path_factory.mktemp("client-venv"), wheel)


def token_for(server: Running, tag: str) -> str:
    return token_authority(server.settings).mint(f"wheel-{tag}-{uuid.uuid4().hex[:10]}")


def requirement_name(requirement: str) -> str:
    return re.split(r"[ ;<>=!~\[]", requirement, maxsplit=1)[0].lower()


def test_wheel_carries_its_generated_stubs_and_depends_on_grpc_only(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        sources = {n: archive.read(n).decode() for n in names if n.endswith((".py", ".pyi"))}
    stubs = "vidscan_client/_proto/vidscan/v1/"
    for module in ("upload_pb2.py", "upload_pb2.pyi", "upload_pb2_grpc.py", "errors_pb2.py"):
        assert stubs + module in names
    assert "vidscan_client/py.typed" in names
    # Nothing that a server install would also own.
    tops = {n.split("/", 1)[0] for n in names if not n.startswith("vidscan_client-")}
    assert tops == {"vidscan_client"}
    generated_imports = [
        line
        for text in sources.values()
        for line in text.splitlines()
        if re.match(r"(from|import) vidscan[. ]", line)
    ]
    assert generated_imports == []

    metadata = wheel_metadata(wheel)
    assert metadata["Name"] == "vidscan-client"
    assert metadata["Requires-Python"] == ">=3.10"
    required = {requirement_name(r) for r in metadata.get_all("Requires-Dist") or []}
    assert required == CLIENT_DEPENDENCIES


def test_clean_venv_has_the_client_and_none_of_the_server(venv: ClientVenv) -> None:
    probe = subprocess.run(
        [
            str(venv.bin / "python"),
            "-c",
            "import importlib.util, json, sys, vidscan_client; "
            "print(json.dumps({'missing': [m for m in sys.argv[1:] "
            "if importlib.util.find_spec(m) is None], 'client': vidscan_client.__file__}))",
            *SERVER_ONLY_MODULES,
        ],
        cwd=venv.cwd,
        env=venv.env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert found["missing"] == SERVER_ONLY_MODULES
    assert found["client"].startswith(str(venv.root))
    listed = subprocess.run(
        [str(venv.bin / "python"), "-m", "pip", "list", "--format", "json"],
        cwd=venv.cwd,
        env=venv.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert CLIENT_DEPENDENCIES | {"vidscan-client"} <= installed
    assert not installed & {"av", "sqlalchemy", "tritonclient", "vidscan", "onnx", "grpcio-tools"}


async def test_version_and_documented_exit_codes(venv: ClientVenv, wheel: Path) -> None:
    version = await venv.run("vidscan", "--version")
    assert version.code == 0, version.stderr
    assert version.stdout.strip() == f"vidscan-client {wheel_metadata(wheel)['Version']}"

    usage = await venv.run("vidscan", "--help")
    assert usage.code == 0, usage.stderr
    epilog = usage.stdout.split("exit codes:", 1)[1]
    listed = [int(m) for m in re.findall(r"^\s+(\d+)\s+\S", epilog, re.MULTILINE)]
    assert listed == EXIT_CODES


async def test_installed_cli_uploads_waits_cancels_and_refuses(
    start_server: StartServer, triton: TritonServer, venv: ClientVenv, tmp_path: Path
) -> None:
    """Upload with --wait (the server answers PROCESSING at once, a worker finds the
    verdict), cancel a session the wheel's asyncio client opened, and the codes of a
    usage error (2) and of a refused upload (3)."""
    server = await start_server(triton_url=triton.grpc_url, analysis_wait_seconds=0)
    env = {"VIDSCAN_TARGET": server.target, "VIDSCAN_TOKEN": token_for(server, "cli")}
    clip = make_video(tmp_path / "clip.mp4", spec=SPECS["mp4"], seconds=2, fps=10)

    upload = await venv.run("vidscan", "upload", str(clip), "--wait", **env)
    assert upload.code == 0, upload.stderr
    result = json.loads(upload.stdout)
    assert result["upload_status"] == "UPLOAD_STATUS_ANALYZED"
    assert result["detection_result"]["reference_model"] is True
    assert "is processing; waiting up to" in upload.stderr

    shown = await venv.run("vidscan", "result", result["analysis_id"], **env)
    assert shown.code == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "ANALYSIS_STATUS_ANALYZED"

    opened = await venv.run(
        "python",
        "-c",
        textwrap.dedent(
            """
            import asyncio, os
            from vidscan_client import AsyncVidscanClient

            async def main() -> None:
                target, token = os.environ["VIDSCAN_TARGET"], os.environ["VIDSCAN_TOKEN"]
                async with AsyncVidscanClient(target, token) as client:
                    print((await client.create_session()).session_id)

            asyncio.run(main())
            """
        ),
        **env,
    )
    assert opened.code == 0, opened.stderr
    session_id = opened.stdout.strip()
    cancel = await venv.run("vidscan", "cancel", session_id, **env)
    assert cancel.code == 0, cancel.stderr
    assert json.loads(cancel.stdout) == {"session_id": session_id, "cleanup_performed": True}
    status = await venv.run("vidscan", "status", session_id, **env)
    assert status.code == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "cancelled"
    again = await venv.run("vidscan", "cancel", session_id, **env)
    assert again.code == 0, again.stderr
    assert json.loads(again.stdout) == {"session_id": session_id}  # nothing left to release
    unknown = await venv.run("vidscan", "cancel", str(uuid.uuid4()), **env)
    assert unknown.code == 1
    assert json.loads(unknown.stderr.strip())["reason"] == "SESSION_NOT_FOUND"

    usage = await venv.run("vidscan", "upload", **env)
    assert usage.code == 2
    assert "the following arguments are required: FILE" in usage.stderr

    noise = tmp_path / "noise.mp4"
    noise.write_bytes(os.urandom(512 * 1024))
    refused = await venv.run("vidscan", "upload", str(noise), **env)
    assert refused.code == 3, refused.stderr
    assert refused.stdout == ""
    error = json.loads(refused.stderr.strip().splitlines()[-1])
    assert (error["code"], error["reason"]) == ("INVALID_ARGUMENT", "UNSUPPORTED_FORMAT")
    assert error["cleanup"]["quota_released"] is True
