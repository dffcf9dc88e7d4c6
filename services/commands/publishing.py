"""Device commands out: the MQTT publisher port, its paho adapter and fake, and ``send_command``.

``POST /v1/devices/{id}/commands`` publishes the validated payload on
``{mqtt_topic_prefix}/{id}/command`` with QoS 1 and answers only once the broker has acknowledged
it (PUBACK); within a bounded wait, else :class:`BrokerUnavailable` (HTTP 503). Every command is
also recorded on the Kafka ``commands`` topic with its outcome.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

import orjson
from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from services.commands.validation import validate_command
from services.platform import Publisher, PublishFailed, parse_mqtt_url

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    """The broker is unreachable or did not acknowledge in time (the caller answers 503)."""


class CommandPublisher(Protocol):
    """Publishes one message with QoS 1 and returns once the broker acknowledged it."""

    async def publish(self, topic: str, payload: bytes, *, ack_wait: float) -> None: ...

    async def close(self) -> None: ...


def command_topic(prefix: str, device_id: str) -> str:
    """``devices/{id}/command`` (with the configured prefix)."""
    return f"{prefix}/{device_id}/command"


class PahoCommandPublisher:
    """The real adapter: one paho client with its network thread, reconnecting on its own.

    paho calls back from its thread; acknowledgements are handed to the event loop with
    ``call_soon_threadsafe``. A PUBACK can arrive before ``publish()`` has returned the message
    id to us, so early acknowledgements are remembered (under a lock never held while calling
    into paho, so the two threads cannot deadlock).
    """

    def __init__(self, url: str, *, client_id: str | None = None) -> None:
        self._address = parse_mqtt_url(url)
        self._loop = asyncio.get_running_loop()
        self._connected = asyncio.Event()
        self._lock = threading.Lock()
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._early_acks: set[int] = set()
        self._client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"hivepipe-api-{uuid.uuid4().hex[:12]}",
        )
        if self._address.username:
            self._client.username_pw_set(self._address.username, self._address.password)
        if self._address.tls:
            self._client.tls_set_context(ssl.create_default_context())
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish

    def start(self) -> None:
        """Connect in the background (never blocks; an unreachable broker is retried)."""
        self._client.connect_async(self._address.host, self._address.port, keepalive=30)
        self._client.loop_start()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, wait: float) -> bool:
        """Wait up to ``wait`` seconds for the connection; True when connected."""
        try:
            await asyncio.wait_for(self._connected.wait(), wait)
        except TimeoutError:
            return False
        return True

    def _on_connect(
        self,
        _client: Client,
        _userdata: Any,
        _flags: ConnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if not reason.is_failure:
            self._loop.call_soon_threadsafe(self._connected.set)

    def _on_disconnect(
        self,
        _client: Client,
        _userdata: Any,
        _flags: DisconnectFlags,
        _reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        self._loop.call_soon_threadsafe(self._connected.clear)

    def _on_publish(
        self,
        _client: Client,
        _userdata: Any,
        mid: int,
        _reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        with self._lock:
            future = self._waiting.pop(mid, None)
            if future is None:
                self._early_acks.add(mid)
                return
        self._loop.call_soon_threadsafe(_resolve, future)

    async def publish(self, topic: str, payload: bytes, *, ack_wait: float) -> None:
        deadline = time.monotonic() + ack_wait
        try:
            await asyncio.wait_for(self._connected.wait(), ack_wait)
        except TimeoutError as exc:
            raise BrokerUnavailable("the MQTT broker is unreachable") from exc
        info = self._client.publish(topic, payload, qos=1, retain=False)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            # Lost the connection meanwhile: paho keeps the message and sends it on reconnect.
            raise BrokerUnavailable(f"the MQTT broker is unreachable ({info.rc.name})")
        future: asyncio.Future[None] = self._loop.create_future()
        with self._lock:
            if info.mid in self._early_acks:
                self._early_acks.discard(info.mid)
                return
            self._waiting[info.mid] = future
        try:
            await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
        except TimeoutError as exc:
            with self._lock:
                self._waiting.pop(info.mid, None)
            raise BrokerUnavailable(
                "the MQTT broker did not acknowledge the command in time"
            ) from exc

    async def close(self) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class FakeCommandPublisher:
    """In-memory twin of :class:`PahoCommandPublisher` for unit tests."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.fail = False

    async def publish(self, topic: str, payload: bytes, *, ack_wait: float) -> None:
        if self.fail:
            raise BrokerUnavailable("fake broker is down")
        self.sent.append((topic, payload))

    async def close(self) -> None:
        return None


class NoBroker:
    """The publisher when no MQTT broker is configured: every command is refused (503)."""

    async def publish(self, topic: str, payload: bytes, *, ack_wait: float) -> None:
        raise BrokerUnavailable("no MQTT broker is configured (HIVEPIPE_MQTT_URL)")

    async def close(self) -> None:
        return None


def command_record(
    *,
    device: str,
    kind: str,
    payload: Mapping[str, Any],
    requested: float,
    outcome: Mapping[str, Any],
) -> dict[str, Any]:
    """One message of the ``commands`` topic (wire-formats.md) with the request's outcome."""
    return {
        "id": uuid.uuid4().hex,
        "device": device,
        "kind": kind,
        "payload": dict(payload),
        "requested": requested,
        "outcome": dict(outcome),
    }


async def record_command(publisher: Publisher, topic: str, record: Mapping[str, Any]) -> bool:
    """Publish a record on the ``commands`` topic; best effort (the action already happened)."""
    try:
        await publisher.publish(topic, [(str(record["device"]), orjson.dumps(record))])
    except PublishFailed:
        log.warning("could not record %s %s on Kafka", record["kind"], record["id"])
        return False
    return True


async def send_command(
    *,
    mqtt: CommandPublisher,
    kafka: Publisher,
    topic_prefix: str,
    kafka_topic: str,
    device_id: str,
    payload: Any,
    ack_wait: float,
) -> dict[str, Any]:
    """Validate, publish with QoS 1, wait for the PUBACK, record on Kafka; returns the record.

    Raises :class:`services.commands.validation.CommandInvalid` (nothing is sent) or
    :class:`BrokerUnavailable` (recorded as failed).
    """
    command = validate_command(payload)
    requested = time.time()
    try:
        await mqtt.publish(
            command_topic(topic_prefix, device_id), orjson.dumps(command), ack_wait=ack_wait
        )
    except BrokerUnavailable as exc:
        await record_command(
            kafka,
            kafka_topic,
            command_record(
                device=device_id,
                kind="command",
                payload=command,
                requested=requested,
                outcome={"status": "failed", "reason": str(exc)},
            ),
        )
        raise
    record = command_record(
        device=device_id,
        kind="command",
        payload=command,
        requested=requested,
        outcome={"status": "sent"},
    )
    await record_command(kafka, kafka_topic, record)
    return record
