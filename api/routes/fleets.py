"""Fleets: named groups of the account's devices (a device may be in several). Every user of
the account sees its fleets, and in them only the devices it may see [readdev]; the integrator
or standalone user creates, renames and deletes them, and whoever sees a device puts it in a
fleet or takes it out [writedev]. A fleet's aggregate is its devices' [readdata]."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from api.aggregation import Bucket, Combine, Fn, From, GroupAggregate, To, group_aggregate
from api.deps import (
    Conn,
    ConnDep,
    ReadData,
    ReadDev,
    RowId,
    StorableText,
    WriteDev,
    device_not_found,
    device_or_404,
    must_manage_account,
)
from api.errors import ApiError
from api.groupings import fleet_not_found, fleet_or_404
from api.openapi import error_responses
from api.routing import OrjsonRoute
from services.accounts import Principal
from services.fleets import (
    DeviceGone,
    Fleet,
    FleetExists,
    fleet_store,
    only_visible,
    visible_devices,
)

router = APIRouter(prefix="/v1/fleets", tags=["fleets"], route_class=OrjsonRoute)

FleetName = Annotated[StorableText, Field(min_length=1, max_length=200, examples=["Depot 3"])]


class FleetIn(BaseModel):
    name: FleetName


class FleetOut(BaseModel):
    id: int
    name: str
    created: int
    devices: list[str] = Field(description="the fleet's devices the caller may see")


async def _bodies(conn: Conn, principal: Principal, fleets: list[Fleet]) -> list[dict[str, Any]]:
    members = await fleet_store.members(conn, [fleet.id for fleet in fleets])
    visible = only_visible(members, await visible_devices(conn, principal)) if fleets else {}
    return [
        {
            "id": fleet.id,
            "name": fleet.name,
            "created": fleet.created,
            "devices": [row["id"] for row in visible[fleet.id]],
        }
        for fleet in fleets
    ]


async def _body(conn: Conn, principal: Principal, fleet: Fleet) -> dict[str, Any]:
    return (await _bodies(conn, principal, [fleet]))[0]


def _exists(exc: FleetExists) -> ApiError:
    return ApiError(409, "fleet_exists", f"Cannot name the fleet so: {exc}.")


@router.get("", response_model=list[FleetOut])
async def list_fleets(principal: ReadDev, conn: ConnDep) -> Any:
    """The account's fleets, by name, each with the devices the caller may see."""
    return await _bodies(conn, principal, await fleet_store.list_fleets(conn, principal.account_id))


@router.post("", status_code=201, response_model=FleetOut, responses=error_responses(403, 409))
async def create_fleet(body: FleetIn, principal: WriteDev, conn: ConnDep) -> Any:
    """Create an empty fleet (the integrator or standalone user only)."""
    must_manage_account(principal, "fleets")
    try:
        fleet = await fleet_store.create_fleet(
            conn, account_id=principal.account_id, name=body.name
        )
    except FleetExists as exc:
        raise _exists(exc) from exc
    return await _body(conn, principal, fleet)


@router.get("/{fleet_id}", response_model=FleetOut)
async def get_fleet(fleet_id: RowId, principal: ReadDev, conn: ConnDep) -> Any:
    """One fleet, with the devices the caller may see."""
    return await _body(conn, principal, await fleet_or_404(conn, fleet_id, principal))


@router.patch("/{fleet_id}", response_model=FleetOut, responses=error_responses(403, 409))
async def update_fleet(fleet_id: RowId, body: FleetIn, principal: WriteDev, conn: ConnDep) -> Any:
    """Rename a fleet (the integrator or standalone user only)."""
    await fleet_or_404(conn, fleet_id, principal)
    must_manage_account(principal, "fleets")
    try:
        renamed = await fleet_store.rename_fleet(conn, fleet_id, body.name)
    except FleetExists as exc:
        raise _exists(exc) from exc
    if renamed is None:  # deleted meanwhile
        raise fleet_not_found(fleet_id)
    return await _body(conn, principal, renamed)


@router.delete(
    "/{fleet_id}", status_code=204, response_class=Response, responses=error_responses(403)
)
async def delete_fleet(fleet_id: RowId, principal: WriteDev, conn: ConnDep) -> Response:
    """Delete a fleet (its devices stay; the integrator or standalone user only)."""
    await fleet_or_404(conn, fleet_id, principal)
    must_manage_account(principal, "fleets")
    if not await fleet_store.delete_fleet(conn, fleet_id):
        raise fleet_not_found(fleet_id)
    return Response(status_code=204)


@router.put("/{fleet_id}/devices/{device_id}", response_model=FleetOut)
async def add_device(fleet_id: RowId, device_id: str, principal: WriteDev, conn: ConnDep) -> Any:
    """Put a device the caller may see in the fleet (already there: nothing changes)."""
    fleet = await fleet_or_404(conn, fleet_id, principal)
    row = await device_or_404(conn, device_id, principal)
    try:
        await fleet_store.add_device(conn, fleet.id, row["id"])
    except DeviceGone as exc:
        raise device_not_found(device_id) from exc
    return await _body(conn, principal, fleet)


@router.delete("/{fleet_id}/devices/{device_id}", status_code=204, response_class=Response)
async def remove_device(
    fleet_id: RowId, device_id: str, principal: WriteDev, conn: ConnDep
) -> Response:
    """Take a device out of the fleet (404 ``not_in_fleet`` when it is not in it)."""
    fleet = await fleet_or_404(conn, fleet_id, principal)
    row = await device_or_404(conn, device_id, principal)
    if not await fleet_store.remove_device(conn, fleet.id, row["id"]):
        raise ApiError(404, "not_in_fleet", f"{row['id']!r} is not in fleet {fleet.id}.")
    return Response(status_code=204)


@router.get("/{fleet_id}/data/aggregate", response_model=GroupAggregate)
async def get_aggregate(
    fleet_id: RowId,
    principal: ReadData,
    conn: ConnDep,
    bucket: Bucket,
    fn: Fn = "avg",
    combine: Combine = None,
    from_: From = None,
    to: To = None,
    metric: StorableText | None = None,
) -> Any:
    """Aggregates per time bucket of the fleet's devices the caller may see: one series per
    device, or (``combine``) one of their values combined; the limits of a device's."""
    fleet = await fleet_or_404(conn, fleet_id, principal)
    members = await fleet_store.members(conn, [fleet.id])
    rows = only_visible(members, await visible_devices(conn, principal))[fleet.id]
    return await group_aggregate(
        conn,
        [(row["id"], None, None) for row in rows],
        bucket=bucket,
        fn=fn,
        combine=combine,
        start=from_,
        end=to,
        metric=metric,
    )
