"""The MQTT ingest role: ``{prefix}/+/up`` and ``{prefix}/+/state`` to ``uplinks``, losing
nothing."""
