"""Subscribe to a hivepipe topic with kafka-python: one line per message, key TAB value.

    python kafka_python_consumer.py BOOTSTRAP [TOPIC] [GROUP]

BOOTSTRAP is `HIVEPIPE_KAFKA`, or under `make run` the embedded broker's address:
`jq -r .kafka .hivepipe/urls.json`. docs/topics.md says why the session timeout is set.
"""

import json
import sys

from kafka import KafkaConsumer


def main(bootstrap: str, topic: str = "hivepipe.readings", group: str = "my-subscriber") -> None:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",  # a new group starts at the topic's beginning
        # The embedded broker answers a group join after half the session timeout: 3 s here
        # instead of 22.5 s with kafka-python's default 45 s (6 s: a Kafka cluster's minimum).
        session_timeout_ms=6000,
        heartbeat_interval_ms=2000,
    )
    try:
        for message in consumer:
            value = json.loads(message.value)  # docs/schemas/<topic>.schema.json
            key = message.key.decode() if message.key else ""
            print(f"{key}\t{json.dumps(value)}", flush=True)
    finally:
        consumer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
