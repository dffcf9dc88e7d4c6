"""The agents. Each only loops: decode/store/deliver are functions of services/."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from services.events import TOPIC_UPLINKS, UplinkEnvelope, loads
from services.pipeline import process_uplinks
from services.settings import Settings

if TYPE_CHECKING:
    from stream.app import HivepipeApp

log = logging.getLogger(__name__)


async def retry_forever(what: str, func: Any) -> Any:
    """Retry ``func()`` until it succeeds: a batch is only acknowledged once it is stored.

    Faust acknowledges the events of a ``take()`` batch when the body moves on, even after an
    exception, so the body must not give up on a batch while the database or Kafka is away.
    """
    delay = 0.2
    while True:
        try:
            return await func()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s failed, retrying in %.1fs: %r", what, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def register(app: HivepipeApp, settings: Settings) -> None:
    """Register every agent of the pipeline on ``app``."""
    uplinks = app.topic(settings.topic(TOPIC_UPLINKS), value_serializer="raw", key_serializer="raw")

    @app.agent(uplinks, name="decode")
    async def decode(stream: Any) -> None:
        pool, publisher = await app.resources.open()
        directory = app.resources.directory
        async for values in stream.take(settings.batch_size, within=settings.flush_interval):
            envelopes = []
            for raw in values:
                try:
                    envelopes.append(UplinkEnvelope.from_dict(loads(raw)))
                except Exception:  # a foreign or corrupt message: never stop the agent
                    log.exception("skipping an unreadable message on %s", TOPIC_UPLINKS)
            if not envelopes:
                continue

            async def run(batch: list[UplinkEnvelope] = envelopes) -> Any:
                return await process_uplinks(
                    batch,
                    pool=pool,
                    publisher=publisher,
                    directory=directory,
                    topic=settings.topic,
                )

            await retry_forever("storing a batch of uplinks", run)
