"""The configuration state of one Orbit device, as immutable values.

Every rule of the pending queue (``queue.py``, ``planning.py``) is a pure function from one
:class:`DeviceConfig` to the next, plus the :class:`Outcome` values that say what happened (the
caller turns them into ``device-events``). Values are raw integers; see ``params.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from services.orbit.params import default_active, from_raw

__all__ = [
    "BUDGET_WINDOW_S",
    "DOWNLINKS_PER_WINDOW",
    "MAX_ATTEMPTS",
    "UPLINKS_BEFORE_RETRY",
    "DeviceConfig",
    "Downlink",
    "Outcome",
    "OutcomeKind",
    "PendingUpdate",
    "Status",
]

#: At most this many downlinks per device in any rolling window of ``BUDGET_WINDOW_S`` seconds.
DOWNLINKS_PER_WINDOW = 4
BUDGET_WINDOW_S = 24 * 3600.0
#: Unanswered sends after which an update is ``failed``.
MAX_ATTEMPTS = 3
#: An in-flight update not acked by the device's second uplink after the send is re-queued.
UPLINKS_BEFORE_RETRY = 2

Status = Literal["queued", "in_flight", "failed"]
OutcomeKind = Literal[
    "unchanged",  # rule 1: the value is already active, nothing pending
    "param_queued",  # rules 4 and 5
    "param_replaced",  # rule 3
    "param_dropped",  # rule 2, made redundant by an ack, superseded, deleted by an operator
    "param_acked",  # the update's downlink was acked
    "param_requeued",  # not acked by the second uplink after the send: queued again
    "param_failed",  # MAX_ATTEMPTS sends unanswered
]


@dataclass(frozen=True, slots=True)
class PendingUpdate:
    """One pending update of parameter ``param`` to ``value_raw``.

    ``attempts`` counts sends that went unanswered; ``seq`` is the downlink it was last sent in
    (kept after a time-out, so that a late ack of that downlink still answers it; cleared when
    the value is replaced); ``sent_at`` is when, and ``uplinks_since_send`` how many of the
    device's uplinks have been seen since without an ack.
    """

    param: str
    value_raw: int
    status: Status = "queued"
    queued_at: float = 0.0
    attempts: int = 0
    seq: int | None = None
    sent_at: float | None = None
    uplinks_since_send: int = 0


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """A device's configuration: active values (raw, as last acked or factory default), pending
    updates, the seq of the last downlink sent (0 before the first: the next seq is always
    ``(seq + 1) % 256``) and the send times of the downlinks of the last 24 hours.

    ``active`` is a plain mapping: treat it as read-only, functions return new configs.
    """

    model: str
    active: Mapping[str, int] = field(hash=False)
    pending: tuple[PendingUpdate, ...] = ()
    seq: int = 0
    downlinks: tuple[float, ...] = ()

    @classmethod
    def new(cls, model: str) -> DeviceConfig:
        """A device as it leaves the factory: default active values, nothing pending."""
        return cls(model=model, active=default_active(model))


@dataclass(frozen=True, slots=True)
class Downlink:
    """A planned downlink: its ``seq``, the (param, raw value) updates in frame order, the frame."""

    seq: int
    updates: tuple[tuple[str, int], ...]
    frame: bytes

    @property
    def frame_hex(self) -> str:
        """The 16 lower-case hex digits the Sigfox callback answers with."""
        return self.frame.hex()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one rule did to one parameter. ``value_raw`` is the value concerned (requested, or
    applied for an ack); ``requested_raw`` the value that was asked when an ack differs (the
    sensor clamped it); ``previous_raw`` the value a replacement replaced; ``reason`` says why
    an update was dropped.
    """

    kind: OutcomeKind
    param: str
    value_raw: int
    seq: int | None = None
    attempts: int | None = None
    requested_raw: int | None = None
    previous_raw: int | None = None
    reason: str | None = None

    def event_data(self) -> dict[str, Any]:
        """The ``data`` of the device event for this outcome, values in natural units."""
        data: dict[str, Any] = {"param": self.param, "value": from_raw(self.param, self.value_raw)}
        if self.seq is not None:
            data["seq"] = self.seq
        if self.attempts is not None:
            data["attempts"] = self.attempts
        if self.requested_raw is not None:
            data["requested"] = from_raw(self.param, self.requested_raw)
        if self.previous_raw is not None:
            data["previous"] = from_raw(self.param, self.previous_raw)
        if self.reason is not None:
            data["reason"] = self.reason
        return data
