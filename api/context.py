"""What one API process holds for its lifetime (opened in the lifespan, kept on app.state)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.devices import DeviceDirectory
from services.kafka import Publisher
from services.settings import Settings

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]


@dataclass
class ApiContext:
    settings: Settings
    pool: Pool
    publisher: Publisher
    directory: DeviceDirectory = field(default_factory=DeviceDirectory)
    extras: dict[str, Any] = field(default_factory=dict)
