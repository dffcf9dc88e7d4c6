"""Orbit device management: read, queue and delete parameter updates.

Changes go through :mod:`services.orbit.changes` (PostgreSQL, their device events in the
outbox); the API's outbox relay publishes them (woken at once by each change). The Sigfox
downlink answer is a callback: :mod:`ingest.http.sigfox`.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from api.deps import (
    ConnDep,
    ContextDep,
    ReadOrbit,
    WriteOrbit,
    device_not_found,
    device_or_404,
)
from api.errors import ApiError
from api.routing import OrjsonRoute
from services.accounts import Principal
from services.orbit import MODELS, InvalidParam, UnknownDevice, changes, orbit_view, to_raw

router = APIRouter(prefix="/v1/orbit", tags=["orbit"], route_class=OrjsonRoute)


class PendingOut(BaseModel):
    param: str
    value: int | float = Field(description="natural units (°C, %RH, minutes...)")
    status: Literal["queued", "in_flight", "failed"]
    queued: int | float = Field(description="when it was registered (Unix seconds)")
    attempts: int = Field(description="sends that went unanswered")
    seq: int | None = Field(description="the downlink it was last sent in")


class OrbitView(BaseModel):
    device: str
    model: str
    active: dict[str, int | float] = Field(description="{name: value} as last acked")
    pending: list[PendingOut]
    downlinks_left_24h: int = Field(ge=0, le=4)


class OrbitUpdated(OrbitView):
    outcomes: dict[str, str] = Field(
        description="{name: what the registration did}: queued, replaced, dropped (the queued"
        " update is gone: the value is the active one), unchanged (the value is the active one"
        " and nothing was pending: nothing is queued)",
        examples=[{"sample_interval": "queued", "led": "unchanged"}],
    )


ParamName = Annotated[str, Field(min_length=1, max_length=64)]


def _number(value: Any) -> Any:
    # Strictly a JSON number, kept as given (30 stays an int: messages echo it as sent).
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    return value


ParamValue = Annotated[int | float, BeforeValidator(_number)]


class OrbitUpdates(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: dict[ParamName, ParamValue] = Field(
        min_length=1,
        max_length=16,
        description='{name: value} in natural units, e.g. {"sample_interval": 30, "led": 1}',
    )


def _now() -> float:
    return time.time()


async def _orbit_device(conn: ConnDep, device_id: str, principal: Principal) -> dict[str, Any]:
    row = await device_or_404(conn, device_id, principal)
    if row["model"] not in MODELS:
        raise ApiError(404, "not_orbit_device", f"Device {row['id']!r} is not an Orbit device.")
    return row


def _refusals(model: str, params: dict[str, float]) -> list[dict[str, str]]:
    """One 422 detail per refused parameter (the store only says *that* some were refused)."""
    details = []
    for name, value in params.items():
        try:
            to_raw(model, name, value)
        except InvalidParam as exc:
            details.append(
                {"field": f"params.{name}", "message": exc.reason, "type": "invalid_param"}
            )
    return details


@router.get("/dev/{device_id}", response_model=OrbitView)
async def get_orbit_device(device_id: str, principal: ReadOrbit, conn: ConnDep) -> Any:
    """The device's active parameter values, its pending updates and its downlink budget."""
    row = await _orbit_device(conn, device_id, principal)
    try:
        return await orbit_view(conn, row["id"], _now())
    except UnknownDevice as exc:  # deleted meanwhile
        raise device_not_found(device_id) from exc


@router.post(
    "/dev/{device_id}",
    status_code=202,
    response_model=OrbitUpdated,
    responses={202: {"description": "registered; sent with the device's next downlinks"}},
)
async def queue_orbit_updates(
    device_id: str, body: OrbitUpdates, principal: WriteOrbit, conn: ConnDep, ctx: ContextDep
) -> Any:
    """Queue parameter updates (all or none); the device gets them when it next asks."""
    row = await _orbit_device(conn, device_id, principal)
    now = _now()
    try:
        outcomes = await changes.register(conn, row["id"], body.params, now)
    except InvalidParam as exc:
        details = _refusals(row["model"], body.params) or [
            {"field": "params", "message": reason, "type": "invalid_param"}
            for reason in exc.details
        ]
        raise ApiError(
            422, "invalid_param", f"Nothing was queued: {exc.reason}.", details=details
        ) from exc
    except UnknownDevice as exc:
        raise device_not_found(device_id) from exc
    ctx.wake_outbox_relay()
    view = await orbit_view(conn, row["id"], now)
    # Rule 1 "nothing is queued; the answer says so": each parameter's outcome.
    view["outcomes"] = {o.param: o.kind.removeprefix("param_") for o in outcomes}
    return view


@router.delete(
    "/dev/{device_id}/pending/{param}",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "every pending update of the parameter is deleted"}},
)
async def delete_orbit_pending(
    device_id: str, param: str, principal: WriteOrbit, conn: ConnDep, ctx: ContextDep
) -> Response:
    """Delete the pending updates (queued, in flight or failed) of one parameter."""
    row = await _orbit_device(conn, device_id, principal)
    try:
        deleted = await changes.delete_pending(conn, row["id"], param, _now())
    except InvalidParam as exc:
        raise ApiError(
            422,
            "invalid_param",
            f"Invalid parameter: {exc.reason}.",
            details=[{"field": "param", "message": exc.reason, "type": "invalid_param"}],
        ) from exc
    except UnknownDevice as exc:
        raise device_not_found(device_id) from exc
    if not deleted:
        raise ApiError(404, "nothing_pending", f"No update of {param!r} is pending.")
    ctx.wake_outbox_relay()
    return Response(status_code=204)
