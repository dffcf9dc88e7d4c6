"""The Faust stream processor: its app and agents (they only loop; logic lives in services/)."""

from stream.app import Worker, ready_file
from stream.worker import create_app

__all__ = [
    "Worker",
    "create_app",
    "ready_file",
]
