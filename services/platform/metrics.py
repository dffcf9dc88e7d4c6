"""Prometheus metrics of every process (served by the API at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
POINTS_STORED = Counter("hivepipe_points_stored_total", "Data points stored (new rows)")
DECODE_ERRORS = Counter("hivepipe_decode_errors_total", "Uplinks that did not decode", ["model"])
DEAD_LETTERS = Counter("hivepipe_dead_letters_total", "Records sent to dead-letter", ["reason"])
CALLBACK_EVENTS = Counter(
    "hivepipe_callback_events_total",
    "Network messages that are not uplinks (acks, joins, status...), by type",
    ["source", "type"],
)
