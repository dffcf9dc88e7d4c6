"""Readings: the decode-and-store step of the stream (``pipeline``), and the stores of data points,
relay state and device events with their queries; aggregates of one device or of several
(a fleet, a place)."""

from services.readings import points
from services.readings.aggregates import CombineFn, Window, aggregate_devices, aggregate_points
from services.readings.device_events import query_events, store_events
from services.readings.paging import InvalidCursor, query_points
from services.readings.pipeline import process_uplinks
from services.readings.state import latest_state

__all__ = [
    "CombineFn",
    "InvalidCursor",
    "Window",
    "aggregate_devices",
    "aggregate_points",
    "latest_state",
    "points",
    "process_uplinks",
    "query_events",
    "query_points",
    "store_events",
]
