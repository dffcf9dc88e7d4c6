"""What the agents share in one worker process: the pool, the publisher, the device cache."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.codecs import CodecCache, CodecLimits
from services.devices import DeviceDirectory
from services.platform import ALL_TOPICS, KafkaPublisher, Settings, TopicRepair, open_pool


@dataclass
class Resources:
    """Opened lazily by the first agent that needs them; closed at worker shutdown."""

    settings: Settings
    directory: DeviceDirectory = field(default_factory=DeviceDirectory)
    _pool: AsyncConnectionPool[AsyncConnection[dict[str, Any]]] | None = None
    _publisher: KafkaPublisher | None = None
    _repairing: TopicRepair | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: The compiled JavaScript codecs of the accounts' own device models.
    codecs: CodecCache = field(init=False)

    def __post_init__(self) -> None:
        self.codecs = CodecCache(
            CodecLimits(
                timeout_ms=self.settings.codec_timeout_ms,
                memory_bytes=self.settings.codec_memory_mib * 1024 * 1024,
                max_output_bytes=self.settings.codec_max_output_bytes,
            ),
            size=self.settings.codec_cache_size,
        )

    async def open(
        self,
    ) -> tuple[AsyncConnectionPool[AsyncConnection[dict[str, Any]]], KafkaPublisher]:
        async with self._lock:
            if self._pool is None:
                assert self.settings.database_url, "HIVEPIPE_DATABASE_URL is required"
                self._pool = await open_pool(
                    self.settings.database_url,
                    size=self.settings.db_pool_size,
                    name="worker",
                    prepare=self.settings.db_prepare,
                )
            if self._publisher is None:
                assert self.settings.kafka, "HIVEPIPE_KAFKA is required"
                publisher = KafkaPublisher(self.settings.kafka, timeout=10.0, linger_ms=2)
                await publisher.start()
                self._publisher = publisher
            return self._pool, self._publisher

    async def open_repairing(
        self,
    ) -> tuple[AsyncConnectionPool[AsyncConnection[dict[str, Any]]], TopicRepair]:
        """:meth:`open`, with the publisher wrapped to re-create the topics a restarted empty
        broker lost (for what must not be swallowed: the outbox, the journal's replays)."""
        pool, publisher = await self.open()
        if self._repairing is None:
            self._repairing = TopicRepair(
                publisher,
                bootstrap=self.settings.kafka,
                topics=[self.settings.topic(t) for t in ALL_TOPICS],
                partitions=self.settings.partitions,
            )
        return pool, self._repairing

    async def close(self) -> None:
        if self._publisher is not None:
            await self._publisher.stop()
            self._publisher = None
            self._repairing = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
