"""What networks and devices send, up to one envelope on ``uplinks``: parsing each network's
format (Sigfox, The Things Stack, ChirpStack, MQTT), deduplication, accepting (publish and
wait for Kafka), and the synchronous Sigfox downlink answer."""
