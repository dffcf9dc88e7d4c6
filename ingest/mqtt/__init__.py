"""The MQTT ingest role: ``{prefix}/+/up`` and ``{prefix}/+/state`` to ``uplinks``, losing
nothing."""

from ingest.mqtt.main import run

__all__ = [
    "run",
]
