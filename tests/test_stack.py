"""The whole stack in containers (part of `make test`; alone: `make stack-test`):
deploy/compose.yaml run by podman-compose with the server and gateway images and
local stand-ins for PostgreSQL, Redis, MinIO and Triton (`make stack-images`).

Uploads go through the gateway's REST route and over gRPC to each server replica;
then one replica is SIGKILLed mid-upload and the other finishes the upload. Each
upload is checked where it lives: the video row in PostgreSQL, the object in MinIO
(byte for byte), the verdict from Triton. Then the Kubernetes manifests' server and
gateway run under `podman kube play`. Collected only with VIDSCAN_STACK_TEST=1
(tests/conftest.py), because it needs the images built first.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from sqlalchemy import text
from support import kube
from support.photos import Placement, compose, photo, write_video
from support.rpc import CHUNK, Client, details, header
from support.stack import REPO_ROOT, Stack
from support.videos import SPECS, make_video
from vidscan.v1 import analysis_pb2, detection_pb2, upload_pb2, upload_pb2_grpc

from server.db.engine import create_engine
from server.storage.s3 import S3ObjectStore

pytestmark = pytest.mark.timeout(1500)

OUTPUT = REPO_ROOT / "var" / "test-output" / "stack"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("stack"))
    OUTPUT.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        timings = running.up()
        timings["up, total"] = time.monotonic() - start
        (OUTPUT / "up-timings.json").write_text(json.dumps(timings, indent=2) + "\n")
        yield running
    finally:
        (OUTPUT / "commands.log").write_text("\n".join(running.log) + "\n")
        running.down()


@pytest.fixture(scope="module")
def portraits(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Three different five-frame clips of scikit-image's astronaut portrait (one face
    each); different bytes, so none is deduplicated against another."""
    astronaut = photo("astronaut")
    scratch = tmp_path_factory.mktemp("portraits")

    def clip(n: int) -> bytes:
        def draw(i: int) -> Any:
            return compose((640, 360), [(astronaut, Placement(scale=0.5, x=40 * n + 20 * i, y=20))])

        return write_video(
            scratch / f"p{n}.mp4", size=(640, 360), frames=5, fps=5, draw=draw
        ).read_bytes()

    return [clip(n) for n in range(3)]


@pytest.fixture(scope="module")
def big_noise(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """~32 MiB of H.264 noise: four 8 MiB S3 parts. A finished part is put on record in
    the session by the next chunk that arrives, or when a part beyond the in-flight
    window (2) is cut; the test's client goes quiet after 26 MiB, so the first part is
    on record by then whatever S3's timing."""
    path = tmp_path_factory.mktemp("noise") / "noise.mp4"
    make_video(path, spec=SPECS["mp4"], seconds=16, fps=10, width=640, height=480, noise=True)
    data = path.read_bytes()
    assert len(data) > 28 * 1024 * 1024, len(data)
    return data


@pytest.fixture
async def checks(stack: Stack) -> AsyncIterator[Checks]:
    store = await S3ObjectStore.open(
        endpoint_url=f"http://127.0.0.1:{stack.ports['minio']}",
        bucket="vidscan",
        region="us-east-1",
        access_key_id="vidscan",
        secret_access_key=stack.env["VIDSCAN_S3_SECRET_KEY"],
    )
    password = stack.env["VIDSCAN_DB_PASSWORD"]
    engine = create_engine(
        f"postgresql+asyncpg://vidscan:{password}@127.0.0.1:{stack.ports['postgres']}/vidscan"
    )
    try:
        yield Checks(store, engine)
    finally:
        await store.close()
        await engine.dispose()


class Checks:
    """Reads what the stack stored, straight from PostgreSQL and MinIO."""

    def __init__(self, store: S3ObjectStore, engine: Any) -> None:
        self.store, self.engine = store, engine

    async def row(self, video_id: str) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            found = (
                await conn.execute(
                    text(
                        "select user_id, file_size, file_hash, s3_key, status from videos"
                        " where id = :id"
                    ),
                    {"id": video_id},
                )
            ).one()
        return dict(found._mapping)

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.engine.connect() as conn:
            return await conn.scalar(text(sql), params)

    async def stored(self, video_id: str, data: bytes, user: str) -> None:
        """One row for the video, and its object is exactly `data`."""
        row = await self.row(video_id)
        assert row["user_id"] == user
        assert row["file_size"] == len(data)
        assert row["file_hash"] == hashlib.sha256(data).hexdigest()
        assert await self.store.read_range(row["s3_key"], start=0, length=len(data)) == data
        prefix = row["s3_key"].rsplit("/", 1)[0] + "/"
        assert await self.store.list_multipart(prefix=prefix) == []


def token(stack: Stack, user: str) -> str:
    return stack.exec("server-1", "vidscan-server", "mint-token", user).strip()


def grpc_target(stack: Stack, replica: str) -> str:
    return f"127.0.0.1:{stack.ports[replica]}"


async def verdict(client: Client, analysis_id: str, within: float = 180) -> analysis_pb2.Analysis:
    deadline = time.monotonic() + within
    while True:
        analysis = await client.analysis(analysis_id)
        if analysis.status in (
            analysis_pb2.ANALYSIS_STATUS_ANALYZED,
            analysis_pb2.ANALYSIS_STATUS_FAILED,
        ):
            return analysis
        assert time.monotonic() < deadline, f"analysis {analysis_id} still {analysis.status}"
        await asyncio.sleep(0.5)


async def test_uploads_through_the_gateway_and_each_replica_are_stored_and_judged(
    stack: Stack, checks: Checks, portraits: list[bytes]
) -> None:
    user = f"stack-{uuid.uuid4().hex[:8]}"
    bearer = token(stack, user)
    auth = {"authorization": f"Bearer {bearer}"}

    portrait = portraits[0]
    # The dashboard's REST route, through the gateway container.
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{stack.ports['gateway']}", timeout=120
    ) as http:
        page = await http.get("/")
        assert page.status_code == 200 and "vidscan" in page.text.lower()
        created = await http.post("/v1/dashboard/upload/sessions", headers=auth, json={})
        assert created.status_code == 200, created.text
        response = await http.post(
            f"/v1/dashboard/upload/{created.json()['session_id']}",
            headers=auth,
            files={"file": ("astronaut.mp4", portrait, "video/mp4")},
        )
    assert response.status_code == 201, response.text
    rest_video = response.json()["video_id"]
    rest_analysis = response.json()["analysis_id"]
    assert response.json()["file_hash"] == hashlib.sha256(portrait).hexdigest()
    await checks.stored(rest_video, portrait, user)

    # gRPC straight to each replica; either may be asked about any upload afterwards.
    analyses = [rest_analysis]
    for replica, clip in (("server-1", portraits[1]), ("server-2", portraits[2])):
        async with grpc.aio.insecure_channel(grpc_target(stack, replica)) as channel:
            client = Client(channel, bearer, grpc_target(stack, replica))
            result = await client.upload(clip, filename=f"{replica}.mp4")
            assert result.file_hash == hashlib.sha256(clip).hexdigest()
            assert not result.deduplicated
            await checks.stored(result.video_id, clip, user)
            analyses.append(result.analysis_id)
            # The gateway's upload again, on this replica: the same video, no new row.
            again = await client.upload(portrait, filename="again.mp4")
            assert again.deduplicated and again.video_id == rest_video

    async with grpc.aio.insecure_channel(grpc_target(stack, "server-2")) as channel:
        client = Client(channel, bearer, grpc_target(stack, "server-2"))
        for analysis_id in analyses:
            analysis = await verdict(client, analysis_id)
            assert analysis.status == analysis_pb2.ANALYSIS_STATUS_ANALYZED, analysis
            detection = analysis.detection
            assert detection.model_name == "face_ensemble"
            assert detection.outcome == detection_pb2.DETECTION_OUTCOME_JUDGED
            assert detection.frames_with_faces == detection.frames_analyzed == 5
            assert detection.reference_model is True and detection.disclaimer
    assert await checks.scalar("select count(*) from videos where user_id = :u", u=user) == 3


class Paused:
    """Sends a header and `before` bytes, then blocks (the replica dies meanwhile)."""

    def __init__(self, first: upload_pb2.UploadVideoRequest, data: bytes, before: int) -> None:
        self.first, self.data, self.before = first, data, before
        self.stop = threading.Event()

    def __iter__(self) -> Iterator[upload_pb2.UploadVideoRequest]:
        yield self.first
        for offset in range(0, self.before, CHUNK):
            yield upload_pb2.UploadVideoRequest(chunk=self.data[offset : offset + CHUNK])
        # Hold the stream open until the server end goes away.
        self.stop.wait(120)


async def test_a_replica_killed_mid_upload_is_finished_by_the_other(
    stack: Stack, checks: Checks, big_noise: bytes
) -> None:
    user = f"stack-kill-{uuid.uuid4().hex[:8]}"
    bearer = token(stack, user)
    first_target, second_target = grpc_target(stack, "server-1"), grpc_target(stack, "server-2")
    async with (
        grpc.aio.insecure_channel(first_target) as first_channel,
        grpc.aio.insecure_channel(second_target) as second_channel,
    ):
        first = Client(first_channel, bearer, first_target)
        second = Client(second_channel, bearer, second_target)
        session = (await first.new_session()).session_id

        paused = Paused(header(session, filename="noise.mp4"), big_noise, 26 * 1024 * 1024)
        channel = grpc.insecure_channel(first_target)
        stub = upload_pb2_grpc.UploadServiceStub(channel)  # type: ignore[no-untyped-call]
        call = stub.UploadVideo.future(iter(paused), metadata=first.metadata)
        try:
            # The other replica sees the parts server-1 committed (the session is in Redis).
            deadline = time.monotonic() + 60
            while (committed := (await second.status(session)).session.committed_bytes) == 0:
                assert time.monotonic() < deadline, "no part committed within 60 s"
                await asyncio.sleep(0.2)
            stack.crash("server-1")
            with pytest.raises(grpc.RpcError) as caught:
                await asyncio.to_thread(call.result, 60)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            paused.stop.set()
            channel.close()

        # Resume on server-2 from the offset it names. The dead stream's lock lapses
        # after VIDSCAN_STREAM_LOCK_SECONDS; until then the answer is SESSION_BUSY.
        committed = (await second.status(session)).session.committed_bytes
        assert 0 < committed < len(big_noise)
        deadline = time.monotonic() + 90
        while True:
            try:
                result = await second.upload(
                    big_noise[committed:], session_id=session, write_offset=committed
                )
                break
            except grpc.RpcError as error:
                assert details(error).reason == "SESSION_BUSY", details(error)
                assert time.monotonic() < deadline, "the killed stream's lock never lapsed"
                await asyncio.sleep(0.5)
        assert result.file_size == len(big_noise)
        assert result.file_hash == hashlib.sha256(big_noise).hexdigest()
        await checks.stored(result.video_id, big_noise, user)
        assert await checks.scalar("select count(*) from videos where user_id = :u", u=user) == 1
        assert (
            await checks.scalar(
                "select count(*) from quota_reservations where user_id = :u", u=user
            )
            == 0
        )

        analysis = await verdict(second, result.analysis_id)
        assert analysis.status == analysis_pb2.ANALYSIS_STATUS_ANALYZED, analysis
        # Noise has no face: stored, analysed, nothing judged.
        assert analysis.detection.outcome == detection_pb2.DETECTION_OUTCOME_NO_FACE_DETECTED

    # `restart: unless-stopped` brings the crashed replica back.
    await asyncio.to_thread(stack.wait_healthy, ["server-1"], within=120)


def test_migrations_ran_once_as_a_one_shot_service(stack: Stack) -> None:
    state = stack.state("migrate")
    assert (state["Status"], state["ExitCode"]) == ("exited", 0)
    tables = stack.exec(
        "postgres",
        "psql", "-h", "/tmp", "-U", "vidscan", "-d", "vidscan", "-tAc",
        "select count(*) from information_schema.tables where table_name in ('videos', 'analyses')",
    )  # fmt: skip
    assert tables.strip() == "2"


def test_secrets_come_from_the_environment_not_the_images(stack: Stack) -> None:
    for service, names in (
        ("server-1", ("AWS_SECRET_ACCESS_KEY", "VIDSCAN_JWT_SECRET", "DATABASE_URL")),
        ("gateway", ()),
    ):
        image = stack.podman(
            "inspect", "--format", "{{.ImageName}}", stack.container(service)
        ).stdout.strip()
        baked = json.loads(
            stack.podman("image", "inspect", "--format", "{{json .Config.Env}}", image).stdout
        )
        baked_names = {entry.split("=", 1)[0] for entry in baked}
        assert baked_names.isdisjoint(
            {"AWS_SECRET_ACCESS_KEY", "VIDSCAN_JWT_SECRET", "DATABASE_URL", "POSTGRES_PASSWORD"}
        ), baked_names
        running = json.loads(
            stack.podman(
                "inspect", "--format", "{{json .Config.Env}}", stack.container(service)
            ).stdout
        )
        given = dict(entry.split("=", 1) for entry in running)
        for name in names:
            assert given[name], name  # set by compose.yaml from the .env file
        if service == "server-1":
            assert given["VIDSCAN_JWT_SECRET"] == stack.env["VIDSCAN_JWT_SECRET"]


HEALTH = (
    "import grpc, sys; from grpc_health.v1 import health_pb2 as pb, health_pb2_grpc as pbg;"
    " stub = pbg.HealthStub(grpc.insecure_channel('127.0.0.1:50051'));"
    " print(' '.join(pb.HealthCheckResponse.ServingStatus.Name("
    "stub.Check(pb.HealthCheckRequest(service=s), timeout=3).status) for s in sys.argv[1:]))"
)


def test_the_kubernetes_server_and_gateway_run_under_podman_kube_play(
    stack: Stack, tmp_path: Path
) -> None:
    """deploy/k8s's cpu overlay, rendered by kustomize, run by `podman kube play` on
    the compose stack's network against its PostgreSQL, Redis, MinIO and Triton;
    support/kube.py names every change made for podman."""
    objects, secret = kube.for_podman(
        kube.render("cpu"),
        images={
            "ghcr.io/vidscan/vidscan-server": stack.env["VIDSCAN_SERVER_IMAGE"],
            "ghcr.io/vidscan/vidscan-gateway": stack.env["VIDSCAN_GATEWAY_IMAGE"],
        },
        config={
            "S3_ENDPOINT_URL": "http://minio:9000",
            "TRITON_URL": "triton:8001",
            "REDIS_ADDRESS": "redis:6379",
        },
        secrets={
            "DATABASE_URL": "postgresql+asyncpg://vidscan:"
            f"{stack.env['VIDSCAN_DB_PASSWORD']}@postgres:5432/vidscan",
            "REDIS_URL": "redis://redis:6379/0",
            "AWS_ACCESS_KEY_ID": "vidscan",
            "AWS_SECRET_ACCESS_KEY": stack.env["VIDSCAN_S3_SECRET_KEY"],
            "VIDSCAN_JWT_SECRET": stack.env["VIDSCAN_JWT_SECRET"],
        },
        server_pod="vidscan-server-pod-0",
    )
    manifest = kube.dump(objects, tmp_path / "kube.yaml")
    (tmp_path / "secret.json").write_text(secret)
    stack.podman("secret", "create", kube.SECRET, str(tmp_path / "secret.json"))
    try:
        stack.podman("kube", "play", "--network", stack.network, str(manifest), timeout=180)
        server, gateway = "vidscan-server-pod-0-server", "vidscan-gateway-pod-0-gateway"
        deadline = time.monotonic() + 120
        while True:  # the manifests' readiness and liveness probes, run by hand
            done = stack.podman(
                "exec", server, "python", "-c", HEALTH, "", "vidscan.live", check=False
            )
            if done.stdout.split() == ["SERVING", "SERVING"]:
                break
            assert time.monotonic() < deadline, done.stdout + done.stderr
            time.sleep(1)
        while stack.podman(
            "exec", gateway, "/vidscan-gateway", "healthcheck", check=False
        ).returncode:
            assert time.monotonic() < deadline, stack.podman("logs", gateway).stderr[-2000:]
            time.sleep(1)
        # What the manifests set up really took: the ConfigMap's and Secret's values
        # reached the container, the security context holds.
        env = dict(
            line.split("=", 1)
            for line in stack.podman("exec", server, "env").stdout.splitlines()
            if "=" in line
        )
        assert env["VIDSCAN_METRICS_LISTEN"] == "0.0.0.0:9464"
        assert env["VIDSCAN_JWT_SECRET"] == stack.env["VIDSCAN_JWT_SECRET"]
        assert stack.podman("exec", server, "id", "-u").stdout.strip() == "10001"
        refused = stack.podman("exec", server, "touch", "/opt/venv/x", check=False)
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    finally:
        stack.podman("kube", "play", "--down", str(manifest), timeout=120, check=False)
        stack.podman("secret", "rm", kube.SECRET, check=False)
