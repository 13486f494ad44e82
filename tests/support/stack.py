"""deploy/compose.yaml brought up with podman-compose, for tests/test_stack.py.

podman-compose rather than `podman kube play`: the compose file is what users run, so
the test runs that file itself (plus an override that publishes the ports the test
reads from). Two things podman-compose cannot do on the podman this machine has
(Debian bookworm's 4.3) are done here instead:

- `depends_on: condition: service_healthy` needs `podman wait --condition=healthy`
  (podman >= 4.6; podman-compose logs a warning and ignores it before that), so the
  tiers are brought up one at a time in compose.yaml's order: data services, then the
  one-shot migration (its exit status checked), then servers and worker, then the
  gateway.
- Without systemd, podman schedules no health checks; `wait_healthy` runs them itself
  with `podman healthcheck run` (the images' and compose.yaml's own checks).

Machine settings (runc, rlimits podman may set, the netavark network backend with its
DNS, which the replicas' shared alias needs) go in a containers.conf of the run's own
(CONTAINERS_CONF), not in the compose file.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from support.services import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "deploy" / "compose.yaml"

DATA_SERVICES = ("postgres", "redis", "minio", "triton")
APP_SERVICES = ("server-1", "server-2", "worker")

# The images `make images` and scripts/build-stack-images.sh build; each can be
# overridden from the environment (e.g. the official ones where they can be pulled).
LOCAL_IMAGES = {
    "VIDSCAN_SERVER_IMAGE": "localhost/vidscan-server:dev",
    "VIDSCAN_GATEWAY_IMAGE": "localhost/vidscan-gateway:dev",
    "POSTGRES_IMAGE": "localhost/vidscan-stack-postgres:dev",
    "REDIS_IMAGE": "localhost/vidscan-stack-redis:dev",
    "MINIO_IMAGE": "localhost/vidscan-stack-minio:dev",
    "TRITON_IMAGE": "localhost/vidscan-stack-triton:dev",
}


class StackError(RuntimeError):
    pass


def containers_conf(path: Path) -> Path:
    """A containers.conf for this machine: runc (crun cannot set RLIMIT_NPROC here),
    rlimits within the hard limits podman is allowed to set, netavark (DNS between
    containers)."""
    import resource

    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 16384)
    path.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        "[network]\n"
        'network_backend = "netavark"\n'
    )
    return path


@dataclass
class Stack:
    workdir: Path
    project: str = field(default_factory=lambda: f"vidscan-stack-{os.getpid()}")
    ports: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ports = {
            name: free_port() for name in ("server-1", "server-2", "gateway", "postgres", "minio")
        }
        secrets_env = {
            "VIDSCAN_DB_PASSWORD": secrets.token_urlsafe(18),
            "VIDSCAN_S3_SECRET_KEY": secrets.token_urlsafe(18),
            "VIDSCAN_JWT_SECRET": secrets.token_urlsafe(36),
        }
        images = {name: os.environ.get(name, default) for name, default in LOCAL_IMAGES.items()}
        published = {
            "VIDSCAN_SERVER_1_PORT": str(self.ports["server-1"]),
            "VIDSCAN_SERVER_2_PORT": str(self.ports["server-2"]),
            "VIDSCAN_GATEWAY_PORT": str(self.ports["gateway"]),
            "STACK_TEST_POSTGRES_PORT": str(self.ports["postgres"]),
            "STACK_TEST_MINIO_PORT": str(self.ports["minio"]),
        }
        self.env = {**secrets_env, **images, **published}
        # A .env file, as a user would keep next to compose.yaml (never in an image).
        self.env_file = self.workdir / "stack.env"
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in self.env.items()))
        self.env_file.chmod(0o600)
        self.conf = containers_conf(self.workdir / "containers.conf")
        self.override = Path(__file__).with_name("compose.stack-test.yaml")

    # -- commands -----------------------------------------------------------------

    def _process_env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    def _run(
        self, argv: Sequence[str], *, timeout: float, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        self.log.append(" ".join(argv))
        try:
            done = subprocess.run(
                list(argv),
                env=self._process_env(),
                capture_output=True,
                text=True,
                timeout=timeout,
                input=stdin,
                cwd=REPO_ROOT,
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"timed out after {timeout} s: {' '.join(argv)}") from exc
        if check and done.returncode != 0:
            raise StackError(
                f"exit {done.returncode}: {' '.join(argv)}\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        podman_compose = shutil.which("podman-compose", path=str(Path(sys.executable).parent))
        if podman_compose is None:
            raise StackError("podman-compose is not installed in this venv (make venv)")
        return self._run(
            [
                podman_compose,
                "--project-name",
                self.project,
                "--env-file",
                str(self.env_file),
                "-f",
                str(COMPOSE_FILE),
                "-f",
                str(self.override),
                *args,
            ],
            timeout=timeout,
        )

    def podman(
        self, *args: str, timeout: float = 120, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self._run(["podman", *args], timeout=timeout, check=check, stdin=stdin)

    @property
    def network(self) -> str:
        """The compose project's default network."""
        return f"{self.project}_default"

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def state(self, service: str) -> dict[str, object]:
        out = self.podman("inspect", "--format", "{{json .State}}", self.container(service))
        state: dict[str, object] = json.loads(out.stdout)
        return state

    def exec(self, service: str, *argv: str, stdin: str | None = None) -> str:
        flags = ["-i"] if stdin is not None else []
        return self.podman(
            "exec", *flags, self.container(service), *argv, stdin=stdin, timeout=120
        ).stdout

    def crash(self, service: str) -> None:
        """SIGKILLs the container's main process from outside, as the kernel's OOM killer
        would: a crash, not a `podman kill` (which podman counts as a stop by the user
        and never restarts)."""
        pid = self.state(service).get("Pid")
        assert isinstance(pid, int) and pid > 0, f"{service} has no process"
        os.kill(pid, signal.SIGKILL)

    def logs(self, service: str, tail: int = 60) -> str:
        done = self.podman("logs", "--tail", str(tail), self.container(service), check=False)
        return done.stdout + done.stderr

    # -- life cycle ------------------------------------------------------------------

    def up(self) -> dict[str, float]:
        """Brings the stack up tier by tier; returns seconds per tier."""
        timings: dict[str, float] = {}
        start = time.monotonic()
        self.compose("up", "-d", "--no-deps", *DATA_SERVICES)
        self.wait_healthy(DATA_SERVICES, within=240)
        timings["data services healthy"] = time.monotonic() - start

        start = time.monotonic()
        self.compose("up", "-d", "--no-deps", "migrate")
        self.wait_exited("migrate", within=120)
        timings["migrations"] = time.monotonic() - start

        start = time.monotonic()
        self.compose("up", "-d", "--no-deps", *APP_SERVICES)
        self.wait_healthy(("server-1", "server-2"), within=180)
        self.wait_running("worker")
        timings["servers healthy"] = time.monotonic() - start

        start = time.monotonic()
        self.compose("up", "-d", "--no-deps", "gateway")
        self.wait_healthy(("gateway",), within=60)
        timings["gateway healthy"] = time.monotonic() - start
        return timings

    def down(self) -> None:
        self.compose("down", "-v", "-t", "5", timeout=300)

    def wait_healthy(self, services: Iterable[str], *, within: float) -> None:
        pending = list(services)
        deadline = time.monotonic() + within
        while pending:
            for service in list(pending):
                self._check_alive(service)
                done = self.podman("healthcheck", "run", self.container(service), check=False)
                if done.returncode == 0:
                    pending.remove(service)
            if pending and time.monotonic() > deadline:
                raise StackError(
                    f"not healthy within {within} s: {pending}\n"
                    + "\n".join(f"--- {s}\n{self.logs(s)}" for s in pending)
                )
            if pending:
                time.sleep(1.0)

    def wait_running(self, service: str, *, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while self.state(service).get("Status") != "running":
            self._check_alive(service)
            if time.monotonic() > deadline:
                raise StackError(f"{service} not running:\n{self.logs(service)}")
            time.sleep(0.5)

    def wait_exited(self, service: str, *, within: float) -> None:
        deadline = time.monotonic() + within
        while (state := self.state(service)).get("Status") != "exited":
            if time.monotonic() > deadline:
                raise StackError(f"{service} still {state.get('Status')}:\n{self.logs(service)}")
            time.sleep(0.5)
        if state.get("ExitCode") != 0:
            raise StackError(f"{service} exited {state.get('ExitCode')}:\n{self.logs(service)}")

    def _check_alive(self, service: str) -> None:
        state = self.state(service)
        if state.get("Status") in ("exited", "stopped") and state.get("Restarting") is not True:
            raise StackError(f"{service} exited ({state.get('ExitCode')}):\n{self.logs(service)}")
