"""The embedded Mosquitto, killed with -9 and relaunched as the supervisor does: the QoS 1
messages queued for a persistent session (the MQTT adapter's) are still delivered to it, and
so are those published after the relaunch before the adapter is back, when its subscription is
plain (Mosquitto 2.0 restores a session's plain subscriptions, not its shared ones: `hivepipe
up` runs a single adapter with plain ones)."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import time
from pathlib import Path

import pytest
from paho.mqtt.client import Client, MQTTMessage, MQTTv5
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from services.entrypoints import embedded
from services.entrypoints.mqtt_saves import SavesWhileAway
from services.platform import BrokerSaves, Waker
from services.platform.mqtt_address import parse_mqtt_url

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto") is None, reason="amqtt keeps its sessions in memory only"
)


class Session:
    """A persistent session like the adapter's: stable id, clean_start=False, an expiry."""

    def __init__(
        self, url: str, topic: str = "$share/hivepipe/devices/+/up", *, manual_ack: bool = False
    ) -> None:
        """``manual_ack``: what it receives stays unacknowledged (an adapter that has not
        journaled it yet: its linger, a database outage)."""
        address = parse_mqtt_url(url)
        self.topic = topic
        self.received: queue.Queue[MQTTMessage] = queue.Queue()
        self.present: queue.Queue[bool] = queue.Queue()
        self.client = Client(
            CallbackAPIVersion.VERSION2,
            client_id="chaos-ingest",
            protocol=MQTTv5,
            manual_ack=manual_ack,
        )
        self.client.on_message = lambda _c, _u, message: self.received.put(message)
        self.client.on_connect = self._connected
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 3600
        self.client.connect(address.host, address.port, clean_start=False, properties=properties)
        self.client.loop_start()
        self.session_present = self.present.get(timeout=10)

    def _connected(self, client: Client, _u: object, flags: object, _r: object, _p: object) -> None:
        client.subscribe(self.topic, qos=1)
        self.present.put(bool(getattr(flags, "session_present", False)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish(url: str, count: int) -> None:
    address = parse_mqtt_url(url)
    device = Client(CallbackAPIVersion.VERSION2, client_id="chaos-device")
    device.connect(address.host, address.port)
    device.loop_start()
    try:
        for n in range(count):
            device.publish("devices/D1/up", str(n), qos=1).wait_for_publish(5)
    finally:
        device.disconnect()
        device.loop_stop()


def kill_and_relaunch(broker: embedded.Server) -> embedded.Server:
    """SIGKILL, then the same server started again on its port and its store."""
    os.kill(broker.pid, signal.SIGKILL)
    broker.proc.wait()
    assert broker.relaunch is not None
    return broker.relaunch()


def received(session: Session, count: int, *, within: float = 5.0) -> list[int]:
    """The payloads of the next ``count`` messages (fewer: those ``within`` s brought), sorted;
    the session closed after them."""
    payloads: list[int] = []
    try:
        while len(payloads) < count:
            try:
                payloads.append(int(session.received.get(timeout=within).payload))
            except queue.Empty:
                break
        return sorted(payloads)
    finally:
        session.close()


def held(url: str, count: int) -> None:
    """A connected session (the adapter) holding ``count`` messages that devices published and
    Mosquitto acknowledged, none acknowledged by the session."""
    session = Session(url, "devices/+/up", manual_ack=True)
    publish(url, count)
    for _ in range(count):
        session.received.get(timeout=5)


def test_messages_queued_for_a_session_survive_a_kill_of_the_broker(tmp_path: Path) -> None:
    broker = embedded.start_mqtt(tmp_path)
    try:
        Session(broker.url).close()  # the session exists, its client gone (a killed adapter)
        publish(broker.url, 20)
        time.sleep(2.5)  # Mosquitto saves its store when a whole second has passed since
        url = broker.url
        broker = kill_and_relaunch(broker)
        assert broker.url == url  # the same port: the roles' settings still point at it
        session = Session(broker.url)
        assert session.session_present
        assert received(session, 20) == list(range(20))
    finally:
        broker.stop()


def test_saving_every_change_keeps_what_was_acknowledged_just_before_a_kill(
    tmp_path: Path,
) -> None:
    """``HIVEPIPE_EMBEDDED_MQTT_SAVE=every-change`` (the default): what Mosquitto PUBACKed
    50 ms before its kill -9 is in its store (saved once a second, it would mostly not be)."""
    broker = embedded.start_mqtt(tmp_path, save="every-change")
    try:
        Session(broker.url, "devices/+/up").close()
        publish(broker.url, 20)
        time.sleep(0.05)  # Mosquitto acknowledges, then saves at its loop's next turn
        broker = kill_and_relaunch(broker)
        assert received(Session(broker.url, "devices/+/up"), 20) == list(range(20))
    finally:
        broker.stop()


def test_a_plain_subscription_gets_what_was_published_before_it_came_back(tmp_path: Path) -> None:
    broker = embedded.start_mqtt(tmp_path)
    try:
        Session(broker.url, "devices/+/up").close()  # the single adapter's session, then a kill
        time.sleep(2.5)  # saved
        broker = kill_and_relaunch(broker)
        publish(broker.url, 20)  # devices are back before the adapter: PUBACKed by Mosquitto
        assert received(Session(broker.url, "devices/+/up"), 20) == list(range(20))
    finally:
        broker.stop()


def test_saving_every_change_does_not_save_what_a_connected_session_holds(
    tmp_path: Path,
) -> None:
    """Why ``every-change`` is not the default: a message handed to a connected subscriber is
    no change to Mosquitto 2.0 (the subscriber's PUBACK is one), so what the adapter had
    received and not yet acknowledged was on disk only if another change came meanwhile."""
    broker = embedded.start_mqtt(tmp_path, save="every-change")
    try:
        held(broker.url, 20)
        time.sleep(0.2)
        broker = kill_and_relaunch(broker)
        assert received(Session(broker.url, "devices/+/up"), 20, within=1.5) == []
    finally:
        broker.stop()


def test_on_receipt_the_adapters_request_saves_what_it_holds(tmp_path: Path) -> None:
    """``on-receipt`` (the default): the adapter asks for a save once it has received
    messages (services/platform/broker_saves.py), so what it holds unacknowledged survives a
    kill -9 of Mosquitto (and of the box) and is delivered to its session again."""
    broker = embedded.start_mqtt(tmp_path, save="on-receipt")
    try:
        held(broker.url, 20)
        saves = BrokerSaves(embedded.mosquitto_pid_file(tmp_path))
        assert saves.save_now()
        time.sleep(0.2)  # Mosquitto saves at its loop's next turn (100 ms at most when idle)
        saves.close()
        broker = kill_and_relaunch(broker)
        assert received(Session(broker.url, "devices/+/up"), 20) == list(range(20))
    finally:
        broker.stop()


class _Away:
    """An MQTT adapter role whose process is down."""

    process = None
    generation = 1


def test_on_receipt_the_supervisor_saves_what_is_queued_while_the_adapter_is_away(
    tmp_path: Path,
) -> None:
    """With the adapter dead, no adapter asks: ``hivepipe up`` does, as each message comes (it
    subscribes to every topic) and wakes Mosquitto with a PINGREQ, so what Mosquitto
    acknowledged 50 ms before its kill -9 is in its store."""
    broker = embedded.start_mqtt(tmp_path, save="on-receipt")
    Session(broker.url, "devices/+/up").close()  # the adapter's session, its client gone
    watch = SavesWhileAway(
        BrokerSaves(embedded.mosquitto_pid_file(tmp_path)),
        [_Away()],
        None,
        waker=Waker(broker.url, subscribe=True),
    )
    watch.start()
    try:
        time.sleep(0.3)  # connected and subscribed, its first save done
        assert watch.waker is not None
        assert watch.waker.connected
        publish(broker.url, 20)
        time.sleep(0.05)
        broker = kill_and_relaunch(broker)
        assert received(Session(broker.url, "devices/+/up"), 20) == list(range(20))
    finally:
        watch.stop()
        broker.stop()
