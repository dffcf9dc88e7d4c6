"""Device commands: validating a command's payload, and publishing it on MQTT (the publisher
port, its paho adapter and fake)."""
