"""The body of ``GET /v1/orbit/dev/{id}`` (``api-contract.md``), from a device's config."""

from __future__ import annotations

from typing import Any

from services.orbit.params import PARAMS, from_raw, params_of
from services.orbit.planning import downlinks_left_24h
from services.orbit.state import DeviceConfig, PendingUpdate

__all__ = ["json_number", "render_view"]

_STATUS_ORDER = {"in_flight": 0, "queued": 1, "failed": 2}


def json_number(value: float) -> int | float:
    """``80`` rather than ``80.0`` for whole values; the contract's examples are written so."""
    return int(value) if float(value).is_integer() else value


def _pending_item(update: PendingUpdate) -> dict[str, Any]:
    return {
        "param": update.param,
        "value": json_number(from_raw(update.param, update.value_raw)),
        "status": update.status,
        "queued": json_number(update.queued_at),
        "attempts": update.attempts,
        "seq": update.seq,
    }


def render_view(device: str, config: DeviceConfig, now: float) -> dict[str, Any]:
    """``{"device", "model", "active": {name: natural}, "pending": [...], "downlinks_left_24h"}``.

    ``active`` lists the model's parameters by id; ``pending`` is ordered by parameter id, an
    in-flight update before its queued successor.
    """
    active = {
        p.name: json_number(from_raw(p.name, config.active[p.name]))
        for p in params_of(config.model)
        if p.name in config.active
    }
    pending = sorted(config.pending, key=lambda u: (PARAMS[u.param].id, _STATUS_ORDER[u.status]))
    return {
        "device": device,
        "model": config.model,
        "active": active,
        "pending": [_pending_item(u) for u in pending],
        "downlinks_left_24h": downlinks_left_24h(config, now),
    }
