"""The ``hivepipe ingest mqtt`` process: one :class:`~ingest.mqtt.adapter.MqttIngest` until
SIGTERM or SIGINT stop it gracefully, its Prometheus metrics on ``HIVEPIPE_MQTT_METRICS_PORT``
when that is set."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop

from ingest.mqtt.adapter import MqttIngest
from services.platform import Settings, metrics, runtime

log = logging.getLogger(__name__)


async def serve(settings: Settings) -> None:
    """Run the adapter until SIGTERM or SIGINT, then stop it gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if settings.mqtt_metrics_port:
        metrics.serve(settings.mqtt_metrics_port, settings.api_host)
    ingest = MqttIngest(settings)
    await ingest.start()
    runtime.settle_heap()
    try:
        await stop.wait()
    finally:
        log.info("stopping the MQTT ingest")
        await ingest.stop()


def run(settings: Settings) -> None:
    """``hivepipe ingest mqtt``."""
    if not settings.mqtt_url or not settings.kafka:
        raise SystemExit("HIVEPIPE_MQTT_URL and HIVEPIPE_KAFKA are required")
    # uvloop, as the API and the worker run: asyncio's own loop (its timers, its selector)
    # took 0.20-0.21 ms of the adapter's CPU per message at 500/s against 0.18-0.20 with
    # uvloop, in interleaved runs (docs/benchmarks.md; paho then still had its own thread).
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(settings))
