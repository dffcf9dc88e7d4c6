"""The embedded Kafka's restarts and memory, watched by ``hivepipe up``'s loop."""

from __future__ import annotations

import logging
import os
from collections import deque
from pathlib import Path

from prometheus_client import Counter

from services.entrypoints.supervised import Supervised
from services.platform import Settings

log = logging.getLogger(__name__)

BROKER_RECYCLES = Counter(
    "hivepipe_embedded_kafka_recycles",
    "Times hivepipe up recycled the embedded Kafka, by what it was over: its memory budget "
    "(memory) or its CPU budget (cpu)",
    ["over"],
)

#: How often the watch reads the embedded Kafka's memory and CPU (seconds).
CHECK_EVERY = 10.0
#: The window its CPU is averaged over, and the youngest broker the CPU budget applies to: a
#: fresh broker costs what its load costs; it is the growth the budget is for (seconds).
CPU_WINDOW = 60.0


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


def kafka_cpu_seconds(server: Supervised) -> float | None:
    """The CPU time the embedded Kafka has used (user + system, seconds); None when unknown."""
    if server.process is None:
        return None
    try:
        stat = Path(f"/proc/{server.process.pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class BrokerWatch:
    """The embedded Kafka (tansu) keeps its log in memory: when it starts again it is empty.

    Its consumers then hold offsets of a log that no longer exists, so the workers are started
    again with it (they join with no committed offsets and read from the start), and the
    intake journal replays what was accepted and not stored yet. It also grows without bound
    (no retention): past ``embedded_kafka_max_mib`` it is recycled the same way, which loses
    nothing with the journal kept (only subscribers of the public topics miss what they had not
    read yet), so it is not done with ``intake_journal`` off.

    Its CPU grows with what it holds too, and much faster than its memory: a fetch that finds
    records lists every stored produce request of the partition (about 1 µs each), so at a
    steady 500 uplinks/s it costs five times as much after five minutes (docs/benchmarks.md).
    Past ``embedded_kafka_max_cpu`` of a core over a minute, once it has run that long, it is
    recycled the same way."""

    def __init__(self, settings: Settings, kafka: Supervised, roles: list[Supervised]) -> None:
        self.settings = settings
        self.kafka = kafka
        self.roles = roles
        self._generation = kafka.generation
        self._next_check = 0.0
        #: (when, CPU seconds used by then) of the current broker, the last minute of them.
        self._cpu: deque[tuple[float, float]] = deque()

    def check(self, now: float) -> None:
        if self.kafka.process is None:
            return
        if self.kafka.generation != self._generation:
            self._generation = self.kafka.generation
            self._cpu.clear()
            self._restart_consumers("the embedded Kafka started again, empty")
            return
        if now < self._next_check:
            return
        self._next_check = now + CHECK_EVERY
        why, over = self._over_budget(now)
        if why is None:
            return
        if not self.settings.intake_journal:
            log.warning(
                "the embedded Kafka is over its budget (%s) but is not recycled: without the "
                "intake journal that would lose what it holds",
                why,
            )
            self._next_check = now + 600.0
            return
        # Killed, not stopped: what it holds is lost either way (memory only), and a graceful
        # stop waits about 5 s for its clients, all of that time without a broker.
        self.kafka.recycle(why, kill=True)
        BROKER_RECYCLES.labels(over).inc()
        self._generation = self.kafka.generation
        self._cpu.clear()
        # The topics are not created here: the producers' repair (services/platform/
        # topic_repair.py) takes topics it finds missing for the sign of a restart, and fails
        # the publishes that were in flight across it (an empty tansu acknowledges records for a
        # topic it does not have without keeping them). Created first, they hid that sign, and
        # `make chaos` lost one uplink of 6,000 when tansu was killed.
        self._restart_consumers("the embedded Kafka was recycled")

    def _over_budget(self, now: float) -> tuple[str | None, str]:
        """Why the broker must be recycled (None: it need not), and which budget it is over."""
        limit = self.settings.embedded_kafka_max_mib
        held = kafka_memory_mib(self.kafka) if limit else 0.0
        if limit and held > limit:
            return f"it held {held:.0f} MiB, over HIVEPIPE_EMBEDDED_KAFKA_MAX_MIB={limit}", "memory"
        budget = self.settings.embedded_kafka_max_cpu
        share = self._cpu_share(now) if budget else None
        if budget and share is not None and share > budget:
            return (
                f"it used {share:.0%} of a core over the last minute, over "
                f"HIVEPIPE_EMBEDDED_KAFKA_MAX_CPU={budget:g} (its cost per fetch grows with "
                "what it holds)",
                "cpu",
            )
        return None, ""

    def _cpu_share(self, now: float) -> float | None:
        """The broker's CPU over the last :data:`CPU_WINDOW` (cores), None until it has run
        that long under this watch."""
        used = kafka_cpu_seconds(self.kafka)
        if used is None:
            return None
        self._cpu.append((now, used))
        while len(self._cpu) > 1 and now - self._cpu[1][0] >= CPU_WINDOW:
            self._cpu.popleft()
        since, before = self._cpu[0]
        if now - since < CPU_WINDOW:
            return None
        return (used - before) / (now - since)

    def _restart_consumers(self, why: str) -> None:
        for child in self.roles:
            if child.role == "worker":
                # Killed, not stopped: a graceful stop commits offsets to a group the broker no
                # longer has (about 9 s here), and nothing is lost (the journal replays).
                child.recycle(f"{why}: its consumer offsets are gone", kill=True)
