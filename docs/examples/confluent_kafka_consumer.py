"""Subscribe to a hivepipe topic with confluent-kafka: one line per message, key TAB value.

    python confluent_kafka_consumer.py BOOTSTRAP [TOPIC] [GROUP]

BOOTSTRAP is `HIVEPIPE_KAFKA`, or under `make run` the embedded broker's address:
`jq -r .kafka .hivepipe/urls.json`. docs/topics.md says why the session timeout is set.
"""

import json
import sys

from confluent_kafka import Consumer


def main(bootstrap: str, topic: str = "hivepipe.readings", group: str = "my-subscriber") -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",  # a new group starts at the topic's beginning
            # The embedded broker answers a group join after half the session timeout: 3 s
            # here instead of 22.5 s with the default 45 s. 6 s is also the least a Kafka
            # cluster accepts by default (group.min.session.timeout.ms).
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 2000,
        }
    )
    consumer.subscribe([topic])
    try:
        while True:
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error():
                print(message.error(), file=sys.stderr)
                continue
            value = json.loads(message.value())  # docs/schemas/<topic>.schema.json
            key = message.key().decode() if message.key() else ""
            print(f"{key}\t{json.dumps(value)}", flush=True)
    finally:
        consumer.close()  # leaves the group at once: the others take its partitions


if __name__ == "__main__":
    main(*sys.argv[1:])
