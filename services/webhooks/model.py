"""The values of webhook delivery: a webhook as delivering sees it, a ``readings`` message, one
point's delivery, an attempt and its result, a batch's plan; and what settling a batch decides
(the rows of the attempt log and of the retry queue, a webhook's change of health, the
:class:`Settlement` the store writes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from services.platform import Message
from services.webhooks.policy import Outcome

#: What followed an attempt, as the deliveries listing shows it.
Result = Literal["delivered", "retrying", "dead", "disabled"]


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The result of one attempt.

    ``status`` is the HTTP status (``None`` when no answer came); ``latency_ms`` the time
    from the lookup to the end of the answer; ``error`` a short human explanation for
    anything but a delivery; ``retry_after`` the answer's ``Retry-After`` in seconds;
    ``response_body`` the first (at most 1 KiB) bytes of the answer's body, for the logs.
    """

    outcome: Outcome
    status: int | None
    latency_ms: float
    error: str | None = None
    retry_after: float | None = None
    response_body: bytes = b""


@dataclass(frozen=True, slots=True)
class Hook:
    """An active webhook, as the delivery path needs it."""

    id: int
    device: str
    url: str
    secret: str
    owner_id: int


@dataclass(frozen=True, slots=True)
class Stored:
    """One ``readings`` message: the points of one uplink, once in the database."""

    device: str
    points: tuple[dict[str, Any], ...]
    stored: float | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One data point for one webhook. ``attempts`` counts the attempts already made (all
    failed); ``queued`` is set when it comes from the retry queue (its row goes once it is
    done with)."""

    hook: Hook
    message_id: str
    body: bytes
    attempts: int = 0
    queued: bool = False


@dataclass(frozen=True, slots=True)
class Attempt:
    """A delivery attempt and its result; ``at`` is the Unix time it started."""

    delivery: Delivery
    result: DeliveryResult
    at: float


@dataclass
class Plan:
    """``chains``: per (webhook, device), the deliveries in order; ``spilled``: deliveries that
    go straight to the retry queue, due at once (their webhook is failing)."""

    chains: list[list[Delivery]] = field(default_factory=list)
    spilled: list[Delivery] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(chain) for chain in self.chains) + len(self.spilled)


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """A row of ``webhook_deliveries``."""

    webhook_id: int
    at: float
    attempt: int
    outcome: str
    result: Result
    status: int | None
    latency_ms: float
    error: str | None
    message_id: str
    body: str


@dataclass(frozen=True, slots=True)
class RetryRow:
    """A row of ``webhook_retries`` to insert or update: due ``delay`` seconds from now."""

    webhook_id: int
    device: str
    message_id: str
    body: str
    attempts: int
    delay: float
    last_status: int | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class HealthChange:
    """What a batch's attempts did to one webhook's run of failures.

    ``reset``: one of them was delivered, and ``failures`` counts those failed after the last
    delivery (else all of them, to add to the stored run); ``failing_since`` is the start time
    of the first of those. ``failed`` counts every failed attempt of the batch; ``queued`` is
    set when one came from the retry queue (the webhook has failed before: its stored run
    must be updated, whoever recorded it).
    """

    reset: bool = False
    failures: int = 0
    failing_since: float | None = None
    failed: int = 0
    last_failure: float | None = None
    last_error: str | None = None
    queued: bool = False

    @property
    def must_write(self) -> bool:
        """Whether the stored run may change (a failure, or a success after a failure)."""
        return bool(self.failed or self.queued)


@dataclass
class Settlement:
    """What a batch of attempts changes, written by ``delivery_store.persist_settlement`` in
    one transaction after the dead letters are published."""

    records: list[AttemptRecord] = field(default_factory=list)
    retries: list[RetryRow] = field(default_factory=list)
    #: (webhook id, message id) of the queued points done with: delivered, dead-lettered or
    #: dropped (a fresh point done with has no row to remove).
    finished: list[tuple[int, str]] = field(default_factory=list)
    dead_letters: list[Message] = field(default_factory=list)
    health: dict[int, HealthChange] = field(default_factory=dict)
    #: Webhooks to disable at once (410 Gone), with the reason.
    gone: dict[int, str] = field(default_factory=dict)
    #: Delivered points per owner (usage counters).
    delivered: dict[int, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.records or self.retries or self.finished or self.health or self.gone)
