"""Places: where the account's devices are installed, with each device's history of stays.
Every user of the account sees the places, and in them only the devices it may see [readdev];
the integrator or standalone user creates, changes and deletes them [writedev]. A place's
aggregate counts each device's points only while it was there [readdata]. A device's own place
(``/v1/devices/{id}/place``) is :mod:`api.routes.device_place`'s."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field, field_validator

from api.aggregation import Bucket, Combine, Fn, From, GroupAggregate, To, group_aggregate
from api.deps import (
    ConnDep,
    ReadData,
    ReadDev,
    RowId,
    StorableText,
    WriteDev,
    must_manage_account,
)
from api.errors import ApiError
from api.groupings import (
    Location,
    PlaceSummary,
    place_bodies,
    place_body,
    place_not_found,
    place_or_404,
)
from api.openapi import error_responses
from api.routing import OrjsonRoute
from services.fleets import (
    PLACE_TYPES,
    PlaceInUse,
    Stay,
    place_store,
    stays,
    visible_devices,
    visible_stays,
)

router = APIRouter(prefix="/v1/places", tags=["places"], route_class=OrjsonRoute)

PlaceName = Annotated[StorableText, Field(min_length=1, max_length=200, examples=["Store 12"])]
PlaceType = Annotated[
    StorableText,
    Field(
        min_length=1,
        max_length=64,
        description="free text; documented types: " + ", ".join(PLACE_TYPES),
        examples=["cold room"],
    ),
]
Address = Annotated[StorableText, Field(min_length=1, max_length=500)]


class PlaceIn(BaseModel):
    name: PlaceName
    type: PlaceType
    location: Location | None = None
    address: Address | None = None


class PlacePatch(BaseModel):
    """Fields left out are kept; null clears ``location`` or ``address``."""

    name: PlaceName | None = None
    type: PlaceType | None = None
    location: Location | None = None
    address: Address | None = None

    @field_validator("name", "type")
    @classmethod
    def _not_null(cls, value: str | None) -> str:
        if value is None:
            raise ValueError("may not be null")
        return value


class PlaceOut(PlaceSummary):
    devices: list[str] = Field(description="the devices there now that the caller may see")


class StayOut(BaseModel):
    device: str
    since: float
    until: float | None = Field(description="null: the device is still there")


class PlaceHistory(BaseModel):
    place: int
    stays: list[StayOut] = Field(description="newest first")


def _stay_body(stay: Stay) -> dict[str, Any]:
    return {"device": stay.device, "since": stay.since, "until": stay.until}


@router.get("", response_model=list[PlaceOut])
async def list_places(principal: ReadDev, conn: ConnDep) -> Any:
    """The account's places, by name, each with the devices there that the caller may see."""
    return await place_bodies(
        conn, principal, await place_store.list_places(conn, principal.account_id)
    )


@router.post("", status_code=201, response_model=PlaceOut, responses=error_responses(403))
async def create_place(body: PlaceIn, principal: WriteDev, conn: ConnDep) -> Any:
    """Create a place (the integrator or standalone user only)."""
    must_manage_account(principal, "places")
    place = await place_store.create_place(
        conn,
        account_id=principal.account_id,
        name=body.name,
        type=body.type,
        latitude=None if body.location is None else body.location.latitude,
        longitude=None if body.location is None else body.location.longitude,
        address=body.address,
    )
    return await place_body(conn, principal, place)


@router.get("/{place_id}", response_model=PlaceOut)
async def get_place(place_id: RowId, principal: ReadDev, conn: ConnDep) -> Any:
    """One place, with the devices there that the caller may see."""
    return await place_body(conn, principal, await place_or_404(conn, place_id, principal))


@router.patch("/{place_id}", response_model=PlaceOut, responses=error_responses(403))
async def update_place(
    place_id: RowId, body: PlacePatch, principal: WriteDev, conn: ConnDep
) -> Any:
    """Change a place (the integrator or standalone user only)."""
    place = await place_or_404(conn, place_id, principal)
    must_manage_account(principal, "places")
    changes: dict[str, Any] = {"name": body.name or place.name, "type": body.type or place.type}
    if "location" in body.model_fields_set:
        changes["latitude"] = body.location.latitude if body.location else None
        changes["longitude"] = body.location.longitude if body.location else None
    if "address" in body.model_fields_set:
        changes["address"] = body.address
    changed = dataclasses.replace(place, **changes)
    updated = await place_store.update_place(conn, changed)
    if updated is None:  # deleted meanwhile
        raise place_not_found(place_id)
    return await place_body(conn, principal, updated)


@router.delete(
    "/{place_id}", status_code=204, response_class=Response, responses=error_responses(403, 409)
)
async def delete_place(place_id: RowId, principal: WriteDev, conn: ConnDep) -> Response:
    """Delete a place with its history (409 ``place_in_use`` while devices are there)."""
    await place_or_404(conn, place_id, principal)
    must_manage_account(principal, "places")
    try:
        deleted = await place_store.delete_place(conn, place_id)
    except PlaceInUse as exc:
        raise ApiError(409, "place_in_use", f"Cannot delete place {place_id}: {exc}.") from exc
    if not deleted:
        raise place_not_found(place_id)
    return Response(status_code=204)


@router.get("/{place_id}/history", response_model=PlaceHistory)
async def get_history(place_id: RowId, principal: ReadDev, conn: ConnDep) -> Any:
    """Which devices were at the place, and when (newest first): for the account's integrator
    every stay, deleted devices' included; for its user, the stays of the devices it sees."""
    place = await place_or_404(conn, place_id, principal)
    visible = await visible_devices(conn, principal)
    shown = visible_stays(await stays.stays_at(conn, place.id), principal, visible)
    return {"place": place.id, "stays": [_stay_body(stay) for stay in shown]}


@router.get("/{place_id}/data/aggregate", response_model=GroupAggregate)
async def get_aggregate(
    place_id: RowId,
    principal: ReadData,
    conn: ConnDep,
    bucket: Bucket,
    fn: Fn = "avg",
    combine: Combine = None,
    from_: From = None,
    to: To = None,
    metric: StorableText | None = None,
) -> Any:
    """Aggregates per time bucket of the points taken at the place: each device the caller may
    see counts only while it was there (one series per device, or ``combine``d); the limits of
    a device's aggregate."""
    place = await place_or_404(conn, place_id, principal)
    visible = await visible_devices(conn, principal)
    windows = []
    for stay in await stays.stays_at(conn, place.id):
        if stay.device not in visible:
            continue
        # Never before the device's registration: an id registered again is another device.
        since = max(stay.since, visible[stay.device]["created"].timestamp())
        if stay.until is None or since < stay.until:
            windows.append((stay.device, since, stay.until))
    return await group_aggregate(
        conn,
        windows,
        bucket=bucket,
        fn=fn,
        combine=combine,
        start=from_,
        end=to,
        metric=metric,
    )
