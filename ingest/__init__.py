"""Protocol adapters: HTTP callbacks of the networks and the MQTT subscriber."""
