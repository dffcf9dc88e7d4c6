"""A device's place: where it is now and where it was since its registration (``GET``
[readdev]), and its move to another place or to none (``PUT`` [writedev], by whoever may see
the device), so that its readings are attributed to where it was at their time."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.aggregation import MAX_TIME
from api.deps import Conn, ConnDep, ReadDev, WriteDev, device_not_found, device_or_404
from api.errors import ApiError
from api.groupings import PlaceSummary, place_or_404, place_summary
from api.openapi import error_responses
from api.routing import OrjsonRoute
from services.fleets import DeviceGone, InvalidSince, MovedMeanwhile, place_store, stays

router = APIRouter(prefix="/v1/devices", tags=["places"], route_class=OrjsonRoute)


class PlaceMove(BaseModel):
    place: Annotated[int, Field(ge=1, le=2**63 - 1)] | None = Field(
        description="the place's id; null: the device is at no place", examples=[1]
    )
    since: float | None = Field(
        default=None,
        ge=0,
        le=MAX_TIME,
        description="Unix time of the move (default now); not before the device's registration"
        " nor the start of its current stay, not in the future",
    )


class PlaceStay(BaseModel):
    place: int
    name: str
    since: float
    until: float | None


class DevicePlace(BaseModel):
    device: str
    place: PlaceSummary | None = Field(description="the place it is at now (null: none)")
    since: float | None = Field(description="since when it is there")
    history: list[PlaceStay] = Field(description="every stay since its registration, newest first")


async def _body(conn: Conn, row: dict[str, Any]) -> dict[str, Any]:
    history = await stays.history(conn, row["id"], registered=row["created"].timestamp())
    # The stays of a device are at places of its account (a move checks it).
    account = {place.id: place for place in await place_store.list_places(conn, row["account_id"])}
    current = history[0] if history and history[0].until is None else None
    return {
        "device": row["id"],
        "place": None if current is None else place_summary(account[current.place_id]),
        "since": None if current is None else current.since,
        "history": [
            {
                "place": stay.place_id,
                "name": account[stay.place_id].name,
                "since": stay.since,
                "until": stay.until,
            }
            for stay in history
            if stay.place_id in account
        ],
    }


@router.get("/{device_id}/place", response_model=DevicePlace)
async def get_device_place(device_id: str, principal: ReadDev, conn: ConnDep) -> Any:
    """Where the device is, and where it was since its registration."""
    return await _body(conn, await device_or_404(conn, device_id, principal))


@router.put("/{device_id}/place", response_model=DevicePlace, responses=error_responses(409))
async def move_device(device_id: str, body: PlaceMove, principal: WriteDev, conn: ConnDep) -> Any:
    """Move the device to one of the account's places, or to none (``"place": null``); its
    current stay ends when the next starts."""
    row = await device_or_404(conn, device_id, principal)
    if body.place is not None:
        await place_or_404(conn, body.place, principal)
    # The database's clock dated the registration: "now" is never before it.
    now = max(time.time(), row["created"].timestamp())
    try:
        await stays.move(
            conn,
            row["id"],
            body.place,
            since=now if body.since is None else body.since,
            registered=row["created"].timestamp(),
            now=now,
        )
    except InvalidSince as exc:
        raise ApiError(
            422,
            "invalid_since",
            f"Invalid since: {exc}.",
            details=[{"field": "since", "message": str(exc), "type": "value_error"}],
        ) from exc
    except DeviceGone as exc:
        raise device_not_found(device_id) from exc
    except MovedMeanwhile as exc:
        raise ApiError(409, "place_changed", "The device was moved meanwhile; retry.") from exc
    return await _body(conn, row)
