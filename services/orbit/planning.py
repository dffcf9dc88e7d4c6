"""What the next downlink carries, and the 24-hour budget (``orbit-protocol.md``, "Choosing what a
downlink carries", "Downlink frame"), as pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from services.orbit.frames import encode_downlink
from services.orbit.params import PARAMS, get_model
from services.orbit.state import (
    BUDGET_WINDOW_S,
    DOWNLINKS_PER_WINDOW,
    DeviceConfig,
    Downlink,
    PendingUpdate,
)

__all__ = ["downlinks_left_24h", "mark_sent", "next_seq", "plan_downlink"]

#: Groups whose members are thresholds that must stay ordered (low <= high) on the device, when
#: the group cannot travel in one downlink (``orbit-lite``): (low, high).
_ORDERED_GROUPS: dict[str, tuple[str, str]] = {"temp_alarm": ("temp_low", "temp_high")}


def next_seq(seq: int) -> int:
    """The seq after ``seq``: 1, 2, ..., 255, 0, 1, ... (the first downlink, after 0, is 1)."""
    return (seq + 1) % 256


def _recent(config: DeviceConfig, now: float) -> tuple[float, ...]:
    return tuple(t for t in config.downlinks if now - t < BUDGET_WINDOW_S)


def downlinks_left_24h(config: DeviceConfig, now: float) -> int:
    """How many downlinks may still be sent at ``now``: 4 minus those sent in the last 24 hours
    (a downlink sent at ``t`` counts until ``t + 86400`` exclusive)."""
    return max(0, DOWNLINKS_PER_WINDOW - len(_recent(config, now)))


def plan_downlink(config: DeviceConfig, now: float) -> Downlink | None:
    """The downlink to send in answer to a downlink request at ``now``, or None.

    None when the budget is spent or no update is ``queued`` (a queued update waits while an
    update of the same parameter is in flight: it is sent after the ack, rule 4). Otherwise at
    most the model's limit of updates: by priority, then keeping a group together, then oldest
    first, then by parameter id, in the frame in that order. A group that does not fit in the
    slots left waits for the next downlink (it goes first then) and later updates fill the slots;
    a group larger than the model's limit (``orbit-lite``) travels one member at a time.
    """
    if downlinks_left_24h(config, now) == 0:
        return None
    in_flight = {u.param for u in config.pending if u.status == "in_flight"}
    ready = [u for u in config.pending if u.status == "queued" and u.param not in in_flight]
    if not ready:
        return None
    chosen = _choose(ready, get_model(config.model).params_per_downlink, config.active)
    seq = next_seq(config.seq)
    updates = tuple((u.param, u.value_raw) for u in chosen)
    return Downlink(seq=seq, updates=updates, frame=encode_downlink(seq, updates))


def _age_key(update: PendingUpdate) -> tuple[float, int]:
    return update.queued_at, PARAMS[update.param].id


def _choose(
    ready: Sequence[PendingUpdate], limit: int, active: Mapping[str, int]
) -> list[PendingUpdate]:
    units: dict[str, list[PendingUpdate]] = {}
    for update in sorted(ready, key=_age_key):
        group = PARAMS[update.param].group
        units.setdefault(group or f"param:{update.param}", []).append(update)
    ranked = sorted(
        units.items(), key=lambda unit: (PARAMS[unit[1][0].param].priority, _age_key(unit[1][0]))
    )
    chosen: list[PendingUpdate] = []
    for group, members in ranked:
        free = limit - len(chosen)
        if len(members) <= free:
            chosen.extend(members)
        elif len(members) > limit:  # can never travel together: one at a time, safely ordered
            chosen.extend(_split_order(group, members, active)[:free])
        if len(chosen) == limit:
            break
    return chosen


def _split_order(
    group: str, members: list[PendingUpdate], active: Mapping[str, int]
) -> list[PendingUpdate]:
    """``members`` (oldest first) in the order to send them one by one: oldest first, unless
    that would leave the device with low > high in between and the other order would not."""
    if group not in _ORDERED_GROUPS or len(members) != 2:
        return members
    low_name, high_name = _ORDERED_GROUPS[group]
    first, second = members

    def consistent_after(sent: PendingUpdate) -> bool:
        values = {**active, sent.param: sent.value_raw}
        low, high = values.get(low_name), values.get(high_name)
        return low is None or high is None or low <= high

    if not consistent_after(first) and consistent_after(second):
        return [second, first]
    return members


def mark_sent(config: DeviceConfig, downlink: Downlink, now: float) -> DeviceConfig:
    """The config once ``downlink`` (from :func:`plan_downlink` on this config) was sent at
    ``now``: its updates ``in_flight`` with its seq, its seq the last, its time in the budget."""
    if downlink.seq != next_seq(config.seq):
        raise ValueError(f"downlink seq {downlink.seq} does not follow {config.seq}")
    chosen = dict(downlink.updates)
    pending = []
    for update in config.pending:
        if update.status == "queued" and chosen.get(update.param) == update.value_raw:
            del chosen[update.param]
            update = replace(
                update, status="in_flight", seq=downlink.seq, sent_at=now, uplinks_since_send=0
            )
        pending.append(update)
    if chosen:
        raise ValueError(f"downlink carries updates that are not queued: {sorted(chosen)}")
    return replace(
        config,
        pending=tuple(pending),
        seq=downlink.seq,
        downlinks=(*_recent(config, now), now),
    )
