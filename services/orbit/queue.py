"""The pending-update queue rules (``orbit-protocol.md``, "The pending queue"), as pure functions.

Per parameter the queue holds one of: nothing, a ``queued`` update, an ``in_flight`` one, an
``in_flight`` one with a ``queued`` successor (rule 4), or a ``failed`` one. Decisions where the
spec is silent are in ``docs/orbit.md``; the one principle behind them: *an update whose value is
the active value is redundant, unless an update of the same parameter is in flight* (the ack of
that one will change the active value, rule 4).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from services.orbit.params import PARAMS_BY_ID, InvalidParam, get_model, get_param, to_raw
from services.orbit.state import (
    MAX_ATTEMPTS,
    UPLINKS_BEFORE_RETRY,
    DeviceConfig,
    Outcome,
    OutcomeKind,
    PendingUpdate,
)

__all__ = ["apply_ack", "delete_pending", "note_uplink", "register_updates", "validate_updates"]

Pending = list[PendingUpdate]


def validate_updates(model: str, updates: Mapping[str, float]) -> dict[str, int]:
    """The raw value of every update, or :class:`InvalidParam` naming every refused one."""
    raws: dict[str, int] = {}
    errors: list[InvalidParam] = []
    for name, value in updates.items():
        try:
            raws[name] = to_raw(model, name, value)
        except InvalidParam as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        reasons = tuple(e.reason for e in errors)
        raise InvalidParam("; ".join(reasons), details=reasons)
    return raws


def register_updates(
    config: DeviceConfig, updates: Mapping[str, float], now: float
) -> tuple[DeviceConfig, tuple[Outcome, ...]]:
    """Register updates ``{name: natural value}`` following rules 1-5, one outcome per parameter.

    Every update is validated first: one invalid update raises :class:`InvalidParam` and nothing
    is registered. Re-registering a parameter whose update ``failed`` discards the failed update,
    then applies the rules (so it is queued afresh, or dropped when the value is the active one).
    """
    raws = validate_updates(config.model, updates)
    pending = list(config.pending)
    outcomes = []
    for name, raw in raws.items():
        outcomes.append(_register_one(config.active, pending, name, raw, now))
    return replace(config, pending=tuple(pending)), tuple(outcomes)


def _find(pending: Pending, name: str, status: str) -> PendingUpdate | None:
    return next((u for u in pending if u.param == name and u.status == status), None)


def _register_one(
    active: Mapping[str, int], pending: Pending, name: str, raw: int, now: float
) -> Outcome:
    """Apply rules 1-5 to ``pending`` in place for one parameter."""
    failed = _find(pending, name, "failed")
    if failed is not None:
        pending.remove(failed)
    queued = _find(pending, name, "queued")
    in_flight = _find(pending, name, "in_flight") is not None
    if raw == active.get(name) and not in_flight:
        if queued is not None:  # rule 2
            pending.remove(queued)
        if queued is not None or failed is not None:
            return Outcome("param_dropped", name, raw, reason="equals the active value")
        return Outcome("unchanged", name, raw)  # rule 1
    if queued is not None:  # rule 3: one message, not two; it keeps its place in the queue
        if queued.value_raw != raw:
            # The unanswered sends and the seq were those of another value.
            fresh = replace(queued, value_raw=raw, attempts=0, seq=None, sent_at=None)
            pending[pending.index(queued)] = fresh
        return Outcome("param_replaced", name, raw, previous_raw=queued.value_raw)
    pending.append(PendingUpdate(name, raw, "queued", queued_at=now))  # rules 4 and 5
    return Outcome("param_queued", name, raw)


def delete_pending(config: DeviceConfig, param: str) -> tuple[DeviceConfig, tuple[Outcome, ...]]:
    """An operator deletes every pending update of ``param`` (queued, in flight or failed).

    No outcome when nothing was pending. An in-flight update is only forgotten: if the device
    applied it, its ack still sets the active value.
    """
    get_param(param)  # an unknown name is an InvalidParam, not "nothing pending"
    removed = [u for u in config.pending if u.param == param]
    kept = tuple(u for u in config.pending if u.param != param)
    outcomes = tuple(
        Outcome("param_dropped", param, u.value_raw, seq=u.seq, reason="deleted by an operator")
        for u in removed
    )
    return replace(config, pending=kept), outcomes


def apply_ack(
    config: DeviceConfig, seq: int, values: Iterable[tuple[int, int]], now: float
) -> tuple[DeviceConfig, tuple[Outcome, ...]]:
    """Apply a parameter ack of downlink ``seq`` carrying (param id, raw value) pairs.

    Each value becomes active, whatever was asked (the sensor may clamp). The update sent in
    ``seq`` for that parameter is acked and removed: in flight, or already timed out and queued
    again or failed (a late ack). Then, unless an update of the parameter is still in flight, a
    queued or failed update whose value is now the active value is dropped (rule 2). An ack whose
    seq matches nothing still sets the active values. Ids the model lacks are ignored.
    ``now`` is the time of the uplink that carried the ack.
    """
    del now  # the rules do not depend on time; kept so every transition takes one
    model = get_model(config.model)
    active = dict(config.active)
    pending = list(config.pending)
    outcomes: list[Outcome] = []
    for param_id, raw in values:
        param = PARAMS_BY_ID.get(param_id)
        if param is None or param.name not in model.params:
            continue
        name = param.name
        active[name] = raw
        for update in [u for u in pending if u.param == name and u.seq == seq]:
            pending.remove(update)
            requested = update.value_raw if update.value_raw != raw else None
            outcomes.append(Outcome("param_acked", name, raw, seq=seq, requested_raw=requested))
        outcomes.extend(_drop_redundant(active, pending, name, "equals the acked value"))
    new = replace(config, active=active, pending=tuple(pending))
    return new, tuple(outcomes)


def _drop_redundant(
    active: Mapping[str, int], pending: Pending, name: str, reason: str
) -> list[Outcome]:
    """Drop, in place, the queued or failed updates of ``name`` equal to its active value,
    unless an update of ``name`` is in flight."""
    if _find(pending, name, "in_flight") is not None:
        return []
    redundant = [
        u
        for u in pending
        if u.param == name and u.status != "in_flight" and u.value_raw == active.get(name)
    ]
    for update in redundant:
        pending.remove(update)
    return [Outcome("param_dropped", name, u.value_raw, reason=reason) for u in redundant]


def note_uplink(
    config: DeviceConfig, uplink_time: float, *, answered_with_seq: int | None = None
) -> tuple[DeviceConfig, tuple[Outcome, ...]]:
    """Count one uplink of the device, after any ack it carried has been applied.

    ``uplink_time`` is the uplink's network time. It counts for an in-flight update only when
    it came after the send: not the downlink request the update was sent in answer to (pass
    that downlink's seq as ``answered_with_seq``; its time is also at or before the send), nor an
    older uplink processed late. At the ``UPLINKS_BEFORE_RETRY``-th counted uplink the update
    goes back to ``queued`` with one more attempt, or becomes ``failed`` after ``MAX_ATTEMPTS``;
    it is dropped instead when a newer update of the parameter is queued (that one supersedes
    it) or its value is the active value.
    """
    pending = list(config.pending)
    outcomes: list[Outcome] = []
    for update in [u for u in pending if u.status == "in_flight"]:
        sent_at = update.sent_at if update.sent_at is not None else float("-inf")
        if uplink_time <= sent_at or update.seq == answered_with_seq:
            continue
        seen = update.uplinks_since_send + 1
        if seen < UPLINKS_BEFORE_RETRY:
            pending[pending.index(update)] = replace(update, uplinks_since_send=seen)
            continue
        outcomes.extend(_time_out(config.active, pending, update))
    return replace(config, pending=tuple(pending)), tuple(outcomes)


def _time_out(active: Mapping[str, int], pending: Pending, update: PendingUpdate) -> list[Outcome]:
    """An unanswered in-flight update, in place: dropped, queued again or failed."""
    name, index, attempts = update.param, pending.index(update), update.attempts + 1
    if _find(pending, name, "queued") is not None:
        del pending[index]
        dropped = _timed_out("param_dropped", update, attempts, "superseded by a newer update")
        return [dropped, *_drop_redundant(active, pending, name, "equals the active value")]
    if update.value_raw == active.get(name):
        del pending[index]
        return [_timed_out("param_dropped", update, attempts, "equals the active value")]
    if attempts >= MAX_ATTEMPTS:
        pending[index] = replace(update, status="failed", attempts=attempts, uplinks_since_send=0)
        return [_timed_out("param_failed", update, attempts)]
    pending[index] = replace(update, status="queued", attempts=attempts, uplinks_since_send=0)
    return [_timed_out("param_requeued", update, attempts)]


def _timed_out(
    kind: OutcomeKind, update: PendingUpdate, attempts: int, reason: str | None = None
) -> Outcome:
    return Outcome(
        kind, update.param, update.value_raw, seq=update.seq, attempts=attempts, reason=reason
    )
