"""Devices: register, list, export, read, update, activate/deactivate, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from api.deps import (
    ConnDep,
    ReadDev,
    StorableText,
    WriteDev,
    device_not_found,
    device_or_404,
)
from api.errors import ApiError
from api.groupings import fleet_or_404, place_or_404
from api.openapi import error_responses
from api.routing import OrjsonRoute
from services.accounts import Principal
from services.codecs import model_store
from services.devices import access, export, ids
from services.devices import store as devices_store
from services.fleets import fleet_store, stays

router = APIRouter(prefix="/v1/devices", tags=["devices"], route_class=OrjsonRoute)


class DeviceIn(BaseModel):
    id: str = Field(min_length=1, max_length=64)
    model: str = Field(
        pattern=r"^[a-z0-9-]{2,64}$",
        description="a built-in model (orbit-t, orbit-th, orbit-lite, lorawan-lpp, json, "
        "relay-controller) or one of the account's own (GET /v1/models)",
    )
    name: StorableText = Field(default="", max_length=200)
    owner: str | None = Field(
        default=None, max_length=64, description="username; default: the caller"
    )


class DevicePatch(BaseModel):
    name: StorableText | None = Field(default=None, max_length=200)
    active: bool | None = None
    owner: str | None = Field(
        default=None, max_length=64, description="an integrator moves a device between its users"
    )


class DeviceOut(BaseModel):
    id: str
    name: str
    model: str
    network: str
    owner: str
    active: bool
    created: int
    last_seen: float | None


async def _owner_id(conn: ConnDep, principal: Principal, owner: str | None) -> int:
    try:
        return await access.resolve_owner(conn, principal, owner)
    except access.InvalidOwner as exc:
        raise ApiError(422, "invalid_owner", f"Unknown owner {owner!r}.", details=[]) from exc


@router.post("", status_code=201, response_model=DeviceOut, responses=error_responses(409))
async def create_device(body: DeviceIn, principal: WriteDev, conn: ConnDep) -> Any:
    """Register a device (owner defaults to the caller)."""
    owner_id = await _owner_id(conn, principal, body.owner)
    network = None
    if body.model not in ids.MODEL_NETWORKS:  # one of the account's own models, or none
        own = await model_store.get_model(conn, principal.account_id, body.model)
        if own is None:
            raise ApiError(
                422,
                "invalid_device",
                f"unknown model {body.model!r}; one of {', '.join(ids.MODEL_NETWORKS)}"
                " or of the account's own models",
                details=[],
            )
        network = own.network
    try:
        row = await devices_store.create_device(
            conn,
            device_id=body.id,
            model=body.model,
            name=body.name,
            owner_id=owner_id,
            network=network,
        )
    except ids.InvalidDevice as exc:
        raise ApiError(422, "invalid_device", str(exc), details=[]) from exc
    if row is None:
        raise ApiError(409, "device_exists", f"Device {body.id!r} is already registered.")
    return export.device_body(row)


@router.get("", response_model=list[DeviceOut], responses=error_responses(404))
async def list_devices(
    principal: ReadDev,
    conn: ConnDep,
    fleet: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="only this fleet's")] = None,
    place: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="only those there now")
    ] = None,
) -> Any:
    """Every device the caller may see (in a fleet, at a place: the filters combine)."""
    rows = await devices_store.list_devices(conn, principal)
    if fleet is not None:
        await fleet_or_404(conn, fleet, principal)
        kept = set((await fleet_store.members(conn, [fleet]))[fleet])
        rows = [row for row in rows if row["id"] in kept]
    if place is not None:
        await place_or_404(conn, place, principal)
        there = set((await stays.present(conn, [place]))[place])
        rows = [row for row in rows if row["id"] in there]
    return [export.device_body(row) for row in rows]


# Declared before "/{device_id}", which would otherwise take "export.csv" for an id.
@router.get(
    "/export.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def export_devices(principal: ReadDev, conn: ConnDep) -> Response:
    """Every visible device as CSV, one row each."""
    bodies = [export.device_body(row) for row in await devices_store.list_devices(conn, principal)]
    return Response(
        export.devices_csv(bodies),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="devices.csv"'},
    )


@router.get("/{device_id}", response_model=DeviceOut)
async def get_device(device_id: str, principal: ReadDev, conn: ConnDep) -> Any:
    """One device."""
    return export.device_body(await device_or_404(conn, device_id, principal))


@router.patch("/{device_id}", response_model=DeviceOut)
async def update_device(
    device_id: str, body: DevicePatch, principal: WriteDev, conn: ConnDep
) -> Any:
    """Change a device's name, active flag or owner (fields left out are kept)."""
    row = await device_or_404(conn, device_id, principal)
    owner_id = None if body.owner is None else await _owner_id(conn, principal, body.owner)
    updated = await devices_store.update_device(
        conn, row["id"], name=body.name, active=body.active, owner_id=owner_id
    )
    if updated is None:  # deleted meanwhile
        raise device_not_found(device_id)
    return export.device_body(updated)


async def _set_active(conn: ConnDep, device_id: str, principal: Principal, active: bool) -> Any:
    row = await device_or_404(conn, device_id, principal)
    updated = await devices_store.update_device(conn, row["id"], active=active)
    if updated is None:
        raise device_not_found(device_id)
    return export.device_body(updated)


@router.post("/{device_id}/activate", response_model=DeviceOut)
async def activate_device(device_id: str, principal: WriteDev, conn: ConnDep) -> Any:
    """Activate a device: its uplinks are processed again."""
    return await _set_active(conn, device_id, principal, True)


@router.post("/{device_id}/deactivate", response_model=DeviceOut)
async def deactivate_device(device_id: str, principal: WriteDev, conn: ConnDep) -> Any:
    """Deactivate a device: its uplinks are no longer processed."""
    return await _set_active(conn, device_id, principal, False)


@router.delete(
    "/{device_id}", status_code=204, response_class=Response, responses=error_responses(409)
)
async def delete_device(device_id: str, principal: WriteDev, conn: ConnDep) -> Response:
    """Delete a device (its stored data stays until retention removes it)."""
    row = await device_or_404(conn, device_id, principal)
    try:
        await devices_store.delete_device(conn, row["id"])
    except devices_store.DeviceInUse as exc:
        raise ApiError(409, "device_in_use", f"Cannot delete {device_id!r}: {exc}.") from exc
    return Response(status_code=204)
