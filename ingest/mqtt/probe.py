"""What the broker speaks: MQTT 5 (and whether it has shared subscriptions), else MQTT 3.1.1.

A throwaway paho client connects once per protocol version and reports the handshake's answer;
:func:`new_client` builds the clients (the probe's and the adapter's) with the address's
credentials and TLS.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from services.platform import BrokerAddress


@dataclass(frozen=True, slots=True)
class BrokerCapabilities:
    protocol: MQTTProtocolVersion
    shared: bool


def new_client(
    address: BrokerAddress, client_id: str, protocol: MQTTProtocolVersion, **kwargs: Any
) -> mqtt.Client:
    """A paho client for ``address`` (its credentials and TLS), not connected yet."""
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
    client = new_client(address, "", protocol)
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
