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
from services.platform.mqtt_address import parse_mqtt_url

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto") is None, reason="amqtt keeps its sessions in memory only"
)


class Session:
    """A persistent session like the adapter's: stable id, clean_start=False, an expiry."""

    def __init__(self, url: str, topic: str = "$share/hivepipe/devices/+/up") -> None:
        address = parse_mqtt_url(url)
        self.topic = topic
        self.received: queue.Queue[MQTTMessage] = queue.Queue()
        self.present: queue.Queue[bool] = queue.Queue()
        self.client = Client(CallbackAPIVersion.VERSION2, client_id="chaos-ingest", protocol=MQTTv5)
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


def received(session: Session, count: int) -> list[int]:
    """The payloads of the next ``count`` messages, sorted; the session closed after them."""
    try:
        return sorted(int(session.received.get(timeout=5).payload) for _ in range(count))
    finally:
        session.close()


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
