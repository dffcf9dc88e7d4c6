"""The faults, one plain function each: given the running pipeline, break one thing, once.

A new fault is a function of a :class:`~tests.chaos.pipeline.Pipeline` and a line in
:data:`FAULTS` (what it is called in the table, and which role's restart the supervisor must
count, if any). It runs in a thread while the load goes on, so it may block (stop a server for
ten seconds, then start it again).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.chaos.pipeline import Pipeline, children_of


@dataclass(frozen=True)
class Fault:
    name: str
    inject: Callable[[Pipeline], object]
    #: The ``role`` label of ``hivepipe_role_restarts_total`` that must count one restart.
    restarted: str | None = None
    #: Seconds within which uplinks sent after the fault are stored again (None: not held to
    #: a target, when an operator has to act).
    recovery_target: float | None = 15.0
    #: Whether every callback must be answered within 5 s (not while ``hivepipe up`` starts
    #: again: its socket takes connections before its API processes can answer them).
    bounded_answers: bool = True


def kill_worker(pipeline: Pipeline) -> None:
    """kill -9 of the Faust worker: what it fetched and had not stored yet is on Kafka still."""
    pipeline.kill("worker")


def kill_mqtt_adapter(pipeline: Pipeline) -> None:
    """kill -9 of the MQTT adapter: the broker keeps its session and queues what arrives."""
    pipeline.kill("mqtt")


def kill_mqtt_adapter_then_broker(pipeline: Pipeline) -> None:
    """kill -9 of the MQTT adapter, then of Mosquitto half a second later (a box going down a
    piece at a time): what Mosquitto acknowledged in between exists only in its store, so it
    must have been saved (``HIVEPIPE_EMBEDDED_MQTT_SAVE``)."""
    pipeline.kill("mqtt")
    time.sleep(0.5)
    pipeline.kill("mqtt-broker")


def kill_api_process(pipeline: Pipeline) -> None:
    """kill -9 of one of the API processes: the others take the new connections."""
    pipeline.kill("api")


def kill_postgres(pipeline: Pipeline) -> None:
    """kill -9 of the embedded PostgreSQL's postmaster (its backends follow it)."""
    pipeline.kill("postgres")


def kill_kafka(pipeline: Pipeline) -> None:
    """kill -9 of the embedded Kafka (tansu keeps its log in memory: it comes back empty). The
    supervisor starts it again, and the worker with it; the intake journal replays what had
    been accepted and not stored."""
    pipeline.kill("kafka")


def freeze_postgres(pipeline: Pipeline, seconds: float = 10.0) -> None:
    """PostgreSQL frozen (SIGSTOP to the postmaster and its backends) for ``seconds``: nothing
    exits, nothing is restarted; callbacks must still be answered within 5 s."""
    pids = pipeline.children("postgres")
    assert pids, "no postgres process under hivepipe up"
    group = [pids[0], *(pid for pid, _ in children_of(pids[0]))]
    for pid in group:
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        for pid in group:
            os.kill(pid, signal.SIGCONT)


def power_cut(pipeline: Pipeline) -> None:
    """kill -9 of the whole tree (every server, every role, the supervisor), then ``hivepipe
    up`` again on the same data directory, as an operator's ``make run`` after a power cut."""
    pipeline.power_cut()
    time.sleep(2.0)
    pipeline.start_again()


FAULTS = [
    Fault("kill -9 worker", kill_worker, restarted="worker"),
    Fault("kill -9 MQTT adapter", kill_mqtt_adapter, restarted="mqtt"),
    Fault(
        "kill -9 MQTT adapter, then Mosquitto 0.5 s later",
        kill_mqtt_adapter_then_broker,
        restarted="mqtt-broker",
    ),
    Fault("kill -9 one API process", kill_api_process, restarted="api"),
    Fault("kill -9 PostgreSQL", kill_postgres, restarted="postgres"),
    Fault("kill -9 embedded Kafka (tansu)", kill_kafka, restarted="kafka"),
    Fault("PostgreSQL frozen 10 s", freeze_postgres),
    Fault(
        "kill -9 of the whole tree, then make run",
        power_cut,
        recovery_target=None,
        bounded_answers=False,
    ),
]
