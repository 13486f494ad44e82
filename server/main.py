"""The composition root: the only place that builds adapters and wires services.

``build_app`` turns validated settings into a started-but-not-listening set of
parts; ``serve`` runs them until SIGTERM/SIGINT and shuts down gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from vidscan.v1 import analysis_pb2, analysis_pb2_grpc, upload_pb2, upload_pb2_grpc

from server.analysis.stage import AnalysisStage
from server.api.analysis_servicer import AnalysisServicer
from server.api.upload_servicer import UploadServicer
from server.auth import TokenAuthority
from server.clock import Clock, system_clock
from server.config import Settings
from server.db.engine import create_engine
from server.db.migrate import upgrade_to_head
from server.db.repository import Repository
from server.janitor import Janitor
from server.lifecycle import Admission
from server.media.isolation import MediaInspector, MediaWorkerConfig
from server.sessions.memory import MemorySessionStore
from server.sessions.port import SessionStore
from server.sessions.redis import RedisSessionStore
from server.storage.filesystem import FilesystemObjectStore
from server.storage.port import ObjectStore
from server.storage.s3 import S3ObjectStore
from server.upload.pipeline import UploadPipeline, UploadRules

log = logging.getLogger("vidscan")

SERVICE_NAMES = (
    upload_pb2.DESCRIPTOR.services_by_name["UploadService"].full_name,
    analysis_pb2.DESCRIPTOR.services_by_name["AnalysisService"].full_name,
)
DEFAULT_MODEL = "frame_ensemble"
ALLOWED_MODELS = ("frame_ensemble", "frame_resnet", "frame_cnn")


@dataclass
class App:
    server: grpc.aio.Server
    port: int
    admission: Admission
    health: health.aio.HealthServicer
    background: list[asyncio.Task[None]] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def stop(self, grace_seconds: float) -> None:
        """Refuses new uploads, lets running ones finish within the grace period,
        then closes every adapter."""
        self.admission.drain()
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.admission.wait_idle(grace_seconds)
        await self.server.stop(grace=1.0)
        for task in self.background:
            task.cancel()
        for task in self.background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for close in reversed(self.closers):
            await close()


def database_url(settings: Settings) -> str:
    return settings.database_url or f"sqlite+aiosqlite:///{settings.data_dir / 'vidscan.db'}"


async def build_store(settings: Settings) -> ObjectStore:
    if settings.s3_bucket:
        return await S3ObjectStore.open(
            endpoint_url=settings.s3_endpoint_url,
            bucket=settings.s3_bucket,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key.get_secret_value(),
        )
    return FilesystemObjectStore(root=settings.data_dir / "objects")


def build_sessions(settings: Settings, clock: Clock) -> SessionStore:
    if settings.redis_url:
        return RedisSessionStore.from_url(settings.redis_url)
    return MemorySessionStore(clock=clock)


def token_authority(settings: Settings, clock: Clock = system_clock) -> TokenAuthority:
    return TokenAuthority(
        secret=settings.jwt_secret.get_secret_value(),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        clock=clock,
    )


async def build_app(settings: Settings, *, clock: Clock = system_clock) -> App:
    closers: list[Callable[[], Awaitable[None]]] = []
    engine = create_engine(database_url(settings))
    closers.append(engine.dispose)
    await upgrade_to_head(engine)
    repository = Repository(engine=engine, clock=clock, default_quota=settings.default_upload_quota)
    store = await build_store(settings)
    closers.append(store.close)
    sessions = build_sessions(settings, clock)
    closers.append(sessions.close)
    await sessions.ping()

    spool_dir = settings.data_dir / "spool"
    spool_dir.mkdir(parents=True, exist_ok=True)
    media = MediaInspector(
        config=MediaWorkerConfig(
            timeout_seconds=settings.media_timeout_seconds,
            memory_limit_bytes=settings.media_memory_limit_bytes,
            max_pixels=settings.max_video_pixels,
            max_seconds=settings.max_video_seconds,
            max_fps=settings.max_video_fps,
            fault_injection=settings.media_fault_injection,
        )
    )
    pipeline = UploadPipeline(
        sessions=sessions,
        store=store,
        repository=repository,
        media=media,
        rules=UploadRules(
            max_bytes=settings.max_upload_bytes,
            part_size=settings.part_size,
            parts_in_flight=settings.s3_parts_in_flight,
            spool_dir=spool_dir,
            default_model=DEFAULT_MODEL,
        ),
        clock=clock,
    )
    auth = token_authority(settings, clock)
    admission = Admission()
    stage = AnalysisStage(allowed_models=ALLOWED_MODELS, default_model=DEFAULT_MODEL)

    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
            ("grpc.max_send_message_length", 16 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ]
    )
    upload_pb2_grpc.add_UploadServiceServicer_to_server(  # type: ignore[no-untyped-call]
        UploadServicer(
            auth=auth,
            sessions=sessions,
            repository=repository,
            pipeline=pipeline,
            analysis=stage,
            admission=admission,
            clock=clock,
            session_ttl=timedelta(seconds=settings.session_ttl_seconds),
            max_upload_bytes=settings.max_upload_bytes,
            max_metadata_bytes=settings.max_metadata_bytes,
        ),
        server,
    )
    analysis_pb2_grpc.add_AnalysisServiceServicer_to_server(  # type: ignore[no-untyped-call]
        AnalysisServicer(auth=auth, repository=repository, store=store), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(settings.grpc_listen)
    if port == 0:
        raise RuntimeError(f"cannot listen on {settings.grpc_listen}")

    janitor = Janitor(
        store=store,
        repository=repository,
        spool_dir=spool_dir,
        max_age=timedelta(seconds=settings.session_ttl_seconds),
        clock=clock,
    )
    app = App(server=server, port=port, admission=admission, health=health_servicer)
    app.closers = closers
    app.background.append(
        asyncio.create_task(janitor.run_forever(interval_seconds=settings.janitor_interval_seconds))
    )
    return app


async def serve(settings: Settings) -> None:
    app = await build_app(settings)
    await app.server.start()
    host = settings.grpc_listen.rsplit(":", 1)[0]
    log.info("vidscan listening on %s:%d", host, app.port)
    print(f"vidscan listening on {host}:{app.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: draining %d upload(s)", app.admission.in_flight)
    await app.stop(settings.shutdown_grace_seconds)
    log.info("stopped")
