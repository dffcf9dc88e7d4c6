"""Sensor data: points, aggregates, events, state."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.aggregation import Bucket, Fn, From, To, metrics_of
from api.deps import ConnDep, ReadData, ReadDev, StorableText, device_or_404
from api.errors import ApiError
from api.routing import OrjsonRoute
from services.readings import (
    InvalidCursor,
    aggregate_points,
    latest_state,
    query_events,
    query_points,
)

router = APIRouter(prefix="/v1/devices", tags=["data"], route_class=OrjsonRoute)

#: Unix seconds accepted in a range (0 to the year 3000): larger values overflow timestamptz.
Timestamp = Annotated[float | None, Query(ge=0, le=32_503_680_000)]


class PointOut(BaseModel):
    device: str
    time: int | float
    metric: str
    value: float
    unit: str | None


class DataPage(BaseModel):
    data: list[PointOut]
    next: str | None


@router.get("/{device_id}/data", response_model=DataPage)
async def get_data(
    device_id: str,
    principal: ReadData,
    conn: ConnDep,
    from_: Annotated[float | None, Query(alias="from", ge=0, le=32_503_680_000)] = None,
    to: Timestamp = None,
    metric: StorableText | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    cursor: str | None = None,
    order: Literal["desc", "asc"] = "desc",
) -> Any:
    """Data points of a device, newest first by default, with keyset cursor pagination."""
    row = await device_or_404(conn, device_id, principal)
    try:
        points, nxt = await query_points(
            conn,
            row["id"],
            start=from_,
            end=to,
            metrics=metrics_of(metric),
            limit=limit,
            cursor=cursor,
            order=order,
        )
    except InvalidCursor as exc:
        raise ApiError(400, "invalid_cursor", "The cursor is not valid.") from exc
    return {"data": [p.to_dict() for p in points], "next": nxt}


@router.get("/{device_id}/data/aggregate")
async def get_aggregate(
    device_id: str,
    principal: ReadData,
    conn: ConnDep,
    bucket: Bucket,
    fn: Fn = "avg",
    from_: From = None,
    to: To = None,
    metric: StorableText | None = None,
) -> Any:
    """Aggregates per time bucket (seconds), from the continuous aggregates where possible."""
    row = await device_or_404(conn, device_id, principal)
    rows = await aggregate_points(
        conn,
        row["id"],
        start=from_,
        end=to,
        metrics=metrics_of(metric),
        bucket_seconds=bucket,
        fn=fn,
    )
    return {"data": rows, "bucket": bucket, "fn": fn}


@router.get("/{device_id}/events")
async def get_events(
    device_id: str,
    principal: ReadDev,
    conn: ConnDep,
    from_: Annotated[float | None, Query(alias="from", ge=0, le=32_503_680_000)] = None,
    to: Timestamp = None,
    type: StorableText | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """The device's events (decode errors, acks, downlinks, parameter changes), newest first."""
    row = await device_or_404(conn, device_id, principal)
    types = [t for t in type.split(",") if t] if type else None
    return {
        "events": await query_events(conn, row["id"], start=from_, end=to, types=types, limit=limit)
    }


_STATE_SECTIONS = {
    "relay": "Relays",
    "relay_c": "Relay_Cs",
    "gpio": "GPIOs",
    "gpio_c": "GPIO_Cs",
    "adc": "ADCs",
    "adc_c": "ADC_Cs",
}


@router.get("/{device_id}/state")
async def get_state(device_id: str, principal: ReadData, conn: ConnDep, type: str = "all") -> Any:
    """The latest state a relay controller reported; ``type`` picks one section."""
    row = await device_or_404(conn, device_id, principal)
    if type != "all" and type not in _STATE_SECTIONS:
        raise ApiError(
            400,
            "invalid_state_type",
            "type must be one of all, " + ", ".join(_STATE_SECTIONS) + ".",
        )
    latest = await latest_state(conn, row["id"])
    if latest is None:
        raise ApiError(404, "state_not_found", "This device has not reported a state yet.")
    _, state = latest
    if type == "all":
        return state
    return state.get(_STATE_SECTIONS[type], [])
