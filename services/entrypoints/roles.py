"""The role processes ``hivepipe up`` runs: how one is started (``python -m
services.entrypoints.cli <role>``), stopped and killed, the API's shared listening socket, and
how the supervisor tells that the API answers and the worker has joined its group."""

from __future__ import annotations

import http.client
import logging
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass

from services.entrypoints.supervised import Supervised
from services.platform import Settings

log = logging.getLogger(__name__)


ROLES: dict[str, list[str]] = {
    "worker": ["worker"],
    "api": ["api"],
    "mqtt": ["ingest", "mqtt"],
}


def spawn_role(
    role: str, env: dict[str, str], *, args: tuple[str, ...] = (), pass_fds: tuple[int, ...] = ()
) -> subprocess.Popen[bytes]:
    """Start one role as ``python -m services.entrypoints.cli <role> [args]`` in its own process
    group (a Ctrl-C in the terminal reaches the supervisor alone), with ``pass_fds`` inherited."""
    return subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "services.entrypoints.cli", *ROLES[role], *args],
        env=env,
        start_new_session=True,
        pass_fds=pass_fds,
    )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class RoleProcess:
    """A role's running process, as :class:`~services.entrypoints.supervised.Supervised` sees it."""

    proc: subprocess.Popen[bytes]
    stop_timeout: float = 20.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def stop(self) -> None:
        stop_process(self.proc, self.stop_timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def bind_api_socket(settings: Settings) -> socket.socket:
    """The API's listening socket, bound here once and inherited by every API process.

    One socket, so one accept queue: the connections a dying process had not accepted yet go to
    the others, and none is refused while it restarts (with one socket per process and
    SO_REUSEPORT, the kernel would reset those queued on the dead one's)."""
    family = socket.AF_INET6 if ":" in settings.api_host else socket.AF_INET
    return socket.create_server((settings.api_host, settings.api_port), family=family, backlog=2048)


def api_answers(settings: Settings) -> bool:
    """Whether an API process answers ``GET /healthz`` (the shared socket accepts connections
    before any process is ready, so a connection alone proves nothing)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.api_host, settings.api_host)  # noqa: S104
    conn = http.client.HTTPConnection(host, settings.api_port, timeout=0.5)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def worker_ready(settings: Settings, pid: int) -> bool:
    """Whether the worker of ``pid`` has joined its consumer group."""
    from stream import ready_file

    return ready_file(settings, pid).exists()


def start_roles(settings: Settings, env: dict[str, str], api: socket.socket) -> list[Supervised]:
    """The worker, the MQTT adapter and ``settings.api_processes`` API processes serving ``api``."""
    fd = api.fileno()

    def api_process() -> RoleProcess:
        return RoleProcess(spawn_role("api", env, args=("--fd", str(fd)), pass_fds=(fd,)))

    # A stable name in the consumer group: the worker started again takes its partitions back
    # at once (static membership) instead of waiting for the dead member's session to expire.
    worker_env = {
        **env,
        "HIVEPIPE_WORKER_INSTANCE": settings.worker_instance or f"{socket.gethostname()}-worker-1",
    }
    roles = [
        Supervised("worker", "worker", lambda: RoleProcess(spawn_role("worker", worker_env), 30.0)),
        Supervised("mqtt", "mqtt", lambda: RoleProcess(spawn_role("mqtt", env))),
    ]
    roles += [
        Supervised(f"api-{n}", "api", api_process) for n in range(1, settings.api_processes + 1)
    ]
    if settings.api_processes > 1 and settings.rate_limit_storage.startswith("memory"):
        log.warning(
            "%d API processes count rate limits each in its own memory: an account may get up "
            "to %d times its limits (HIVEPIPE_RATE_LIMIT_STORAGE=redis://... shares them)",
            settings.api_processes,
            settings.api_processes,
        )
    return roles
