"""The composition root of a worker process: the Faust app with every agent registered
(created by a factory: nothing connects at import)."""

from __future__ import annotations

import logging
import time
from typing import Any

from services.platform import Settings, runtime
from stream import deliveries, journal_replay, lag, orbit_acks, uplinks
from stream.app import HivepipeApp, Tables, ready_file
from stream.monitor import LeanMonitor
from stream.resources import Resources

log = logging.getLogger(__name__)


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
        # No Faust tables, so no standbys: with Faust's default of one, its sticky assignor
        # balances up to ceil(partitions / workers) each, and a third worker on 4 partitions
        # got none (2 + 2 + 0); without, it is floor (2 + 1 + 1).
        "table_standby_replicas": 0,
        # Faust's statistics for its (disabled) web views, without their per-event cost.
        "Monitor": LeanMonitor,
        # No tables: the worker subscribes without Faust's 1 s wait for them.
        "TableManager": Tables,
    }
    if settings.worker_instance:
        # Static membership: a worker started again under the same name takes its partitions
        # back at once, instead of waiting a session time-out for the dead member to expire.
        conf["consumer_group_instance_id"] = settings.worker_instance
    app = HivepipeApp(f"{settings.topic_prefix}worker", **conf)
    app.resources = Resources(settings)
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    ready = ready_file(settings)

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def _ready(sender: Any, **_: Any) -> None:
        # Tells `hivepipe up` and the tests that this worker has its partitions.
        ready.parent.mkdir(parents=True, exist_ok=True)
        ready.touch()
        first = app.joined_at is None
        log.info(
            "%s: %d partitions assigned",
            "joined the consumer group" if first else "rebalanced",
            len(app.consumer.assignment()),
        )
        if first:  # started: what exists now lives as long as the process
            app.joined_at = time.time()
            runtime.settle_heap()

    uplinks.register(app, settings)
    deliveries.register(app, settings)
    orbit_acks.register(app, settings)
    journal_replay.register(app, settings)
    lag.register(app, settings)
    return app
