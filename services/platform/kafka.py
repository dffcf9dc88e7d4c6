"""The Kafka port: publish keyed JSON messages and wait until the broker has them (acks=all).

``KafkaPublisher`` is the real adapter (aiokafka); ``FakePublisher`` records messages for unit
tests. Topics are created at start with :func:`ensure_topics`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)

Message = tuple[str, bytes]  # (key, value)

#: Seconds a producer's stop may take beyond its publish time-out. aiokafka's stop waits for
#: every pending batch, and a batch the broker keeps refusing is retried forever
#: (aio-libs/aiokafka#1101): a process would never exit, nor a test finish its teardown.
STOP_GRACE = 5.0


class PublishFailed(RuntimeError):
    """Kafka did not take the messages in time: the caller answers 503 or retries."""


class Publisher(Protocol):
    """Publishes messages and returns only once the broker has acknowledged all of them."""

    async def publish(self, topic: str, messages: Sequence[Message]) -> None: ...

    async def publish_many(self, batches: Iterable[tuple[str, Sequence[Message]]]) -> None: ...


class KafkaPublisher:
    """aiokafka producer with ``acks=all``: batches sends, awaits the broker's acknowledgements."""

    def __init__(self, bootstrap: str, *, timeout: float = 5.0, linger_ms: int = 1) -> None:
        self._bootstrap = bootstrap
        self._timeout = timeout
        self._linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Connect; raises :class:`PublishFailed` when the broker cannot be reached."""
        async with self._lock:
            if self._producer is not None:
                return
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                acks="all",
                linger_ms=self._linger_ms,
                max_batch_size=1 << 20,
                request_timeout_ms=int(self._timeout * 1000),
                retry_backoff_ms=100,
            )
            try:
                await asyncio.wait_for(producer.start(), self._timeout)
            except (KafkaError, OSError, TimeoutError) as exc:
                await producer.stop()
                raise PublishFailed(f"Kafka unreachable: {exc!r}") from exc
            self._producer = producer

    async def stop(self) -> None:
        """Flush what is buffered and disconnect, giving up after the publish time-out and
        :data:`STOP_GRACE` (what no broker acknowledged was not promised to anyone: a publish
        returns only once acknowledged)."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            within = self._timeout + STOP_GRACE
            try:
                async with asyncio.timeout(within):
                    await producer.stop()
            except TimeoutError:
                log.warning(
                    "the Kafka producer did not stop within %.0f s; left behind (%s)",
                    within,
                    self._bootstrap,
                )

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def reachable(self, within: float = 2.0) -> bool:
        """True when a broker answers a metadata request within ``within`` s (``/readyz``).

        A started producer says nothing about the broker now: it was started once, and a
        broker that went away since is only noticed by the next publish."""
        try:
            async with asyncio.timeout(within):
                await self.start()
                producer = self._producer
                assert producer is not None
                await producer.client.fetch_all_metadata()
        except (KafkaError, OSError, TimeoutError, PublishFailed):
            return False
        return True

    async def publish(self, topic: str, messages: Sequence[Message]) -> None:
        await self.publish_many([(topic, messages)])

    async def publish_many(self, batches: Iterable[tuple[str, Sequence[Message]]]) -> None:
        if self._producer is None:
            await self.start()
        producer = self._producer
        assert producer is not None
        try:
            async with asyncio.timeout(self._timeout):
                futures = [
                    await producer.send(topic, value, key=key.encode())
                    for topic, messages in batches
                    for key, value in messages
                ]
                if futures:
                    await asyncio.gather(*futures)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise PublishFailed(f"Kafka did not acknowledge: {exc!r}") from exc


class FakePublisher:
    """In-memory twin of :class:`KafkaPublisher` for unit tests."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bytes]] = []
        self.fail = False

    async def publish(self, topic: str, messages: Sequence[Message]) -> None:
        await self.publish_many([(topic, messages)])

    async def publish_many(self, batches: Iterable[tuple[str, Sequence[Message]]]) -> None:
        if self.fail:
            raise PublishFailed("fake Kafka is down")
        for topic, messages in batches:
            self.sent.extend((topic, key, value) for key, value in messages)


async def ensure_topics(bootstrap: str, names: Iterable[str], partitions: int) -> None:
    """Create the topics that do not exist yet (replication factor 1 on a single broker)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in names if name not in existing]
        if not missing:
            return
        brokers = len((await admin.describe_cluster())["brokers"])
        try:
            await admin.create_topics(
                [NewTopic(name, partitions, min(3, brokers)) for name in missing]
            )
        except TopicAlreadyExistsError:
            pass  # another process created them meanwhile
        log.info("created topics %s", ", ".join(missing))
    finally:
        await admin.close()
