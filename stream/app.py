"""The Faust app of one worker process (created by a factory: nothing connects at import)."""

from __future__ import annotations

import logging
from typing import Any

import faust

from services.settings import Settings
from stream.resources import Resources

log = logging.getLogger(__name__)


class HivepipeApp(faust.App):
    """A Faust app that owns the worker's :class:`Resources` and closes them at shutdown."""

    resources: Resources

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        await self.resources.close()


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
    }
    app = HivepipeApp(f"{settings.topic_prefix}worker", **conf)
    app.resources = Resources(settings)
    from stream import agents

    agents.register(app, settings)
    return app
