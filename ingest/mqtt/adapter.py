"""The MQTT ingest role: ``{prefix}/+/up`` and ``{prefix}/+/state`` to ``uplinks``, losing nothing.

* paho-mqtt runs its network loop in its own thread (:mod:`ingest.mqtt.bridge`); every message
  is handed to the asyncio loop, which publishes batches to Kafka (``acks=all``) and only then
  sends the PUBACKs (``manual_ack``). A crash or a Kafka outage therefore loses nothing: the
  broker still holds every message not acknowledged, in the persistent session
  (``clean_start=False``, a session expiry), and delivers it again on reconnection.
* MQTT 5 first, with a shared subscription ``$share/<group>/...`` so that several replicas split
  the load (unless the broker says it has none); an MQTT 3.1.1-only broker (amqtt) gets plain
  subscriptions: run one replica then (:mod:`ingest.mqtt.probe`).
* A message that can never become valid (not JSON, too large, a topic without a valid id) is
  kept on ``dead-letter`` with the reason and acknowledged; an unknown or deactivated device's
  message goes there too (checked with the device cache while the database answers).

``MqttIngest`` is the adapter (start/stop, ``stats`` counters: what a benchmark drives);
:mod:`ingest.mqtt.main` is the ``hivepipe ingest mqtt`` process.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from ingest.mqtt.batches import Prepared, kept_raw, split_batch
from ingest.mqtt.bridge import PahoBridge, Received
from ingest.mqtt.probe import BrokerCapabilities
from services.devices import DeviceDirectory, info_problem
from services.platform import (
    ALL_TOPICS,
    TOPIC_DEAD_LETTER,
    TOPIC_UPLINKS,
    BrokerSaves,
    KafkaPublisher,
    Message,
    Publisher,
    PublishFailed,
    SaveSoon,
    Settings,
    TopicRepair,
    UplinkEnvelope,
    Waker,
    connection_kwargs,
    metrics,
    parse_mqtt_url,
)
from services.uplinks import (
    journal,
    mqtt_uplink,
)

log = logging.getLogger(__name__)

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]


@dataclass
class MqttStats:
    """Counters of one adapter (a benchmark reads ``acked``: messages accepted for good)."""

    received: int = 0
    published: int = 0
    dead_lettered: int = 0
    acked: int = 0
    batches: int = 0
    publish_failures: int = 0


def default_client_id(settings: Settings) -> str:
    """The configured id, else ``hivepipe-ingest-<hostname>`` (stable across restarts)."""
    return settings.mqtt_client_id or f"hivepipe-ingest-{socket.gethostname()}"[:64]


class MqttIngest:
    """The MQTT adapter: ``await start()``, ``await wait_subscribed()``, ``await stop()``.

    ``publisher`` and ``pool`` are built from ``settings`` when not given (and closed at stop).
    Without a database, the device check is left to the decode step of the stream.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        publisher: Publisher | None = None,
        pool: Pool | None = None,
        client_id: str | None = None,
        max_batch: int | None = None,
        share: bool = True,
    ) -> None:
        if not settings.mqtt_url:
            raise ValueError("HIVEPIPE_MQTT_URL is required for the MQTT ingest")
        self.settings = settings
        self.address = parse_mqtt_url(settings.mqtt_url)
        self.client_id = client_id or default_client_id(settings)
        self.stats = MqttStats()
        #: Saves of the embedded Mosquitto's store asked for once messages have come in
        #: (``HIVEPIPE_EMBEDDED_MQTT_SAVE=on-receipt``); None with another broker.
        self._saves: SaveSoon | None = None
        if (pid_file := settings.mqtt_save_requests_pid_file) is not None:
            self._saves = SaveSoon(
                BrokerSaves(pid_file),
                settings.embedded_mqtt_save_delay_ms / 1000,
                waker=Waker(settings.mqtt_url),
            )
        self._bridge = PahoBridge(
            settings,
            self.address,
            self.client_id,
            share=share,
            on_receipt=self._saves.request if self._saves is not None else None,
        )
        self._max_batch = max_batch or settings.batch_size
        self._given_publisher = publisher
        self._publisher: Publisher | None = None
        self._own_kafka: KafkaPublisher | None = None
        self._pool: Pool | None = pool
        self._own_pool = False
        self._directory = DeviceDirectory()
        self._db_down_until = 0.0
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._topic_uplinks = settings.topic(TOPIC_UPLINKS)
        self._topic_dead = settings.topic(TOPIC_DEAD_LETTER)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def capabilities(self) -> BrokerCapabilities | None:
        """What the broker speaks; None until it has answered."""
        return self._bridge.capabilities

    async def start(self) -> None:
        """Start connecting (in the background: a broker that is down is retried)."""
        if self._given_publisher is None:
            assert self.settings.kafka, "HIVEPIPE_KAFKA is required"
            self._own_kafka = KafkaPublisher(self.settings.kafka, linger_ms=2)
            inner: Publisher = self._own_kafka
        else:
            inner = self._given_publisher
        self._publisher = TopicRepair(
            inner,
            bootstrap=self.settings.kafka if self._own_kafka is not None else None,
            topics=[self.settings.topic(t) for t in ALL_TOPICS],
            partitions=self.settings.partitions,
            check_first=True,
        )
        if self._pool is None and self.settings.database_url:
            self._pool = AsyncConnectionPool(
                self.settings.database_url,
                min_size=1,
                max_size=2,
                name="mqtt-ingest",
                open=False,
                kwargs=connection_kwargs(self.settings.db_prepare),
            )
            await self._pool.open(wait=False)  # reconnects by itself; checked per batch
            self._own_pool = True
        self._bridge.start_taking()
        self._tasks = [
            asyncio.create_task(self._bridge.connect(), name="mqtt-connect"),
            asyncio.create_task(self._pump(), name="mqtt-pump"),
        ]

    async def wait_subscribed(self, within: float = 15.0) -> None:
        """Return once the subscriptions are in place (raises TimeoutError)."""
        await self._bridge.wait_subscribed(within)

    @property
    def subscribed(self) -> bool:
        return self._bridge.subscribed

    async def stop(self, *, drain_timeout: float = 10.0) -> None:
        """Stop taking messages, publish and acknowledge those received, disconnect.

        What cannot be published within ``drain_timeout`` is left unacknowledged: the broker
        delivers it again to this session.
        """
        self._stopping = True
        self._bridge.stop_taking()
        connect, pump = self._tasks or (None, None)
        if connect is not None:
            connect.cancel()
        if pump is not None:
            try:
                await asyncio.wait_for(pump, drain_timeout)
            except (TimeoutError, asyncio.CancelledError):
                log.warning("MQTT ingest stopped, %d messages unacknowledged", self._bridge.pending)
        await self._bridge.disconnect()
        if self._saves is not None:
            self._saves.close()
        if self._own_kafka is not None:
            await self._own_kafka.stop()
        if self._pool is not None and self._own_pool:
            await self._pool.close()
        self._tasks = []

    # -- batches: publish, then acknowledge ------------------------------------------------

    async def _pump(self) -> None:
        linger = self.settings.mqtt_linger_ms / 1000
        while batch := await self._bridge.next_batch(self._max_batch, linger):
            if not await self._handle(batch):
                return

    async def _handle(self, batch: list[Received]) -> bool:
        """Publish a batch, then acknowledge it; False when stopped during a Kafka outage."""
        self.stats.received += len(batch)
        metrics.UPLINKS_RECEIVED.labels("mqtt").inc(len(batch))
        try:
            uplinks, dead, reasons = await self._prepare(batch)
        except Exception:
            log.exception("could not prepare %d MQTT messages: kept on dead-letter", len(batch))
            uplinks, dead, reasons = kept_raw(batch, max_bytes=self.settings.max_body_bytes)
        if self.settings.intake_journal and uplinks and not await self._journal(uplinks):
            return False
        messages = [message for _, message in uplinks]
        if not await self._publish([(self._topic_uplinks, messages), (self._topic_dead, dead)]):
            return False
        for reason in reasons:
            metrics.UPLINKS_REJECTED.labels("mqtt", reason).inc()
            metrics.DEAD_LETTERS.labels(reason).inc()
        self.stats.published += len(uplinks)
        self.stats.dead_lettered += len(dead)
        self.stats.batches += 1
        self.stats.acked += self._bridge.ack(batch)
        return True

    async def _prepare(self, batch: list[Received]) -> Prepared:
        """The batch's journal entries, dead letters and reasons (:func:`split_batch`)."""
        max_bytes = self.settings.max_body_bytes
        prefix = self.settings.mqtt_topic_prefix
        parsed = [
            mqtt_uplink(r.topic, r.payload, prefix=prefix, received=r.received, max_bytes=max_bytes)
            for r in batch
        ]
        problems = await self._device_problems(
            {p.device for p in parsed if isinstance(p, UplinkEnvelope)}
        )
        return split_batch(parsed, problems)

    async def _until_done(
        self,
        what: str,
        attempt: Callable[[], Awaitable[None]],
        unavailable: type[Exception] = Exception,
    ) -> bool:
        """Run ``attempt`` until it succeeds, pausing longer each time it raises
        ``unavailable`` (nothing is acknowledged meanwhile: the broker keeps the messages);
        False when stopped meanwhile."""
        delay = 0.2
        while True:
            try:
                await attempt()
            except unavailable as exc:
                if isinstance(exc, PublishFailed):
                    self.stats.publish_failures += 1
                if self._stopping:
                    return False
                log.warning("%s unavailable (%r); retrying in %.1fs, not acking", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            return True

    async def _journal(self, entries: list[tuple[str, Message]]) -> bool:
        """Keep the batch's uplinks in the intake journal before they are acknowledged
        (:mod:`services.uplinks.journal`): a PUBACK is a promise that outlives the broker."""
        pool = self._pool
        assert pool is not None, "the intake journal needs HIVEPIPE_DATABASE_URL"

        async def record() -> None:
            async with pool.connection(timeout=5.0) as conn, conn.transaction():
                await journal.record(conn, entries)

        return await self._until_done("journal", record)

    async def _publish(self, batches: list[tuple[str, list[Message]]]) -> bool:
        publisher = self._publisher
        assert publisher is not None

        async def publish() -> None:
            started = time.perf_counter()
            await publisher.publish_many(batches)
            metrics.PUBLISH_SECONDS.labels("mqtt").observe(time.perf_counter() - started)

        return await self._until_done("Kafka", publish, PublishFailed)

    async def _device_problems(self, devices: set[str]) -> dict[str, str | None]:
        """Unknown/inactive devices (cached); nothing while the database does not answer."""
        if self._pool is None or not devices or time.monotonic() < self._db_down_until:
            return {}
        try:
            async with self._pool.connection(timeout=1.0) as conn:
                infos = await self._directory.lookup(conn, devices)
        except Exception as exc:
            log.warning("device check skipped for 10s, database unavailable: %r", exc)
            self._db_down_until = time.monotonic() + 10.0
            return {}
        return {device: info_problem(info) for device, info in infos.items()}
