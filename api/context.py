"""What one API process holds for its lifetime (opened in the lifespan, kept on app.state)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.ratelimit import AccountLimiter
from services.accounts import LastUsed
from services.codecs import CodecCache
from services.commands import CommandPublisher
from services.devices import DeviceDirectory
from services.downlinks import NetworkServer
from services.platform import OutboxRelay, Publisher, Settings
from services.uplinks import ClaimGroups
from services.webhooks import CachingResolver

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]
#: A readiness probe of one dependency (``/readyz``): True when it is reachable.
Check = Callable[[], Awaitable[bool]]
Closer = Callable[[], Awaitable[None]]


@dataclass
class ApiServices:
    """Opened by :func:`api.lifespan.start_api_services` in the lifespan."""

    limiter: AccountLimiter
    last_used: LastUsed
    commands: CommandPublisher
    #: None when no LoRaWAN network server is configured (``network_server_problem`` says why).
    network_server: NetworkServer | None
    network_server_problem: str


@dataclass
class ApiContext:
    settings: Settings
    pool: Pool
    publisher: Publisher
    directory: DeviceDirectory = field(default_factory=DeviceDirectory)
    #: The routes' services (rate limiter, command publisher, network server); set at start.
    services: ApiServices | None = None
    #: The callbacks' publisher: ``publisher`` wrapped to re-create lost topics (set lazily).
    ingest_publisher: Publisher | None = None
    #: The uplink callbacks' grouped claims (``HIVEPIPE_CLAIM_SLOTS``; set lazily, None: off).
    claims: ClaimGroups | None = None
    #: Connections of the Sigfox downlink answer alone (None: it uses ``pool``).
    answer_pool: Pool | None = None
    #: Publishes the outbox (Orbit events written with their state); None when not started.
    outbox_relay: OutboxRelay | None = None
    webhook_resolver: CachingResolver = field(default_factory=CachingResolver)
    #: Readiness probes beyond the database: ``kafka`` (an own producer), ``mqtt`` (commands).
    kafka_ready: Check | None = None
    mqtt_ready: Check | None = None
    #: Run in order at shutdown, before the pool closes.
    closers: list[Closer] = field(default_factory=list)
    #: The models' compiled codecs (``api.codecs``; set at the first use, closed at shutdown).
    codec_cache: CodecCache | None = None

    def api_services(self) -> ApiServices:
        """The routes' services; started in the lifespan before any request."""
        assert self.services is not None, "start_api_services() has not run"
        return self.services

    def wake_outbox_relay(self) -> None:
        """Publish the outbox now rather than at the relay's next poll."""
        if self.outbox_relay is not None:
            self.outbox_relay.wake()
