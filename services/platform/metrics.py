"""Prometheus metrics of every process (served by the API at ``/metrics``, by a worker and an MQTT
adapter on their own ports; ``deploy/grafana`` charts them)."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

UPLINKS_RECEIVED = Counter(
    "hivepipe_uplinks_received_total", "Uplinks received, before deduplication", ["source"]
)
UPLINKS_DUPLICATE = Counter(
    "hivepipe_uplinks_duplicate_total", "Uplinks recognised as duplicates", ["source"]
)
UPLINKS_REJECTED = Counter(
    "hivepipe_uplinks_rejected_total", "Uplinks refused or dead-lettered", ["source", "reason"]
)
PUBLISH_SECONDS = Histogram(
    "hivepipe_publish_seconds",
    "Time to have Kafka acknowledge an envelope",
    ["source"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
CALLBACK_SECONDS = Histogram(
    "hivepipe_callback_seconds",
    "Time to answer a network's callback, from its request to the end of the answer",
    ["network"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
POINTS_STORED = Counter("hivepipe_points_stored_total", "Data points stored (new rows)")
DECODE_ERRORS = Counter("hivepipe_decode_errors_total", "Uplinks that did not decode", ["model"])
DEAD_LETTERS = Counter("hivepipe_dead_letters_total", "Records sent to dead-letter", ["reason"])
CALLBACK_EVENTS = Counter(
    "hivepipe_callback_events_total",
    "Network messages that are not uplinks (acks, joins, status...), by type",
    ["source", "type"],
)
WEBHOOK_ATTEMPTS = Counter(
    "hivepipe_webhook_attempts_total",
    "Webhook delivery attempts, by what followed: delivered, retrying, dead (dead-lettered), "
    "disabled (410 Gone)",
    ["result"],
)
CONSUMER_LAG = Gauge(
    "hivepipe_consumer_lag",
    "Records of the topic not yet processed by the worker group, on this worker's partitions "
    "(end offset minus committed offset)",
    ["topic"],
)


def serve(port: int, host: str) -> bool:
    """Serve this process's metrics on ``host:port`` (a thread); a port already taken is logged
    and the process runs on without them (metrics are not worth a crash loop)."""
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.warning("metrics not served on %s:%d: %s", host, port, exc)
        return False
    return True
