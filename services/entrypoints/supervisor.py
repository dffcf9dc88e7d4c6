"""``hivepipe up``: every role in one command, on embedded servers unless real ones are set.

The supervisor starts what is not configured (tansu, PostgreSQL, an MQTT broker), prepares the
installation (migrations, topics, the admin key), then runs each role as its own child process,
exactly as production runs them, and stops everything in order on Ctrl-C / SIGTERM: first the
ingest roles, then (once the worker has drained what was accepted) the worker, then the servers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.entrypoints import admin_cli, embedded
from services.entrypoints.bootstrap import callback_token, ensure_admin_key
from services.platform.db import migrate_for, open_pool
from services.platform.events import ALL_TOPICS
from services.platform.kafka import ensure_topics
from services.platform.settings import Settings


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
            servers.append(embedded.start_postgres(data_dir))
            updates["database_url"] = servers[-1].url
        if not settings.kafka:
            servers.append(embedded.start_kafka(data_dir, niceness=settings.background_nice))
            updates["kafka"] = servers[-1].url
        if not settings.mqtt_url:
            servers.append(embedded.start_mqtt(data_dir))
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


def spawn_role(role: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start one role as ``python -m services.entrypoints.cli <role>`` in its own process group."""
    return subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "services.entrypoints.cli", *ROLES[role]],
        env=env,
        start_new_session=True,
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


def wait_worker_ready(
    settings: Settings, proc: subprocess.Popen[bytes], timeout: float = 60
) -> None:
    """Block until the worker has joined its consumer group (or time runs out)."""
    from stream.app import ready_file

    ready = ready_file(settings, proc.pid)
    deadline = time.monotonic() + timeout
    while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)


def run(settings: Settings, *, echo: Callable[[str], None] = print) -> int:
    """Run everything until Ctrl-C / SIGTERM or a role dies; returns the exit code."""
    stop = {"signal": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["signal"] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    install = start_servers(settings)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        s = install.settings
        key = asyncio.run(prepare(s))
        # For `hivepipe users|keys|accounts`: the embedded servers' ports change at each start.
        admin_cli.write_urls(
            s.data_dir,
            {
                "database_url": s.database_url,
                "kafka": s.kafka,
                "mqtt_url": s.mqtt_url,
                "api": f"http://{s.api_host}:{s.api_port}",
            },
        )
        env = install.child_env()
        procs["worker"] = spawn_role("worker", env)
        procs["mqtt"] = spawn_role("mqtt", env)
        procs["api"] = spawn_role("api", env)
        embedded.wait_for_port(s.api_port, timeout=60, proc=procs["api"])
        wait_worker_ready(s, procs["worker"])
        echo(f"API: http://{s.api_host}:{s.api_port}")
        echo(f"API key: {key}")
        echo(f"Callback token: {s.token}")
        echo(f"MQTT: {s.mqtt_url}")
        echo(f"Kafka: {s.kafka}")
        while not stop["signal"]:
            dead = [name for name, proc in procs.items() if proc.poll() is not None]
            if dead:
                echo(f"role {dead[0]} exited with code {procs[dead[0]].returncode}; stopping")
                return 1
            time.sleep(0.2)
        return 0
    finally:
        for name in ("api", "mqtt"):
            if name in procs:
                stop_process(procs[name])
        if "worker" in procs:
            # What the ingest roles accepted is on Kafka: give the worker time to store it.
            time.sleep(2 * install.settings.flush_interval + 1.0)
            stop_process(procs["worker"], timeout=30)
        install.stop_servers()
