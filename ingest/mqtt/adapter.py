"""The MQTT ingest role: ``{prefix}/+/up`` and ``{prefix}/+/state`` to ``uplinks``, losing nothing.

* paho-mqtt runs its network loop in its own thread; every message is handed to the asyncio
  loop, which publishes batches to Kafka (``acks=all``) and only then sends the PUBACKs
  (``manual_ack``). A crash or a Kafka outage therefore loses nothing: the broker still holds
  every message not acknowledged, in the persistent session (``clean_start=False``, a session
  expiry), and delivers it again on reconnection.
* MQTT 5 first, with a shared subscription ``$share/<group>/...`` so that several replicas split
  the load (unless the broker says it has none); an MQTT 3.1.1-only broker (amqtt) gets plain
  subscriptions: run one replica then.
* A message that can never become valid (not JSON, too large, a topic without a valid id) is
  kept on ``dead-letter`` with the reason and acknowledged; an unknown or deactivated device's
  message goes there too (checked with the device cache while the database answers).

``MqttIngest`` is the adapter (start/stop, ``stats`` counters: what a benchmark drives);
``run(settings)`` is the ``hivepipe ingest mqtt`` process (SIGTERM/SIGINT stop it gracefully).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.devices.registry import DeviceDirectory
from services.platform import metrics, runtime
from services.platform.db import connection_kwargs
from services.platform.events import (
    ALL_TOPICS,
    TOPIC_DEAD_LETTER,
    TOPIC_UPLINKS,
    UplinkEnvelope,
    dumps,
)
from services.platform.kafka import KafkaPublisher, Message, Publisher, PublishFailed
from services.platform.mqtt_address import BrokerAddress, parse_mqtt_url
from services.platform.settings import Settings
from services.platform.topic_repair import TopicRepair
from services.uplinks.accept import (
    dead_letter_message,
    envelope_fields,
    envelope_message,
)
from services.uplinks.mqtt_messages import Rejected, mqtt_uplink, rejected, subscriptions

log = logging.getLogger(__name__)

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]

#: MQTT 5 SUBACK reason "Shared Subscriptions not supported".
_SHARED_NOT_SUPPORTED = 0x9E


@dataclass(frozen=True, slots=True)
class BrokerCapabilities:
    protocol: MQTTProtocolVersion
    shared: bool


def _new_client(
    address: BrokerAddress, client_id: str, protocol: MQTTProtocolVersion, **kwargs: Any
) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **kwargs
    )
    if address.username is not None:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set()
    return client


def _try_connect(
    address: BrokerAddress, protocol: MQTTProtocolVersion, timeout: float
) -> tuple[ReasonCode | None, Properties | None]:
    client = _new_client(address, "", protocol)
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def on_connect(_c: Any, _u: Any, _f: Any, reason: ReasonCode, props: Any) -> None:
        outcome["reason"], outcome["props"] = reason, props
        done.set()

    def on_disconnect(*_args: Any) -> None:
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.connect(address.host, address.port, keepalive=10)  # OSError when nobody listens
    client.loop_start()
    try:
        done.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return outcome.get("reason"), outcome.get("props")


def probe_broker(address: BrokerAddress, *, timeout: float = 5.0) -> BrokerCapabilities:
    """MQTT 5 (and whether it has shared subscriptions), else 3.1.1; blocking.

    Raises OSError when the broker cannot be reached, PermissionError when it refuses our
    credentials.
    """
    reason, props = _try_connect(address, mqtt.MQTTv5, timeout)
    if reason is not None and not reason.is_failure:
        available = getattr(props, "SharedSubscriptionAvailable", 1)
        return BrokerCapabilities(mqtt.MQTTv5, shared=available != 0)
    if reason is not None and reason.value in (0x86, 0x87, 0x8C):
        raise PermissionError(f"the MQTT broker refused the connection: {reason}")
    reason, _ = _try_connect(address, mqtt.MQTTv311, timeout)
    if reason is not None and not reason.is_failure:
        return BrokerCapabilities(mqtt.MQTTv311, shared=False)
    if reason is not None and reason.value in (4, 5, 0x86, 0x87):
        raise PermissionError(f"the MQTT broker refused the connection: {reason}")
    raise ConnectionError(f"no MQTT handshake with {address.host}:{address.port} ({reason})")


@dataclass
class MqttStats:
    """Counters of one adapter (a benchmark reads ``acked``: messages accepted for good)."""

    received: int = 0
    published: int = 0
    dead_lettered: int = 0
    acked: int = 0
    batches: int = 0
    publish_failures: int = 0


@dataclass(slots=True)
class _Received:
    generation: int
    mid: int
    qos: int
    topic: str
    payload: bytes
    received: float


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
        self.capabilities: BrokerCapabilities | None = None
        self._max_batch = max_batch or settings.batch_size
        self._want_share = share
        self._given_publisher = publisher
        self._publisher: Publisher | None = None
        self._own_kafka: KafkaPublisher | None = None
        self._pool: Pool | None = pool
        self._own_pool = False
        self._directory = DeviceDirectory()
        self._db_down_until = 0.0
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: collections.deque[_Received] = collections.deque()
        self._wake = asyncio.Event()
        self._wake_pending = False
        self._subscribed = asyncio.Event()
        self._generation = 0
        self._filters: list[str] = []
        self._accepting = False
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._topic_uplinks = settings.topic(TOPIC_UPLINKS)
        self._topic_dead = settings.topic(TOPIC_DEAD_LETTER)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting (in the background: a broker that is down is retried)."""
        self._loop = asyncio.get_running_loop()
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
        self._accepting = True
        self._tasks = [
            asyncio.create_task(self._connect(), name="mqtt-connect"),
            asyncio.create_task(self._pump(), name="mqtt-pump"),
        ]

    async def wait_subscribed(self, within: float = 15.0) -> None:
        """Return once the subscriptions are in place (raises TimeoutError)."""
        async with asyncio.timeout(within):
            await self._subscribed.wait()

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    async def stop(self, *, drain_timeout: float = 10.0) -> None:
        """Stop taking messages, publish and acknowledge those received, disconnect.

        What cannot be published within ``drain_timeout`` is left unacknowledged: the broker
        delivers it again to this session.
        """
        self._accepting = False
        self._stopping = True
        self._wake.set()
        connect, pump = self._tasks or (None, None)
        if connect is not None:
            connect.cancel()
        if pump is not None:
            try:
                await asyncio.wait_for(pump, drain_timeout)
            except (TimeoutError, asyncio.CancelledError):
                log.warning("MQTT ingest stopped, %d messages unacknowledged", len(self._inbox))
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(self._disconnect, client)
        if self._own_kafka is not None:
            await self._own_kafka.stop()
        if self._pool is not None and self._own_pool:
            await self._pool.close()
        self._tasks = []

    @staticmethod
    def _disconnect(client: mqtt.Client) -> None:
        client.disconnect()
        client.loop_stop()

    # -- the paho side (its own thread) ----------------------------------------------------

    async def _connect(self) -> None:
        delay = 0.5
        while True:
            try:
                caps = await asyncio.to_thread(probe_broker, self.address)
                break
            except OSError as exc:  # refused, unreachable, no handshake, credentials
                log.warning("MQTT broker %s not reachable (%s); retrying", self.address.host, exc)
            except Exception:
                log.exception("MQTT broker %s: unexpected error; retrying", self.address.host)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
        self.capabilities = caps
        shared = caps.shared and self._want_share and bool(self.settings.mqtt_share_group)
        group = self.settings.mqtt_share_group if shared else None
        self._filters = subscriptions(self.settings.mqtt_topic_prefix, group=group)
        if caps.protocol == mqtt.MQTTv5:
            client = _new_client(self.address, self.client_id, caps.protocol, manual_ack=True)
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.settings.mqtt_session_expiry
            client.connect_async(
                self.address.host,
                self.address.port,
                keepalive=30,
                clean_start=False,
                properties=props,
            )
        else:
            log.warning("MQTT broker without MQTT 5: plain subscriptions (run a single replica)")
            client = _new_client(
                self.address, self.client_id, caps.protocol, manual_ack=True, clean_session=False
            )
            client.connect_async(self.address.host, self.address.port, keepalive=30)
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        client.loop_start()
        log.info(
            "MQTT ingest %s on %s:%s, MQTT %s, %s",
            self.client_id,
            self.address.host,
            self.address.port,
            "5" if caps.protocol == mqtt.MQTTv5 else "3.1.1",
            ", ".join(self._filters),
        )

    def _on_connect(
        self, client: mqtt.Client, _u: Any, flags: Any, reason: ReasonCode, _p: Any
    ) -> None:
        if reason.is_failure:
            log.warning("MQTT connection refused: %s", reason)
            return
        # Acks of messages of an earlier connection are not sent: the broker delivers them again.
        self._generation += 1
        log.info("MQTT connected (session present: %s)", flags.session_present)
        self._subscribe(client, self._filters)

    def _subscribe(self, client: mqtt.Client, filters: list[str]) -> None:
        if client.protocol == mqtt.MQTTv5:
            # Retained messages only for a new subscription, not at every reconnection.
            options = SubscribeOptions(qos=1, retainHandling=1)
            client.subscribe([(f, options) for f in filters])
        else:
            client.subscribe([(f, 1) for f in filters])

    def _on_subscribe(
        self, client: mqtt.Client, _u: Any, _mid: int, reasons: list[ReasonCode], _p: Any
    ) -> None:
        if any(r.value == _SHARED_NOT_SUPPORTED for r in reasons) and self._filters[0].startswith(
            "$share/"
        ):
            log.warning("the MQTT broker refused shared subscriptions: plain ones instead")
            self._filters = subscriptions(self.settings.mqtt_topic_prefix, group=None)
            self._subscribe(client, self._filters)
            return
        if any(r.is_failure for r in reasons):
            log.error("MQTT subscription refused: %s", ", ".join(str(r) for r in reasons))
            return
        log.info("MQTT subscribed: %s", ", ".join(self._filters))
        self._call(self._subscribed.set)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self._call(self._subscribed.clear)
        if not self._stopping:
            log.warning("MQTT disconnected (%s); reconnecting", reason)

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        if not self._accepting:
            return  # not acknowledged: delivered again to this session after the restart
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = message._topic.decode("utf-8", "replace")
        self._inbox.append(
            _Received(
                self._generation,
                message.mid,
                message.qos,
                topic,
                bytes(message.payload),
                time.time(),
            )
        )
        if not self._wake_pending:
            self._wake_pending = True
            self._call(self._woken)

    def _woken(self) -> None:
        self._wake_pending = False
        self._wake.set()

    def _call(self, func: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(func)

    # -- the asyncio side ------------------------------------------------------------------

    async def _pump(self) -> None:
        while True:
            if not self._inbox:
                if self._stopping:
                    return
                self._wake.clear()
                if not self._inbox:
                    await self._wake.wait()
                continue
            count = min(len(self._inbox), self._max_batch)
            batch = [self._inbox.popleft() for _ in range(count)]
            if not await self._handle(batch):
                return

    async def _handle(self, batch: list[_Received]) -> bool:
        """Publish a batch, then acknowledge it; False when stopped during a Kafka outage."""
        self.stats.received += len(batch)
        metrics.UPLINKS_RECEIVED.labels("mqtt").inc(len(batch))
        try:
            uplinks, dead, reasons = await self._prepare(batch)
        except Exception:
            # Never stall on a message we cannot handle: keep the batch raw on dead-letter.
            log.exception("could not prepare %d MQTT messages: kept on dead-letter", len(batch))
            uplinks, dead, reasons = [], [], []
            for r in batch:
                item = rejected(
                    r.topic,
                    r.payload,
                    device=None,
                    kind=None,
                    received=r.received,
                    reason="internal_error",
                    detail="",
                    max_bytes=self.settings.max_body_bytes,
                )
                dead.append((item.key, dumps(item.record)))
                reasons.append(item.reason)
        if not await self._publish([(self._topic_uplinks, uplinks), (self._topic_dead, dead)]):
            return False
        for reason in reasons:
            metrics.UPLINKS_REJECTED.labels("mqtt", reason).inc()
            metrics.DEAD_LETTERS.labels(reason).inc()
        self.stats.published += len(uplinks)
        self.stats.dead_lettered += len(dead)
        self.stats.batches += 1
        self._ack(batch)
        return True

    async def _prepare(
        self, batch: list[_Received]
    ) -> tuple[list[Message], list[Message], list[str]]:
        """The ``uplinks`` and ``dead-letter`` messages of a batch, and why each dead letter."""
        max_bytes = self.settings.max_body_bytes
        prefix = self.settings.mqtt_topic_prefix
        parsed = [
            mqtt_uplink(r.topic, r.payload, prefix=prefix, received=r.received, max_bytes=max_bytes)
            for r in batch
        ]
        problems = await self._device_problems(
            {p.device for p in parsed if isinstance(p, UplinkEnvelope)}
        )
        uplinks: list[Message] = []
        dead: list[Message] = []
        reasons: list[str] = []
        for item in parsed:
            if isinstance(item, Rejected):
                dead.append((item.key, dumps(item.record)))
                reasons.append(item.reason)
            elif (problem := problems.get(item.device)) is not None:
                dead.append(dead_letter_message(item.device, envelope_fields(item), problem))
                reasons.append(problem)
            else:
                uplinks.append(envelope_message(item))
        return uplinks, dead, reasons

    async def _publish(self, batches: list[tuple[str, list[Message]]]) -> bool:
        assert self._publisher is not None
        delay = 0.2
        while True:
            started = time.perf_counter()
            try:
                await self._publisher.publish_many(batches)
            except PublishFailed as exc:
                self.stats.publish_failures += 1
                if self._stopping:
                    return False
                log.warning("Kafka unavailable (%s); retrying in %.1fs, not acking", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            metrics.PUBLISH_SECONDS.labels("mqtt").observe(time.perf_counter() - started)
            return True

    def _ack(self, batch: list[_Received]) -> None:
        client = self._client
        if client is None:
            return
        generation = self._generation
        for item in batch:
            if item.qos > 0 and item.generation == generation:
                client.ack(item.mid, item.qos)
                self.stats.acked += 1
            elif item.qos == 0:
                self.stats.acked += 1

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
        return {
            device: "unknown_device"
            if info is None
            else (None if info.active else "inactive_device")
            for device, info in infos.items()
        }


async def serve(settings: Settings) -> None:
    """Run the adapter until SIGTERM or SIGINT, then stop it gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if settings.mqtt_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.mqtt_metrics_port, addr=settings.api_host)
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
    asyncio.run(serve(settings))
