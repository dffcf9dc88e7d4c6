"""The MQTT ingest role: ``{prefix}/+/up`` and ``{prefix}/+/state`` to ``uplinks``, losing
nothing."""

from ingest.mqtt.adapter import default_client_id
from ingest.mqtt.main import run
from ingest.mqtt.probe import probe_broker

__all__ = [
    "default_client_id",
    "probe_broker",
    "run",
]
