"""The query parameters of every aggregate route, so that a device's, a fleet's and a place's
have the same limits, and the body of a group's aggregate (:func:`group_aggregate`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import BaseModel

from api.deps import Conn
from services.readings import Window, aggregate_devices

#: Unix seconds accepted in a range (0 to the year 3000): larger values overflow timestamptz.
MAX_TIME = 32_503_680_000
Bucket = Annotated[int, Query(ge=60, le=366 * 86400, description="bucket width in seconds")]
From = Annotated[float | None, Query(alias="from", ge=0, le=MAX_TIME)]
To = Annotated[float | None, Query(ge=0, le=MAX_TIME)]
Fn = Literal["avg", "min", "max", "count"]
Combine = Annotated[
    Literal["avg", "min", "max"] | None,
    Query(description="combine the devices' values of each bucket; default: one series each"),
]


def metrics_of(metric: str | None) -> list[str] | None:
    """The comma-separated ``metric`` parameter as a list (None: every metric)."""
    return [m for m in metric.split(",") if m] if metric else None


class AggregateRow(BaseModel):
    time: int
    metric: str
    value: int | float


class DeviceSeries(BaseModel):
    device: str | None
    data: list[AggregateRow]


class GroupAggregate(BaseModel):
    bucket: int
    fn: str
    combine: str | None
    #: The devices aggregated: those of the group the caller may see.
    devices: list[str]
    #: One per device, in ``devices``' order; with ``combine``, one whose ``device`` is null.
    series: list[DeviceSeries]


async def group_aggregate(
    conn: Conn,
    windows: Sequence[Window],
    *,
    bucket: int,
    fn: Fn,
    combine: Literal["avg", "min", "max"] | None,
    start: float | None,
    end: float | None,
    metric: str | None,
) -> dict[str, Any]:
    """The body of ``GET .../data/aggregate`` of a group whose devices' points count within
    ``windows`` (a fleet: each device's whole range; a place: each stay)."""
    devices = sorted({device for device, _, _ in windows})
    rows = await aggregate_devices(
        conn,
        windows,
        start=start,
        end=end,
        metrics=metrics_of(metric),
        bucket_seconds=bucket,
        fn=fn,
        combine=combine,
    )
    body: dict[str, Any] = {"bucket": bucket, "fn": fn, "combine": combine, "devices": devices}
    if combine is not None:
        body["series"] = [{"device": None, "data": rows}]
        return body
    by_device: dict[str, list[dict[str, Any]]] = {device: [] for device in devices}
    for row in rows:
        device = row.pop("device")
        by_device[device].append(row)
    body["series"] = [{"device": device, "data": data} for device, data in by_device.items()]
    return body
