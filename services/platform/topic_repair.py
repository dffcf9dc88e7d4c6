"""Kafka topics that a restarted broker lost, re-created before they are published to again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from services.platform.kafka import Message, Publisher, PublishFailed

log = logging.getLogger(__name__)


class TopicRepair:
    """A :class:`Publisher` that re-creates the topics a restarted broker lost.

    tansu with memory storage restarts empty. It then auto-creates a topic on the first
    metadata request with its default partition count, and it acknowledges a produce request
    for a topic it does not have *without keeping the records* (what the producer had in flight
    across the restart). So: once a publish has failed, the next one first re-creates the
    missing topics with the configured count (PublishFailed while that is not possible); and a
    publish slow enough (``slow`` seconds) to have straddled a restart is followed by a check of
    the topics. Whenever topics had to be re-created, every publish that was in flight meanwhile
    raises PublishFailed, so that its caller publishes again (at-least-once: a duplicate at
    worst). A publish refused quickly is tried once more after the check (what a broker that
    has just restarted answers to the batches it had in flight). ``check_first`` checks before
    the very first publish. A durable broker only ever costs the rare check after a slow one.
    """

    def __init__(
        self,
        publisher: Publisher,
        *,
        bootstrap: str | None,
        topics: Sequence[str],
        partitions: int,
        timeout: float = 5.0,
        check_first: bool = False,
        slow: float = 1.0,
    ) -> None:
        self._inner = publisher
        self._bootstrap = bootstrap
        self._topics = list(topics)
        self._partitions = partitions
        self._timeout = timeout
        self._slow = slow
        self._suspect = check_first
        #: Incremented whenever topics had to be re-created: a publish in flight meanwhile may
        #: have been acknowledged by the empty broker, so it is reported failed.
        self._restarts = 0
        self._lock = asyncio.Lock()

    @property
    def inner(self) -> Publisher:
        return self._inner

    async def publish(self, topic: str, messages: Sequence[Message]) -> None:
        await self.publish_many([(topic, messages)])

    async def publish_many(self, batches: Iterable[tuple[str, Sequence[Message]]]) -> None:
        if self._suspect and self._bootstrap:
            async with self._lock:
                if self._suspect:
                    await self._recreate()
                    self._suspect = False
        batches = list(batches)
        restarts = self._restarts
        started = time.monotonic()
        try:
            await self._inner.publish_many(batches)
        except PublishFailed:
            self._suspect = True
            if not self._bootstrap or time.monotonic() - started > self._slow:
                raise
            # A quick refusal (a batch of a broker that just restarted): check, then once more.
            async with self._lock:
                await self._recreate()
                self._suspect = False
            restarts = self._restarts
            await self._inner.publish_many(batches)
        if self._bootstrap and time.monotonic() - started > self._slow:
            async with self._lock:  # one check at a time, however many publishes were slow
                await self._recreate()
        if self._restarts != restarts:
            raise PublishFailed("the broker restarted empty while this was in flight")

    async def _recreate(self) -> list[str]:
        """Create the missing topics; returns their names (PublishFailed when impossible)."""
        assert self._bootstrap is not None
        try:
            async with asyncio.timeout(self._timeout):
                missing = await create_missing_topics(
                    self._bootstrap, self._topics, self._partitions
                )
        except Exception as exc:
            raise PublishFailed(f"Kafka topics cannot be checked: {exc!r}") from exc
        if missing:
            self._restarts += 1
        return missing


async def create_missing_topics(bootstrap: str, names: Sequence[str], partitions: int) -> list[str]:
    """Like :func:`services.platform.kafka.ensure_topics`, returning the names it had to create."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5_000)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [name for name in names if name not in existing]
        if missing:
            brokers = len((await admin.describe_cluster())["brokers"])
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(name, partitions, min(3, brokers)) for name in missing]
                )
            log.warning("re-created the missing Kafka topics %s", ", ".join(missing))
        return missing
    finally:
        await admin.close()
