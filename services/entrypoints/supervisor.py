"""``hivepipe up``: every role in one command, on embedded servers unless real ones are set.

The supervisor starts what is not configured (tansu, PostgreSQL, an MQTT broker), prepares the
installation (migrations, topics, the admin key), then runs each role as its own child process,
exactly as production runs them: the worker, the MQTT adapter and ``api_processes`` API
processes sharing one listening socket. Whatever exits (a role, an embedded server) is started
again with backoff (:mod:`services.entrypoints.supervised`) while the others keep running.
Ctrl-C / SIGTERM stops everything in order: first the ingest roles, then (once the worker has
drained what was accepted) the worker, then the servers.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import start_http_server

from services.entrypoints import embedded
from services.entrypoints.bootstrap import callback_token, ensure_admin_key
from services.entrypoints.broker_watch import BrokerWatch
from services.entrypoints.installation import previous_port, write_urls
from services.entrypoints.supervised import Supervised
from services.platform import ALL_TOPICS, Settings, ensure_topics, migrate_for, open_pool

log = logging.getLogger(__name__)


@dataclass
class Installation:
    """The servers in use (those we started) and the resolved settings."""

    settings: Settings
    servers: list[embedded.Server] = field(default_factory=list)

    def stop_servers(self) -> None:
        """Stop the embedded servers, last started first."""
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()

    def child_env(self) -> dict[str, str]:
        """The environment that points a role process at these servers, with every setting."""
        return {**os.environ, **self.settings.as_env()}


def start_servers(settings: Settings) -> Installation:
    """Start an embedded server for each of PostgreSQL, Kafka and MQTT that is not configured."""
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    servers: list[embedded.Server] = []
    updates: dict[str, Any] = {"data_dir": data_dir}
    try:
        if not settings.database_url:
            port = previous_port(data_dir, "database_url")
            servers.append(embedded.start_postgres(data_dir, port))
            updates["database_url"] = servers[-1].url
        if not settings.kafka:
            port = previous_port(data_dir, "kafka")
            servers.append(embedded.start_kafka(data_dir, port, niceness=settings.background_nice))
            updates["kafka"] = servers[-1].url
        if not settings.mqtt_url:
            servers.append(embedded.start_mqtt(data_dir, previous_port(data_dir, "mqtt_url")))
            updates["mqtt_url"] = servers[-1].url
    except BaseException:
        for server in reversed(servers):
            server.stop()
        raise
    if servers or settings.embedded:
        updates["embedded"] = True
        if not settings.token:
            updates["callback_token"] = callback_token(data_dir)
    resolved = Settings.model_validate({**settings.model_dump(), **updates})
    return Installation(settings=resolved, servers=servers)


async def prepare(settings: Settings) -> str:
    """Migrations, topics, and the admin key; returns the key (printed by ``up``)."""
    assert settings.database_url, "a database URL is required"
    assert settings.kafka, "a Kafka address is required"
    pool = await open_pool(
        settings.database_url, size=1, name="prepare", prepare=settings.db_prepare
    )
    try:
        async with pool.connection() as conn:
            await migrate_for(conn, settings)
            key = await ensure_admin_key(conn, settings.data_dir)
    finally:
        await pool.close()
    await ensure_topics(
        settings.kafka, [settings.topic(t) for t in ALL_TOPICS], settings.partitions
    )
    return key


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


#: The ``role`` label of an embedded server's restarts.
SERVER_ROLES = {"postgres": "postgres", "kafka": "kafka", "mqtt": "mqtt-broker"}


def supervise_server(server: embedded.Server) -> Supervised:
    """An embedded server, started again on the same port and data directory when it dies."""
    assert server.relaunch is not None, f"{server.name} cannot be started again"
    role = SERVER_ROLES.get(server.name, server.name)
    return Supervised(role, role, server.relaunch, running=server)


def stop_in_order(roles: list[Supervised], servers: list[Supervised], drain: float) -> None:
    """The ingest roles, then the worker after ``drain`` seconds, then the servers (last first)."""
    for child in roles:
        if child.role != "worker":
            child.stop()
    for child in roles:
        if child.role == "worker" and child.process is not None:
            # What the ingest roles accepted is on Kafka: give the worker time to store it.
            time.sleep(drain)
            child.stop()
    for child in reversed(servers):
        child.stop()


def run(settings: Settings, *, echo: Callable[[str], None] = print) -> int:
    """Run everything until Ctrl-C / SIGTERM, restarting what exits; returns the exit code."""
    stop = {"signal": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["signal"] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    install = start_servers(settings)
    servers = [supervise_server(server) for server in install.servers]
    roles: list[Supervised] = []
    listener: socket.socket | None = None
    try:
        s = install.settings
        key = asyncio.run(prepare(s))
        # For `hivepipe users|keys|accounts`: the embedded servers' ports change at each start.
        write_urls(
            s.data_dir,
            {
                "database_url": s.database_url,
                "kafka": s.kafka,
                "mqtt_url": s.mqtt_url,
                "api": f"http://{s.api_host}:{s.api_port}",
            },
        )
        if s.supervisor_metrics_port:
            start_http_server(s.supervisor_metrics_port, addr=s.api_host)
        listener = bind_api_socket(s)
        if stop["signal"]:  # Ctrl-C while preparing: nothing more to start
            return 0
        roles = start_roles(s, install.child_env(), listener)
        worker = roles[0]
        kafka = next((child for child in servers if child.role == "kafka"), None)
        broker = BrokerWatch(s, kafka, roles) if kafka is not None else None
        started, announced = time.monotonic(), False
        while not stop["signal"]:
            for child in (*servers, *roles):
                child.check()
            if broker is not None:
                broker.check(time.monotonic())
            if not announced and api_answers(s):
                joined = worker.process is not None and worker_ready(s, worker.process.pid)
                if joined or time.monotonic() - started > 60:
                    announced = True
                    echo(f"API: http://{s.api_host}:{s.api_port}")
                    echo(f"API key: {key}")
                    echo(f"Callback token: {s.token}")
                    echo(f"MQTT: {s.mqtt_url}")
                    echo(f"Kafka: {s.kafka}")
            time.sleep(0.2)
        return 0
    finally:
        if listener is not None:
            listener.close()  # the API processes hold it until they stop
        stop_in_order(roles, servers, drain=2 * install.settings.flush_interval + 1.0)
        install.servers.clear()
