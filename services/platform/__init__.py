"""The platform every process shares: settings, the Kafka port and topic repair, the PostgreSQL
pool and migrations, the TimescaleDB layer, the transactional outbox, the Kafka message schemas
(``events``), metrics and process tuning. It imports nothing of the domain."""

from services.platform import kafka_offsets, metrics, outbox, runtime, timescale_aggregates
from services.platform.arrivals import ArrivalRate
from services.platform.broker_saves import BrokerSaves, SaveSoon, Waker, write_pid_file
from services.platform.coalesce import Coalescing
from services.platform.db import (
    REQUEST_TIMEOUT,
    connection_kwargs,
    json_rows,
    migrate_for,
    open_pool,
)
from services.platform.events import (
    ALL_TOPICS,
    TOPIC_COMMANDS,
    TOPIC_DEAD_LETTER,
    TOPIC_DEVICE_EVENTS,
    TOPIC_READINGS,
    TOPIC_UPLINKS,
    TOPIC_WEBHOOK_READINGS,
    DataPoint,
    DeviceEvent,
    UplinkEnvelope,
    dumps,
    loads,
)
from services.platform.kafka import KafkaPublisher, Message, Publisher, PublishFailed, ensure_topics
from services.platform.mqtt_address import BrokerAddress, parse_mqtt_url
from services.platform.offset_holes import HOLE_PAUSE, HoleGuard
from services.platform.outbox import OutboxRelay
from services.platform.runtime import lower_priority, niced
from services.platform.settings import IPNetwork, Settings
from services.platform.timescale_aggregates import AGGREGATE_BUCKETS
from services.platform.topic_repair import TopicRepair

__all__ = [
    "AGGREGATE_BUCKETS",
    "ALL_TOPICS",
    "ArrivalRate",
    "BrokerAddress",
    "BrokerSaves",
    "Coalescing",
    "DataPoint",
    "DeviceEvent",
    "HOLE_PAUSE",
    "HoleGuard",
    "IPNetwork",
    "KafkaPublisher",
    "Message",
    "OutboxRelay",
    "PublishFailed",
    "Publisher",
    "REQUEST_TIMEOUT",
    "SaveSoon",
    "Settings",
    "TOPIC_COMMANDS",
    "TOPIC_DEAD_LETTER",
    "TOPIC_DEVICE_EVENTS",
    "TOPIC_READINGS",
    "TOPIC_UPLINKS",
    "TOPIC_WEBHOOK_READINGS",
    "TopicRepair",
    "UplinkEnvelope",
    "Waker",
    "connection_kwargs",
    "dumps",
    "ensure_topics",
    "json_rows",
    "kafka_offsets",
    "loads",
    "lower_priority",
    "metrics",
    "migrate_for",
    "niced",
    "open_pool",
    "outbox",
    "parse_mqtt_url",
    "runtime",
    "timescale_aggregates",
    "write_pid_file",
]
