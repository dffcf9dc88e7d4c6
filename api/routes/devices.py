"""Devices: register, list, read, update, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from api.deps import ConnDep, ContextDep, scoped
from api.errors import ApiError
from services import devices as registry

router = APIRouter(prefix="/v1/devices", tags=["devices"])

ReadDev = scoped("readdev")
WriteDev = scoped("writedev")


class DeviceIn(BaseModel):
    id: str = Field(min_length=1, max_length=64)
    model: str
    name: str = Field(default="", max_length=200)
    owner: str | None = Field(default=None, description="username; default: the caller")


class DeviceOut(BaseModel):
    id: str
    name: str
    model: str
    network: str
    owner: str
    active: bool
    created: int
    last_seen: float | None


async def resolve_owner(conn: ConnDep, principal: Any, owner: str | None) -> int:
    """The owner's user id: the caller, or (for an integrator) one of its users."""
    if owner is None or owner == principal.username:
        return int(principal.user_id)
    cur = await conn.execute(
        "SELECT id FROM users WHERE username = %s AND (id = %s OR parent_id = %s)",
        (owner, principal.account_id, principal.account_id),
    )
    row = await cur.fetchone()
    if row is None or not principal.is_integrator:
        raise ApiError(422, "invalid_owner", f"Unknown owner {owner!r}.")
    return int(row["id"])


@router.post("", status_code=201, response_model=DeviceOut)
async def create_device(body: DeviceIn, principal: WriteDev, conn: ConnDep, ctx: ContextDep) -> Any:
    """Register a device (owner defaults to the caller)."""
    owner_id = await resolve_owner(conn, principal, body.owner)
    try:
        row = await registry.create_device(
            conn, device_id=body.id, model=body.model, name=body.name, owner_id=owner_id
        )
    except registry.InvalidDevice as exc:
        raise ApiError(422, "invalid_device", str(exc)) from exc
    if row is None:
        raise ApiError(409, "device_exists", f"Device {body.id!r} is already registered.")
    return registry.device_body(row)


@router.get("", response_model=list[DeviceOut])
async def list_devices(principal: ReadDev, conn: ConnDep) -> Any:
    """Every device the caller may see."""
    return [registry.device_body(row) for row in await registry.list_devices(conn, principal)]


@router.get("/{device_id}", response_model=DeviceOut)
async def get_device(device_id: str, principal: ReadDev, conn: ConnDep) -> Any:
    """One device."""
    row = await registry.visible_device(conn, device_id, principal)
    if row is None:
        raise ApiError(404, "device_not_found", f"No device {device_id!r}.")
    return registry.device_body(row)


@router.delete("/{device_id}", status_code=204)
async def delete_device(device_id: str, principal: WriteDev, conn: ConnDep) -> Response:
    """Delete a device (its stored data stays until retention removes it)."""
    row = await registry.visible_device(conn, device_id, principal)
    if row is None:
        raise ApiError(404, "device_not_found", f"No device {device_id!r}.")
    await conn.execute("DELETE FROM devices WHERE id = %s", (row["id"],))
    return Response(status_code=204)
