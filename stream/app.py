"""The Faust app of one worker process (created by a factory: nothing connects at import)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import faust

from services import runtime
from services.settings import Settings
from stream.resources import Resources

log = logging.getLogger(__name__)


class HivepipeApp(faust.App):
    """A Faust app that owns the worker's :class:`Resources` and closes them at shutdown."""

    resources: Resources
    #: The consumer's fetch wait (ms), read by :mod:`stream.transport`.
    fetch_max_wait_ms: int = 50

    def _new_transport(self) -> Any:
        from stream.transport import Transport

        return Transport(self.conf.broker_consumer, self)

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        await self.resources.close()


class Worker(faust.Worker):
    """Faust's worker without its terminal spinner.

    To spin on every log record, Faust sets the root logger to DEBUG when the level is WARNING
    or above: every ``log.debug`` in aiokafka and Faust (one per message produced) then builds a
    record that the handler drops, about 8 % of the worker's CPU under load.
    """

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)


def ready_file(settings: Settings, pid: int | None = None) -> Path:
    """The file a worker touches once its first rebalance is complete."""
    return settings.data_dir / "ready" / f"worker-{pid or os.getpid()}"


def create_app(settings: Settings) -> HivepipeApp:
    """A Faust app for these settings, with every agent registered.

    No authoritative state lives in Faust tables (the broker may be memory-only): the store is
    ``memory://`` and the Orbit queue and configuration live in PostgreSQL. The web server is
    disabled so nothing binds 0.0.0.0:6066.
    """
    assert settings.kafka, "HIVEPIPE_KAFKA is required"
    conf: dict[str, Any] = {
        "broker": f"kafka://{settings.kafka}",
        "store": "memory://",
        "web_enabled": False,
        "datadir": str(settings.data_dir / "faust"),
        "topic_partitions": settings.partitions,
        "topic_replication_factor": 1,
        "topic_allow_declare": False,
        "producer_acks": -1,
        "consumer_auto_offset_reset": "earliest",
        "broker_commit_interval": 1.0,
        "stream_wait_empty": False,
        "broker_session_timeout": settings.consumer_session_timeout,
        "broker_rebalance_timeout": settings.consumer_session_timeout,
        "broker_heartbeat_interval": min(3.0, settings.consumer_session_timeout / 4),
    }
    app = HivepipeApp(f"{settings.topic_prefix}worker", **conf)
    app.resources = Resources(settings)
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    ready = ready_file(settings)
    settled: list[bool] = []

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def _ready(sender: Any, **_: Any) -> None:
        # Tells `hivepipe up` and the tests that this worker has its partitions.
        ready.parent.mkdir(parents=True, exist_ok=True)
        ready.touch()
        if not settled:  # started: what exists now lives as long as the process
            settled.append(True)
            runtime.settle_heap()

    from stream import agents

    agents.register(app, settings)
    return app
