"""Real servers for tests: a URL from the environment, else an embedded one, else a container.

``HIVEPIPE_TEST_DATABASE_URL``, ``HIVEPIPE_TEST_KAFKA`` and ``HIVEPIPE_TEST_MQTT_URL`` point the
suite at existing servers; without them the same launchers as ``hivepipe up`` start private ones
(testcontainers is the last resort, used only where a Docker engine answers).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from services.entrypoints import embedded


def _docker_available() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
    except Exception:
        return False
    return True


@contextmanager
def server_url(kind: str) -> Iterator[str]:
    """Yield a URL for ``kind`` (``database``, ``kafka`` or ``mqtt``), stopping what we started."""
    env = {
        "database": "HIVEPIPE_TEST_DATABASE_URL",
        "kafka": "HIVEPIPE_TEST_KAFKA",
        "mqtt": "HIVEPIPE_TEST_MQTT_URL",
    }[kind]
    if os.environ.get(env):
        yield os.environ[env]
        return
    launcher = {
        "database": embedded.start_postgres,
        "kafka": embedded.start_kafka,
        "mqtt": embedded.start_mqtt,
    }[kind]
    with tempfile.TemporaryDirectory(prefix=f"hivepipe-test-{kind}-") as tmp:
        try:
            server = launcher(Path(tmp))
        except Exception:
            if not _docker_available():
                raise
            with _container(kind) as url:
                yield url
            return
        try:
            yield server.url
        finally:
            server.stop()


@contextmanager
def _container(kind: str) -> Iterator[str]:
    if kind == "database":
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("timescale/timescaledb:latest-pg16", driver=None) as pg:
            yield pg.get_connection_url()
    elif kind == "kafka":
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        from testcontainers.core.container import DockerContainer

        with DockerContainer("eclipse-mosquitto:2").with_exposed_ports(1883) as mq:
            yield f"mqtt://{mq.get_container_host_ip()}:{mq.get_exposed_port(1883)}"


@asynccontextmanager
async def http_receiver(handle: Callable[[Any], Awaitable[Any]]) -> AsyncIterator[int]:
    """An aiohttp server on 127.0.0.1 (a free port) passing every POST to ``handle``; yields
    the port (a webhook receiver for the tests)."""
    from aiohttp import web

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()
