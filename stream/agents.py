"""The agents. Each only loops: decode/store/deliver are functions of services/."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from services.events import TOPIC_DEAD_LETTER, TOPIC_UPLINKS, UplinkEnvelope, dumps, loads
from services.pipeline import process_uplinks
from services.settings import Settings
from stream import orbit, webhooks

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


def read_envelopes(values: list[bytes]) -> tuple[list[UplinkEnvelope], list[tuple[str, bytes]]]:
    """Parse raw ``uplinks`` values; the unreadable ones become dead-letter messages."""
    envelopes: list[UplinkEnvelope] = []
    unreadable: list[tuple[str, bytes]] = []
    for raw in values:
        try:
            envelopes.append(UplinkEnvelope.from_dict(loads(raw)))
        except Exception as exc:  # a foreign or corrupt message: kept, never stops the agent
            log.warning("unreadable message on %s: %r", TOPIC_UPLINKS, exc)
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            unreadable.append(("", dumps({"raw": text, "error": f"unreadable: {exc!r}"})))
    return envelopes, unreadable


def register(app: HivepipeApp, settings: Settings) -> None:
    """Register every agent of the pipeline on ``app``."""
    uplinks = app.topic(settings.topic(TOPIC_UPLINKS), value_serializer="raw", key_serializer="raw")

    @app.agent(uplinks, name="decode")
    async def decode(stream: Any) -> None:
        pool, publisher = await app.resources.open()
        directory = app.resources.directory
        async for values in stream.take(settings.batch_size, within=settings.flush_interval):
            envelopes, unreadable = read_envelopes(values)
            if unreadable:
                await retry_forever(
                    "dead-lettering unreadable uplinks",
                    lambda bad=unreadable: publisher.publish(
                        settings.topic(TOPIC_DEAD_LETTER), bad
                    ),
                )
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

    webhooks.register(app, settings)
    orbit.register(app, settings)
