"""The composition root: the only place that builds adapters and wires services.

``build_core`` turns validated settings into the adapters and use cases shared by
the gRPC server and the analysis workers; ``build_app`` adds the gRPC server,
``build_worker`` the worker-only process, ``open_repository`` the CLI's database.
Running them until SIGTERM/SIGINT is ``processes.py``'s job; stopping background
work in order is ``background.py``'s.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import timedelta

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from vidscan.v1 import (
    analysis_pb2,
    analysis_pb2_grpc,
    content_pb2,
    content_pb2_grpc,
    upload_pb2,
    upload_pb2_grpc,
)

from server import tracing
from server.analysis.analyzer import AnalysisRules, AnalysisWorker, Analyzer
from server.analysis.changes import AnalysisChanges, MemoryChanges, NotifyingAnalyses
from server.analysis.queue import MemoryQueue, QueueKeys, RecoverableQueue, RedisStreamQueue
from server.analysis.queue_gauges import sample_queue
from server.analysis.recovery import QueueRecovery
from server.analysis.redis_changes import RedisChanges
from server.analysis.stage import AnalysisStage
from server.analysis.watch import AnalysisWatch
from server.api.analysis_servicer import AnalysisServicer
from server.api.content_servicer import ContentServicer
from server.api.interceptors import RequestContext, RpcMetrics
from server.api.reflection import enable_reflection
from server.api.upload_servicer import UploadServicer
from server.auth import Authenticator, JwksKeys, TokenAuthority
from server.background import Background, Closer
from server.clock import Clock, system_clock
from server.config import DEVELOPMENT_JWT_SECRET, Settings
from server.db.analyses import SqlAnalysisRepository
from server.db.engine import create_engine
from server.db.migrate import upgrade_to_head
from server.db.repository import SqlRepository
from server.detection.readiness import keep_detector_loaded
from server.detection.triton import TritonDetector, TritonOptions
from server.faults import FaultPoints, parse_fault_points
from server.health import LIVENESS, Dependency, DependencyHealth
from server.janitor import Janitor
from server.lifecycle import Admission
from server.limits.memory import MemoryLeaseSets, MemoryTokenBuckets
from server.limits.policy import LimitRules, UserLimits
from server.limits.port import LeaseSets, Rate, TokenBuckets
from server.limits.redis import RedisLeaseSets, RedisTokenBuckets
from server.media.isolation import MediaInspector, MediaWorkerConfig
from server.media.pool import MediaPool
from server.redis_client import redis_client
from server.sessions.memory import MemorySessionStore
from server.sessions.port import LockingSessionStore, SessionLocker, SessionStore
from server.sessions.redis import RedisSessionStore
from server.storage.filesystem import FilesystemObjectStore
from server.storage.links import ContentRouteLinks, PlaybackLinks, PresignedLinks
from server.storage.offload import IoThreadStore
from server.storage.port import InventoriedStore
from server.storage.s3 import S3ObjectStore
from server.storage.signing import LinkSigner
from server.upload.budget import PartBudget
from server.upload.open_session import SessionOpener
from server.upload.pipeline import UploadPipeline, UploadRules
from server.upload.stall import StallPolicy
from server.webhooks.announce import WebhookAnnouncer
from server.webhooks.delivery import DeliveryRules, DeliveryWorker
from server.webhooks.policy import CallbackPolicy
from server.webhooks.sender import AiohttpSender
from server.webhooks.signing import WebhookSigner

log = logging.getLogger("vidscan")

SERVICE_NAMES = (
    upload_pb2.DESCRIPTOR.services_by_name["UploadService"].full_name,
    analysis_pb2.DESCRIPTOR.services_by_name["AnalysisService"].full_name,
    content_pb2.DESCRIPTOR.services_by_name["ContentService"].full_name,
)
# Health service name that reports whether Triton and every allowed model are ready.
DETECTOR_HEALTH = "vidscan.detector"
RECOVERY_INTERVAL_SECONDS = 30.0
# The janitor leaves alone what is younger than the session TTL plus this: a stream
# that began just before its session expired may still be finishing.
JANITOR_GRACE_SECONDS = 600
# An analysis younger than this may simply not be enqueued yet by its upload.
RECOVERY_MIN_AGE_SECONDS = 30.0
# Webhook deliveries: a queue of their own beside the analysis jobs.
WEBHOOK_KEYS = QueueKeys.named("vidscan:webhook-", group="webhook-workers")


@dataclass
class Webhooks:
    """What delivers the final analyses to the uploads' callback URLs."""

    queue: RecoverableQueue
    policy: CallbackPolicy
    signer: WebhookSigner
    sender: AiohttpSender
    rules: DeliveryRules


@dataclass
class Core:
    """Adapters and use cases shared by the server and the workers."""

    settings: Settings
    clock: Clock
    repository: SqlRepository
    analyses: SqlAnalysisRepository
    store: InventoriedStore
    sessions: SessionStore
    locker: SessionLocker
    media: MediaInspector
    queue: RecoverableQueue
    changes: AnalysisChanges
    detector: TritonDetector | None
    analyzer: Analyzer | None
    callbacks: CallbackPolicy
    webhooks: Webhooks | None = None
    background: Background = field(default_factory=Background)

    def spawn(self, coro: Awaitable[None]) -> None:
        self.background.spawn(coro)

    async def close(self) -> None:
        await self.background.close()


def database_url(settings: Settings) -> str:
    return settings.database_url or f"sqlite+aiosqlite:///{settings.data_dir / 'vidscan.db'}"


async def build_store(settings: Settings) -> InventoriedStore:
    if settings.s3_bucket:

        async def open_s3() -> InventoriedStore:
            return await S3ObjectStore.open(
                endpoint_url=settings.s3_endpoint_url,
                bucket=settings.s3_bucket,
                region=settings.s3_region,
                access_key_id=settings.s3_access_key_id,
                secret_access_key=settings.s3_secret_access_key.get_secret_value(),
                payload_signing=settings.s3_payload_signing,
            )

        if settings.s3_io_thread:
            return await IoThreadStore.open(open_s3)
        return await open_s3()
    return FilesystemObjectStore(root=settings.data_dir / "objects")


def link_signer(settings: Settings) -> LinkSigner:
    """Signs the content route's links (the embedded store's playable URLs)."""
    key = settings.url_signing_key.get_secret_value()
    if not key:
        secret = settings.jwt_secret.get_secret_value()
        key = "" if secret == DEVELOPMENT_JWT_SECRET else secret  # public: random instead
    return LinkSigner.for_secret(key or None)


def playback_links(settings: Settings, signer: LinkSigner) -> PlaybackLinks:
    """``s3_url``: presigned for S3, the signed content route for the embedded store."""
    if settings.s3_bucket:
        return PresignedLinks(
            endpoint_url=settings.s3_public_endpoint_url or settings.s3_endpoint_url,
            bucket=settings.s3_bucket,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key.get_secret_value(),
            expires_seconds=settings.playback_url_seconds,
        )
    return ContentRouteLinks(
        signer=signer,
        expires_seconds=settings.playback_url_seconds,
        base_url=settings.public_base_url,
    )


def build_sessions(settings: Settings, clock: Clock) -> LockingSessionStore:
    if settings.redis_url:
        return RedisSessionStore.from_url(settings.redis_url)
    return MemorySessionStore(clock=clock)


async def build_limits(settings: Settings, closers: list[Closer]) -> UserLimits:
    """Per-user limits, shared by the replicas through Redis (memory when embedded)."""
    buckets: TokenBuckets
    leases: LeaseSets
    if settings.redis_url:
        # One connection pool for both: each check is a single script call.
        client = redis_client(settings.redis_url)
        buckets, leases = RedisTokenBuckets(client), RedisLeaseSets(client)
        closers.append(client.aclose)
    else:
        buckets, leases = MemoryTokenBuckets(), MemoryLeaseSets()

    def rate(per_second: float, burst: int) -> Rate | None:
        return Rate(per_second=per_second, burst=burst) if per_second > 0 else None

    return UserLimits(
        buckets=buckets,
        leases=leases,
        rules=LimitRules(
            create_rate=rate(settings.create_session_rate, settings.create_session_burst),
            unary_rate=rate(settings.unary_rate, settings.unary_burst),
            max_sessions=settings.max_sessions_per_user,
            session_ttl_seconds=settings.session_ttl_seconds,
            max_streams=settings.max_streams_per_user,
        ),
    )


def build_queue(settings: Settings) -> RecoverableQueue:
    if settings.redis_url:
        return RedisStreamQueue.from_url(
            settings.redis_url, reclaim_after_seconds=settings.analysis_reclaim_seconds
        )
    return MemoryQueue()


def build_changes(settings: Settings) -> AnalysisChanges:
    """Analysis change notifications: across replicas through Redis, else in-process."""
    if settings.redis_url:
        return RedisChanges.from_url(settings.redis_url)
    return MemoryChanges()


def callback_policy(settings: Settings) -> CallbackPolicy:
    return CallbackPolicy(
        hosts=settings.callback_host_patterns, allow_http=settings.callback_allow_http
    )


def build_webhooks(settings: Settings, closers: list[Closer]) -> Webhooks | None:
    """None when no callback host is allowed (every callback_url is refused then)."""
    policy = callback_policy(settings)
    if not policy.enabled:
        return None
    queue: RecoverableQueue
    if settings.redis_url:
        # A job in the hands of a process that died is taken over after this: well
        # past one attempt's timeout, so a slow receiver is not called twice at once.
        queue = RedisStreamQueue.from_url(
            settings.redis_url,
            reclaim_after_seconds=max(30.0, 3 * settings.webhook_timeout_seconds),
            keys=WEBHOOK_KEYS,
        )
    else:
        queue = MemoryQueue()
    closers.append(queue.close)
    sender = AiohttpSender(timeout_seconds=settings.webhook_timeout_seconds)
    closers.append(sender.close)
    return Webhooks(
        queue=queue,
        policy=policy,
        signer=WebhookSigner.from_secret(settings.webhook_secret.get_secret_value()),
        sender=sender,
        rules=DeliveryRules(
            retry_base_seconds=settings.webhook_retry_seconds,
            retry_max_seconds=settings.webhook_retry_max_seconds,
            max_attempts=settings.webhook_max_attempts,
            max_age=timedelta(seconds=settings.webhook_max_age_seconds),
        ),
    )


def fault_points(settings: Settings) -> FaultPoints:
    faults = parse_fault_points(settings.fault_points)
    if settings.fault_points:
        log.warning("FAULT INJECTION IS ON (VIDSCAN_FAULT_POINTS=%s)", settings.fault_points)
    return faults


def token_authority(settings: Settings, clock: Clock = system_clock) -> TokenAuthority:
    return TokenAuthority(
        secret=settings.jwt_secret.get_secret_value(),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        clock=clock,
        leeway_seconds=settings.jwt_leeway_seconds,
    )


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS (and mTLS with a client CA) for the gRPC port; None for plaintext."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    client_ca = settings.tls_client_ca_file
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=client_ca.read_bytes() if client_ca is not None else None,
        require_client_auth=client_ca is not None,
    )


def authenticator(settings: Settings, clock: Clock = system_clock) -> Authenticator:
    return Authenticator(
        hs256=token_authority(settings, clock) if settings.accepts_hs256 else None,
        jwks=(
            JwksKeys(
                settings.jwks_url,
                cache_seconds=settings.jwks_cache_seconds,
                refetch_cooldown_seconds=settings.jwks_refetch_cooldown_seconds,
            )
            if settings.jwks_url
            else None
        ),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway_seconds=settings.jwt_leeway_seconds,
    )


def media_worker_config(settings: Settings) -> MediaWorkerConfig:
    if settings.media_fault_injection:
        log.warning(
            "FAULT INJECTION IS ON (VIDSCAN_MEDIA_FAULT_INJECTION=%s)",
            settings.media_fault_injection,
        )
    return MediaWorkerConfig(
        timeout_seconds=settings.media_timeout_seconds,
        memory_limit_bytes=settings.media_memory_limit_bytes,
        max_pixels=settings.max_video_pixels,
        max_seconds=settings.max_video_seconds,
        max_fps=settings.max_video_fps,
        fault_injection=settings.media_fault_injection,
        workers=settings.media_workers,
        recycle_jobs=settings.media_recycle_jobs,
        queue_wait_seconds=settings.media_queue_wait_seconds,
    )


async def build_core(settings: Settings, *, clock: Clock = system_clock) -> Core:
    closers: list[Closer] = []
    try:
        engine = create_engine(database_url(settings))
        closers.append(engine.dispose)
        tracing.instrument_engine(engine.sync_engine)
        await upgrade_to_head(engine)
        store = await build_store(settings)
        closers.append(store.close)
        sessions = build_sessions(settings, clock)
        closers.append(sessions.close)
        await sessions.ping()
        queue = build_queue(settings)
        closers.append(queue.close)
        changes = build_changes(settings)
        closers.append(changes.close)
        media_config = media_worker_config(settings)
        # Started here, before anything serves: a server whose media workers cannot
        # start fails to start instead of reporting SERVING.
        pool = MediaPool(options=media_config.pool_options())
        await pool.start()
        closers.append(pool.close)
        webhooks = build_webhooks(settings, closers)
    except BaseException:
        for close in reversed(closers):
            await close()
        raise
    spool_dir = settings.data_dir / "spool"
    spool_dir.mkdir(parents=True, exist_ok=True)
    media = MediaInspector(config=media_config, pool=pool)
    analyses = SqlAnalysisRepository(engine=engine, clock=clock)
    detector: TritonDetector | None = None
    analyzer: Analyzer | None = None
    if settings.triton_url:
        detector = TritonDetector(
            options=TritonOptions(
                url=settings.triton_url,
                timeout_seconds=settings.triton_timeout_seconds,
                shared_memory=settings.triton_shm,
            ),
            models=settings.model_allow_list,
        )
        closers.append(detector.close)
        analyzer = Analyzer(
            analyses=NotifyingAnalyses(inner=analyses, changes=changes),
            store=store,
            media=media,
            detector=detector,
            rules=AnalysisRules(
                frames=settings.analysis_frames,
                threshold=settings.detection_threshold,
                strategy=settings.aggregation,
                lease=timedelta(seconds=settings.analysis_lease_seconds),
                max_attempts=settings.analysis_max_attempts,
                spool_dir=spool_dir,
                frame_policy=settings.frame_policy,
                decode_threads=settings.decode_threads,
            ),
            on_final=None if webhooks is None else WebhookAnnouncer(queue=webhooks.queue),
        )
    return Core(
        settings=settings,
        clock=clock,
        repository=SqlRepository(
            engine=engine, clock=clock, default_quota=settings.default_upload_quota
        ),
        analyses=analyses,
        store=store,
        sessions=sessions,
        media=media,
        queue=queue,
        changes=changes,
        locker=sessions,
        detector=detector,
        analyzer=analyzer,
        callbacks=callback_policy(settings),
        webhooks=webhooks,
        background=Background(closers=closers),
    )


def start_workers(core: Core, *, count: int) -> None:
    """The analysis workers and, beside them, the webhook delivery workers."""
    host = socket.gethostname()
    start_delivery_workers(core, host=host)
    if core.analyzer is None or count == 0:
        return
    for index in range(count):
        worker = AnalysisWorker(
            queue=core.queue,
            analyzer=core.analyzer,
            analyses=core.analyses,
            name=f"{host}-{id(core):x}-{index}",
        )
        core.background.add_worker(
            worker.run_forever(
                stop=core.background.stopping,
                retry_delay_seconds=core.settings.analysis_retry_seconds,
            )
        )
    core.spawn(
        queue_recovery(core).run_forever(
            stop=core.background.stopping, interval_seconds=RECOVERY_INTERVAL_SECONDS
        )
    )


def start_delivery_workers(core: Core, *, host: str) -> None:
    webhooks = core.webhooks
    if webhooks is None:
        return
    for index in range(core.settings.webhook_workers):
        worker = DeliveryWorker(
            queue=webhooks.queue,
            analyses=core.analyses,
            sender=webhooks.sender,
            signer=webhooks.signer,
            policy=webhooks.policy,
            rules=webhooks.rules,
            clock=core.clock,
            name=f"{host}-{id(core):x}-webhook-{index}",
        )
        core.background.add_worker(worker.run_forever(stop=core.background.stopping))


def queue_recovery(core: Core) -> QueueRecovery:
    """Re-queues analyses that need a worker but have no job (a failed enqueue, a
    Redis that lost its data, the in-memory queue of a restarted process)."""
    return QueueRecovery(
        analyses=core.analyses,
        queue=core.queue,
        clock=core.clock,
        min_age=timedelta(seconds=RECOVERY_MIN_AGE_SECONDS),
    )


@dataclass
class App:
    core: Core
    server: grpc.aio.Server
    port: int
    admission: Admission
    health: health.aio.HealthServicer
    stage: AnalysisStage
    watch: AnalysisWatch

    async def stop(self, grace_seconds: float) -> None:
        """Refuses new uploads, lets running ones finish within the grace period,
        then closes every adapter."""
        self.admission.drain()
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.admission.wait_idle(grace_seconds)
        await self.server.stop(grace=1.0)
        await self.stage.close()
        await self.core.close()


async def build_app(settings: Settings, *, clock: Clock = system_clock) -> App:
    core = await build_core(settings, clock=clock)
    budget = PartBudget(limit_bytes=settings.part_budget_bytes)
    pipeline = UploadPipeline(
        sessions=core.sessions,
        locker=core.locker,
        store=core.store,
        repository=core.repository,
        media=core.media,
        rules=UploadRules(
            max_bytes=settings.max_upload_bytes,
            part_size=settings.part_size,
            parts_in_flight=settings.s3_parts_in_flight,
            spool_dir=settings.data_dir / "spool",
            default_model=settings.default_model,
            lock_seconds=settings.stream_lock_seconds,
        ),
        clock=clock,
        faults=fault_points(settings),
        budget=budget,
    )
    auth = authenticator(settings, clock)
    admission = Admission(max_in_flight=settings.max_streams_per_process)
    limits = await build_limits(settings, core.background.closers)
    signer = link_signer(settings)
    links = playback_links(settings, signer)
    watch = AnalysisWatch(
        feed=core.changes,
        poll_seconds=settings.watch_poll_seconds,
        max_watchers=settings.max_watchers_per_process,
    )
    stage = AnalysisStage(
        allowed_models=settings.model_allow_list,
        default_model=settings.default_model,
        queue=core.queue,
        analyses=core.analyses,
        analyzer=core.analyzer,
        wait_budget_seconds=settings.analysis_wait_seconds,
    )
    server = grpc.aio.server(
        # Tracing outermost, so the request's log lines carry its trace id.
        interceptors=[*tracing.server_interceptors(), RequestContext(), RpcMetrics()],
        options=[
            ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
            ("grpc.max_send_message_length", 16 * 1024 * 1024),
            # 1 only in the processes `serve` supervises (server/supervisor.py): else a
            # second server started by mistake on the same port would share it silently.
            ("grpc.so_reuseport", int(settings.so_reuseport)),
            # BDP probing lets a fast client grow the stream window to many MiB that
            # the server then buffers; off, memory per upload stays near the part
            # window (measured: 1 GiB upload, peak RSS +65-74 MiB instead of +88-130).
            ("grpc.http2.bdp_probe", 0),
            # Connections end after VIDSCAN_MAX_CONNECTION_AGE_SECONDS (GOAWAY; calls
            # running then get the grace period to finish), so clients behind an L4
            # balancer reconnect and spread over new replicas instead of pinning one.
            ("grpc.max_connection_age_ms", int(settings.max_connection_age_seconds * 1000)),
            (
                "grpc.max_connection_age_grace_ms",
                int(settings.max_connection_age_grace_seconds * 1000),
            ),
            # Keepalive pings find dead peers (a client that vanished mid-upload) and keep
            # idle connections open through NATs; clients may ping every 10 s at most.
            ("grpc.keepalive_time_ms", int(settings.keepalive_seconds * 1000)),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_pings_without_data", 0),
            # Keepalive enforcement: a client pinging more often than every 10 s (with
            # no call data between) gets a strike; after 2 the server sends GOAWAY
            # ENHANCE_YOUR_CALM, as gRPC's keepalive policy prescribes.
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_ping_strikes", 2),
            # Calls one connection may carry at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS;
            # more wait in the client), and how long a connection without calls stays.
            ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
            ("grpc.max_connection_idle_ms", int(settings.max_connection_idle_seconds * 1000)),
        ],
    )
    upload_pb2_grpc.add_UploadServiceServicer_to_server(  # type: ignore[no-untyped-call]
        UploadServicer(
            auth=auth,
            sessions=core.sessions,
            videos=core.repository,
            opener=SessionOpener(
                sessions=core.sessions,
                repository=core.repository,
                clock=clock,
                ttl=timedelta(seconds=settings.session_ttl_seconds),
                max_bytes=settings.max_upload_bytes,
                limits=limits,
            ),
            pipeline=pipeline,
            analysis=stage,
            admission=admission,
            limits=limits,
            links=links,
            stall=StallPolicy(
                idle_seconds=settings.stream_idle_seconds,
                min_bytes_per_second=settings.stream_min_bytes_per_second,
                pressured_idle_seconds=settings.stream_idle_under_pressure_seconds,
            ),
            pressure=lambda: budget.contended,
            clock=clock,
            max_metadata_bytes=settings.max_metadata_bytes,
            callbacks=core.callbacks,
        ),
        server,
    )
    analysis_pb2_grpc.add_AnalysisServiceServicer_to_server(  # type: ignore[no-untyped-call]
        AnalysisServicer(
            auth=auth,
            repository=core.repository,
            links=links,
            limits=limits,
            watch=watch,
        ),
        server,
    )
    content_pb2_grpc.add_ContentServiceServicer_to_server(  # type: ignore[no-untyped-call]
        ContentServicer(
            auth=auth,
            repository=core.repository,
            store=core.store,
            limits=limits,
            signer=signer,
        ),
        server,
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set(DETECTOR_HEALTH, health_pb2.HealthCheckResponse.NOT_SERVING)
    await health_servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
    dependencies = DependencyHealth(
        health_servicer,
        dependencies=(
            Dependency("vidscan.database", core.repository.ping),
            Dependency("vidscan.sessions", core.sessions.ping),
            Dependency("vidscan.objects", core.store.ping),
            Dependency("vidscan.media", core.media.pool.ping),
        ),
        overall=("", *SERVICE_NAMES),
        draining=lambda: admission.draining,
        timeout_seconds=settings.health_probe_timeout_seconds,
    )
    await dependencies.check_once()
    core.background.closers.append(dependencies.close)  # closers run last-first
    core.spawn(
        dependencies.run_forever(
            stop=core.background.stopping, interval_seconds=settings.health_interval_seconds
        )
    )
    core.spawn(
        sample_queue(
            core.queue,
            stop=core.background.stopping,
            interval_seconds=settings.health_interval_seconds,
        )
    )
    enable_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    credentials = server_credentials(settings)
    port = (
        server.add_secure_port(settings.grpc_listen, credentials)
        if credentials is not None
        else server.add_insecure_port(settings.grpc_listen)
    )
    if port == 0:
        await core.close()
        raise RuntimeError(f"cannot listen on {settings.grpc_listen}")

    if core.detector is not None:

        async def report(ready: bool) -> None:
            status = health_pb2.HealthCheckResponse
            await health_servicer.set(
                DETECTOR_HEALTH, status.SERVING if ready else status.NOT_SERVING
            )
            log.info("detector %s", "ready" if ready else "NOT ready")

        core.spawn(keep_detector_loaded(core.detector, report))
    start_workers(core, count=settings.analysis_workers)
    janitor = Janitor(
        store=core.store,
        repository=core.repository,
        spool_dir=settings.data_dir / "spool",
        max_age=timedelta(seconds=settings.session_ttl_seconds + JANITOR_GRACE_SECONDS),
        clock=clock,
        recovery=queue_recovery(core),
    )
    core.spawn(janitor.run_forever(interval_seconds=settings.janitor_interval_seconds))
    return App(
        core=core,
        server=server,
        port=port,
        admission=admission,
        health=health_servicer,
        stage=stage,
        watch=watch,
    )


async def build_worker(settings: Settings) -> Core:
    """``vidscan-server worker``: the core, analysis workers and the detector's
    readiness loop; no gRPC server."""
    core = await build_core(settings)
    detector = core.detector
    if detector is None:
        await core.close()
        raise SystemExit("TRITON_URL is not set: a worker needs a detector")

    async def report(ready: bool) -> None:
        log.info("detector %s", "ready" if ready else "NOT ready")

    core.spawn(keep_detector_loaded(detector, report))
    start_workers(core, count=max(1, settings.analysis_workers))
    return core


@contextlib.asynccontextmanager
async def open_repository(settings: Settings) -> AsyncIterator[SqlRepository]:
    """The database, migrated, for the CLI's one-off commands."""
    engine = create_engine(database_url(settings))
    try:
        await upgrade_to_head(engine)
        yield SqlRepository(
            engine=engine, clock=system_clock, default_quota=settings.default_upload_quota
        )
    finally:
        await engine.dispose()
