"""The decode agent: ``uplinks`` in batches, decoded and stored by
:func:`services.readings.pipeline.process_uplinks` (it only loops)."""

from __future__ import annotations

import logging
from typing import Any

from services.platform import (
    TOPIC_DEAD_LETTER,
    TOPIC_UPLINKS,
    Settings,
    UplinkEnvelope,
    dumps,
    loads,
)
from services.readings import process_uplinks
from services.uplinks import journal
from services.webhooks import WebhookDirectory
from stream.app import HivepipeApp
from stream.batching import take_bursts
from stream.retry import retry_forever

log = logging.getLogger(__name__)


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
    """Register the decode agent on ``app``."""
    uplinks = app.topic(settings.topic(TOPIC_UPLINKS), value_serializer="raw", key_serializer="raw")

    @app.agent(uplinks, name="decode")
    async def decode(stream: Any) -> None:
        pool, publisher = await app.resources.open()
        directory = app.resources.directory
        # Which devices have webhooks: their readings also go to the webhook agent.
        webhooks = WebhookDirectory(ttl=settings.webhook_cache_ttl)
        async for values in take_bursts(
            stream, settings.batch_size, within=settings.flush_interval, quiet=settings.flush_quiet
        ):
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
                ids = [envelope.id for envelope in batch]

                async def forget(conn: Any) -> None:
                    await journal.forget(conn, ids, in_transaction=True)

                # Stored: the journal need not keep them any more (in the same transaction).
                return await process_uplinks(
                    batch,
                    pool=pool,
                    publisher=publisher,
                    directory=directory,
                    topic=settings.topic,
                    also=forget if settings.intake_journal else None,
                    codecs=app.resources.codecs,
                    webhooks=webhooks,
                )

            await retry_forever("storing a batch of uplinks", run)
