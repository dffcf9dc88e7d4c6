"""``hivepipe up``: every role in one command, on embedded servers unless real ones are set.

The supervisor starts what is not configured (tansu, PostgreSQL, an MQTT broker), prepares the
installation (migrations, topics, the admin key), then runs each role as its own child process,
exactly as production runs them: ``workers`` workers, ``mqtt_adapters`` MQTT adapters and
``api_processes`` API processes sharing one listening socket. Once every role is ready it prints
one short banner (:func:`banner`). Whatever exits (a role, an embedded server) is started
again with backoff (:mod:`services.entrypoints.supervised`) while the others keep running.
Ctrl-C / SIGTERM stops everything in order: first the ingest roles, then (once the worker has
drained what was accepted) the worker, then the servers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import start_http_server

from services.entrypoints import embedded
from services.entrypoints.bootstrap import callback_token, ensure_admin_key
from services.entrypoints.broker_watch import BrokerWatch
from services.entrypoints.installation import previous_port, write_urls
from services.entrypoints.mqtt_saves import SavesWhileAway
from services.entrypoints.process_table import ProcessTableFile
from services.entrypoints.roles import (
    api_answers,
    bind_api_socket,
    mqtt_shares_subscriptions,
    start_roles,
    worker_ready,
)
from services.entrypoints.supervised import Supervised
from services.platform import (
    ALL_TOPICS,
    BrokerSaves,
    Settings,
    Waker,
    ensure_topics,
    migrate_for,
    open_pool,
)

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


def embedded_partitions(settings: Settings) -> int:
    """Partitions per topic on the embedded Kafka when ``HIVEPIPE_PARTITIONS`` is not set: one
    per worker ``hivepipe up`` runs.

    tansu's memory store keeps one object per partition per produce request, and each fetch
    that finds new data lists every object the partition holds: its CPU per uplink is about
    the partitions one request touches times what they hold. A batch of uplinks keyed by
    device touches every partition, so 4 partitions for 1 worker cost tansu 2 to 2.4 times
    the CPU of 1 (docs/benchmarks.md). The embedded broker starts empty each time, so the
    count is chosen again at each start; more workers than partitions would sit idle."""
    return settings.workers


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
            if "partitions" not in settings.model_fields_set:
                updates["partitions"] = embedded_partitions(settings)
        if not settings.mqtt_url:
            port = previous_port(data_dir, "mqtt_url")
            servers.append(embedded.start_mqtt(data_dir, port, save=settings.embedded_mqtt_save))
            updates["mqtt_url"] = servers[-1].url
            pid_file = embedded.mosquitto_pid_file(data_dir)
            if settings.embedded_mqtt_save == "on-receipt" and pid_file.exists():
                updates["embedded_mqtt_pid_file"] = pid_file  # the adapters ask it for saves
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


#: The ``role`` label of an embedded server's restarts.
SERVER_ROLES = {"postgres": "postgres", "kafka": "kafka", "mqtt": "mqtt-broker"}


def mqtt_saves(
    settings: Settings, servers: list[Supervised], roles: list[Supervised]
) -> SavesWhileAway | None:
    """Saves of the embedded Mosquitto asked for while an MQTT adapter is away (started;
    ``on-receipt`` only)."""
    pid_file = settings.mqtt_save_requests_pid_file
    if pid_file is None:
        return None
    saves = SavesWhileAway(
        BrokerSaves(pid_file),
        [child for child in roles if child.role == "mqtt"],
        next((child for child in servers if child.role == "mqtt-broker"), None),
        waker=Waker(settings.mqtt_url, subscribe=True) if settings.mqtt_url else None,
    )
    saves.start()
    return saves


def supervise_server(server: embedded.Server) -> Supervised:
    """An embedded server, started again on the same port and data directory when it dies."""
    assert server.relaunch is not None, f"{server.name} cannot be started again"
    role = SERVER_ROLES.get(server.name, server.name)
    return Supervised(role, role, server.relaunch, running=server)


def stop_in_order(roles: list[Supervised], servers: list[Supervised], drain: float) -> None:
    """The ingest roles, then the workers after ``drain`` seconds, then the servers (last
    first)."""
    for child in roles:
        if child.role != "worker":
            child.stop()
    workers = [child for child in roles if child.role == "worker"]
    if any(child.process is not None for child in workers):
        # What the ingest roles accepted is on Kafka: give the workers time to store it.
        time.sleep(drain)
    for child in workers:
        child.stop()
    for child in reversed(servers):
        child.stop()


def _plural(count: int, what: str) -> str:
    return f"{count} {what}" + ("" if count == 1 else "es" if what.endswith("s") else "s")


def banner(
    settings: Settings, key: str, roles: list[Supervised], *, took: float, complete: bool
) -> list[str]:
    """What ``hivepipe up`` prints once ready: the ``Name: value`` lines are read by scripts
    and tests (``API key: ``, ``Callback token: ``, ``MQTT: ``, ``Kafka: ``)."""
    counts = {
        role: sum(child.role == role for child in roles) for role in ("api", "worker", "mqtt")
    }
    status = "ready" if complete else "up, some workers not in their group yet (see the log)"
    s = settings
    return [
        f"hivepipe is {status} after {took:.1f} s: {_plural(counts['api'], 'API process')}, "
        f"{_plural(counts['worker'], 'worker')}, {_plural(counts['mqtt'], 'MQTT adapter')}",
        f"API: http://{s.api_host}:{s.api_port}",
        f"API key: {key}",
        f"Callback token: {s.token}",
        f"MQTT: {s.mqtt_url}",
        f"Kafka: {s.kafka}",
        f"Data: {s.data_dir.resolve()}",
        "Stop: Ctrl-C (stops every role, then the servers)",
    ]


def run(settings: Settings, *, echo: Callable[[str], None] = print) -> int:
    """Run everything until Ctrl-C / SIGTERM, restarting what exits; returns the exit code."""
    began = time.monotonic()
    stop = {"signal": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["signal"] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    install = start_servers(settings)
    servers = [supervise_server(server) for server in install.servers]
    roles: list[Supervised] = []
    saves: SavesWhileAway | None = None
    listener: socket.socket | None = None
    table = ProcessTableFile(install.settings.data_dir)  # for `hivepipe status`
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
        shared = s.mqtt_adapters == 1 or mqtt_shares_subscriptions(s)
        roles = start_roles(s, install.child_env(), listener, mqtt_shared=shared)
        workers = [child for child in roles if child.role == "worker"]
        kafka = next((child for child in servers if child.role == "kafka"), None)
        broker = BrokerWatch(s, kafka, roles) if kafka is not None else None
        saves = mqtt_saves(s, servers, roles)
        started, announced = time.monotonic(), False
        while not stop["signal"]:
            for child in (*servers, *roles):
                child.check()
            table.update([*servers, *roles])
            if broker is not None:
                broker.check(time.monotonic())
            if not announced and api_answers(s):
                joined = all(
                    w.process is not None and worker_ready(s, w.process.pid) for w in workers
                )
                if joined or time.monotonic() - started > 60:
                    announced = True
                    took = time.monotonic() - began
                    for line in banner(s, key, roles, took=took, complete=joined):
                        echo(line)
            time.sleep(0.2)
        return 0
    finally:
        if saves is not None:
            saves.stop()
        if listener is not None:
            listener.close()  # the API processes hold it until they stop
        stop_in_order(roles, servers, drain=2 * install.settings.flush_interval + 1.0)
        install.servers.clear()
        table.remove()
