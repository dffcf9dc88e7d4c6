"""The webhook agent, its retry poller and housekeeping. They only loop: planning, sending and
settling are the steps of :mod:`services.webhooks.batches`, the database is
:mod:`services.webhooks.delivery_store`.

- ``webhooks`` (agent on ``webhook-readings``, the ``readings`` messages of the devices that had
  webhooks when their points were stored): per batch, one lookup of the devices' webhooks (cached),
  then every point to every webhook, per device in order, and the results written before the
  batch is acknowledged (at-least-once: a batch cut short by a crash is sent again; receivers
  deduplicate on ``webhook-id``). Several batches are in flight at once (a slow receiver
  does not hold the others' deliveries); :class:`Lanes` keeps each device's order across them,
  and each batch is acknowledged on its own once done (Faust commits up to the first gap).
- ``webhook_retries`` (task): claims due rows of the ``webhook_retries`` table, sends them,
  reschedules or dead-letters them. The queue is in PostgreSQL, so it survives restarts and is
  shared by every worker; retries never hold up fresh deliveries.
- ``webhook_attempt_log`` (timer): writes the recorded attempts in bulk, off the delivery path.
- ``webhook_housekeeping`` (timer): usage counters, pruning of the recorded attempts.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.platform import (
    TOPIC_DEAD_LETTER,
    TOPIC_WEBHOOK_READINGS,
    Message,
    Publisher,
    Settings,
)
from services.webhooks import (
    Batch,
    CachingResolver,
    DisablePolicy,
    HttpWebhookSender,
    InFlight,
    Lanes,
    PgDeliveryStore,
    RetryPolicy,
    SenderConfig,
    WebhookDirectory,
    WebhookRules,
    finish_batch,
    prepare_fresh,
    prepare_retries,
    send_batch,
)
from stream.app import HivepipeApp
from stream.batching import take_bursts
from stream.retry import retry_forever

log = logging.getLogger(__name__)

#: Seconds between two writes of the recorded attempts, of the usage counters, and between
#: two prunings.
LOG_FLUSH_SECONDS = 0.5
USAGE_FLUSH_SECONDS = 2.0
PRUNE_SECONDS = 60.0


@dataclass
class _Opened:
    """What the loops share once the first of them has opened the worker's resources."""

    store: PgDeliveryStore | None = None
    publisher: Publisher | None = None


def webhook_rules(settings: Settings) -> WebhookRules:
    """The deployment's URL and address rules."""
    return WebhookRules(
        allow_http=settings.webhook_allow_http,
        allowed_cidrs=settings.webhook_allowed_cidrs,
        max_url_length=settings.webhook_max_url_length,
    )


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        schedule=settings.webhook_retry_schedule, jitter=settings.webhook_retry_jitter
    )


def register(app: HivepipeApp, settings: Settings) -> None:
    """Register the webhook agent, the retry poller and the housekeeping timer on ``app``."""

    # ``readings`` messages (one per stored uplink, with its points) of the devices that have
    # webhooks (services.readings.pipeline): a worker reading all of ``readings``, the devices
    # without webhooks too, spent about a fifth of its CPU on the records alone (issue #16).
    stored = app.topic(
        settings.topic(TOPIC_WEBHOOK_READINGS), value_serializer="raw", key_serializer="raw"
    )
    sender = HttpWebhookSender(
        rules=webhook_rules(settings),
        resolver=CachingResolver(),
        config=SenderConfig(
            max_concurrency=settings.webhook_max_concurrency,
            max_per_host=settings.webhook_max_per_host,
        ),
    )
    policy = retry_policy(settings)
    directory = WebhookDirectory(ttl=settings.webhook_cache_ttl)
    opened = _Opened()
    dead_letter_topic = settings.topic(TOPIC_DEAD_LETTER)
    lanes = Lanes()
    in_flight = InFlight(settings.webhook_batches_in_flight)

    async def open_store() -> tuple[PgDeliveryStore, Publisher]:
        if opened.store is None or opened.publisher is None:
            pool, publisher = await app.resources.open()
            if opened.store is None:  # not opened by another loop meanwhile
                opened.store = PgDeliveryStore(
                    pool,
                    directory=directory,
                    disable_policy=DisablePolicy(
                        after=settings.webhook_disable_after,
                        min_failures=settings.webhook_disable_min_failures,
                    ),
                )
            opened.publisher = publisher
        assert opened.store is not None
        assert opened.publisher is not None
        return opened.store, opened.publisher

    async def finish(batch: Batch, store: PgDeliveryStore, publisher: Publisher) -> None:
        async def publish(messages: Sequence[Message]) -> None:
            await publisher.publish(dead_letter_topic, messages)

        await retry_forever(
            "recording webhook deliveries", lambda: finish_batch(batch, store, publish)
        )

    async def deliver(batch: Batch, events: list[Any], stream: Any) -> None:
        store, publisher = await open_store()
        if not batch.empty:
            await send_batch(
                batch,
                sender,
                policy=policy,
                lanes=lanes,
                lane_wait=settings.webhook_lane_wait,
                failing=store.directory.failing,
            )
            await finish(batch, store, publisher)
        for event in events:  # only now: a batch cut short by a crash is sent again
            await stream.ack(event)

    @app.agent(stored, name="webhooks")
    async def webhooks(stream: Any) -> None:
        store, _ = await open_store()
        try:
            async for events in take_bursts(
                stream,
                settings.webhook_batch_size,
                within=settings.webhook_flush_interval,
                quiet=settings.flush_quiet,
                ack=False,
            ):
                batch = await retry_forever(
                    "looking up webhooks",
                    lambda e=events: prepare_fresh(
                        [event.value for event in e], store, keys=[event.key for event in e]
                    ),
                )
                await in_flight.submit(functools.partial(deliver, batch, events, stream))
        finally:
            in_flight.cancel()

    retries_in_flight = InFlight(settings.webhook_retry_batches_in_flight)
    #: Webhook id -> how many of its retries this worker is sending (not claimed again meanwhile).
    sending: Counter[int] = Counter()

    async def send_retries(batch: Batch, store: PgDeliveryStore, publisher: Publisher) -> None:
        nonlocal sending
        hooks = Counter(d.hook.id for chain in batch.plan.chains for d in chain)
        sending += hooks
        try:
            await send_batch(batch, sender, policy=policy)
        except Exception:  # a bug, not a receiver: its rows are due again after the lease
            log.exception("sending webhook retries failed")
            return
        finally:
            sending -= hooks  # in place; drops the webhooks no longer sent to
        await finish(batch, store, publisher)

    @app.task  # type: ignore[untyped-decorator]
    async def webhook_retries() -> None:
        store, publisher = await open_store()
        try:
            while True:
                # A webhook whose retries are still being sent (a slow or hanging receiver)
                # is left out of the next claims: it holds one batch, not the poller.
                batch = await retry_forever(
                    "claiming webhook retries",
                    lambda: prepare_retries(
                        store,
                        limit=settings.webhook_retry_batch,
                        lease=settings.webhook_retry_lease,
                        exclude=list(sending),
                    ),
                )
                if not batch.empty:
                    await retries_in_flight.submit(
                        functools.partial(send_retries, batch, store, publisher)
                    )
                if batch.plan.size + len(batch.orphaned) < settings.webhook_retry_batch:
                    await asyncio.sleep(settings.webhook_retry_poll_interval)
        finally:
            retries_in_flight.cancel()

    @app.timer(interval=LOG_FLUSH_SECONDS)  # type: ignore[untyped-decorator]
    async def webhook_attempt_log() -> None:
        if opened.store is not None:
            try:
                await opened.store.flush_log()
            except Exception:
                log.warning(
                    "could not write webhook attempts; kept for the next flush", exc_info=True
                )

    last_prune = {"at": time.monotonic()}

    @app.timer(interval=USAGE_FLUSH_SECONDS)  # type: ignore[untyped-decorator]
    async def webhook_housekeeping() -> None:
        store = opened.store
        if store is None:
            return
        try:
            await store.flush_usage()
        except Exception:
            log.warning("could not write usage counters; kept for the next flush", exc_info=True)
        if time.monotonic() - last_prune["at"] >= PRUNE_SECONDS:
            last_prune["at"] = time.monotonic()
            try:
                await store.housekeeping(
                    keep=settings.webhook_deliveries_keep, days=settings.webhook_deliveries_days
                )
            except Exception:
                log.warning("could not prune webhook deliveries", exc_info=True)

    @app.on_before_shutdown.connect
    async def _close(_sender: Any, /, *_args: Any, signal: Any, **_kwargs: Any) -> None:
        in_flight.cancel()  # unacknowledged: sent again after the restart
        retries_in_flight.cancel()  # claimed: due again after the lease
        await sender.aclose()
        if opened.store is not None:
            try:
                await opened.store.flush_log()
                await opened.store.flush_usage()
            except Exception:
                log.warning("could not write attempts or usage at shutdown", exc_info=True)
