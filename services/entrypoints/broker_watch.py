"""The embedded Kafka's restarts and memory, watched by ``hivepipe up``'s loop."""

from __future__ import annotations

import logging
from pathlib import Path

from prometheus_client import Counter

from services.entrypoints.supervised import Supervised
from services.platform import Settings

log = logging.getLogger(__name__)

BROKER_RECYCLES = Counter(
    "hivepipe_embedded_kafka_recycles",
    "Times hivepipe up recycled the embedded Kafka for holding more than its memory budget",
)


def kafka_memory_mib(server: Supervised) -> float:
    """What the embedded Kafka holds in memory (its resident set, MiB); 0 when unknown."""
    if server.process is None:
        return 0.0
    try:
        status = Path(f"/proc/{server.process.pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class BrokerWatch:
    """The embedded Kafka (tansu) keeps its log in memory: when it starts again it is empty.

    Its consumers then hold offsets of a log that no longer exists, so the workers are started
    again with it (they join with no committed offsets and read from the start), and the
    intake journal replays what was accepted and not stored yet. It also grows without bound
    (no retention): past ``embedded_kafka_max_mib`` it is recycled the same way, which loses
    nothing with the journal kept (only subscribers of the public topics miss what they had not
    read yet), so it is not done with ``intake_journal`` off."""

    def __init__(self, settings: Settings, kafka: Supervised, roles: list[Supervised]) -> None:
        self.settings = settings
        self.kafka = kafka
        self.roles = roles
        self._generation = kafka.generation
        self._next_check = 0.0

    def check(self, now: float) -> None:
        if self.kafka.process is None:
            return
        if self.kafka.generation != self._generation:
            self._generation = self.kafka.generation
            self._restart_consumers("the embedded Kafka started again, empty")
            return
        limit = self.settings.embedded_kafka_max_mib
        if not limit or now < self._next_check:
            return
        self._next_check = now + 10.0
        held = kafka_memory_mib(self.kafka)
        if held <= limit:
            return
        if not self.settings.intake_journal:
            log.warning(
                "the embedded Kafka holds %.0f MiB (over %d) but is not recycled: without the "
                "intake journal that would lose what it holds",
                held,
                limit,
            )
            self._next_check = now + 600.0
            return
        self.kafka.recycle(f"it held {held:.0f} MiB, over HIVEPIPE_EMBEDDED_KAFKA_MAX_MIB={limit}")
        BROKER_RECYCLES.inc()
        self._generation = self.kafka.generation
        self._restart_consumers("the embedded Kafka was recycled")

    def _restart_consumers(self, why: str) -> None:
        for child in self.roles:
            if child.role == "worker":
                # Killed, not stopped: a graceful stop commits offsets to a group the broker no
                # longer has (about 9 s here), and nothing is lost (the journal replays).
                child.recycle(f"{why}: its consumer offsets are gone", kill=True)
