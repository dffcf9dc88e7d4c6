"""Fleets and places as the routes share them: the 404 of a fleet or place that does not exist
or is another account's (exactly alike), and a place's body (with the devices there that the
caller may see) and coordinates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from api.deps import Conn
from api.errors import ApiError
from services.accounts import Principal
from services.fleets import (
    Fleet,
    Place,
    fleet_store,
    only_visible,
    place_store,
    stays,
    visible_devices,
)


class Location(BaseModel):
    """WGS 84 coordinates, in degrees."""

    latitude: float = Field(ge=-90, le=90, examples=[48.8566])
    longitude: float = Field(ge=-180, le=180, examples=[2.3522])


class PlaceSummary(BaseModel):
    id: int
    name: str
    type: str
    location: Location | None
    address: str | None
    created: int


def fleet_not_found(fleet_id: int) -> ApiError:
    """The 404 of a fleet that does not exist or is another account's."""
    return ApiError(404, "fleet_not_found", f"No fleet {fleet_id}.")


async def fleet_or_404(conn: Conn, fleet_id: int, principal: Principal) -> Fleet:
    """The fleet if it is the caller's account's; else 404, exactly as for an unknown id."""
    fleet = await fleet_store.get_fleet(conn, fleet_id, principal.account_id)
    if fleet is None:
        raise fleet_not_found(fleet_id)
    return fleet


def place_not_found(place_id: int) -> ApiError:
    """The 404 of a place that does not exist or is another account's."""
    return ApiError(404, "place_not_found", f"No place {place_id}.")


async def place_or_404(conn: Conn, place_id: int, principal: Principal) -> Place:
    """The place if it is the caller's account's; else 404, exactly as for an unknown id."""
    place = await place_store.get_place(conn, place_id, principal.account_id)
    if place is None:
        raise place_not_found(place_id)
    return place


def _location(place: Place) -> dict[str, float] | None:
    if place.latitude is None or place.longitude is None:
        return None
    return {"latitude": place.latitude, "longitude": place.longitude}


def place_summary(place: Place) -> dict[str, Any]:
    """A place's body without its devices."""
    return {
        "id": place.id,
        "name": place.name,
        "type": place.type,
        "location": _location(place),
        "address": place.address,
        "created": place.created,
    }


async def place_bodies(
    conn: Conn, principal: Principal, places: Sequence[Place]
) -> list[dict[str, Any]]:
    """The places' bodies, each with the devices there now that the caller may see (two
    statements, whatever the number of places)."""
    if not places:
        return []
    present = await stays.present(conn, [place.id for place in places])
    visible = only_visible(present, await visible_devices(conn, principal))
    return [
        {**place_summary(place), "devices": [row["id"] for row in visible[place.id]]}
        for place in places
    ]


async def place_body(conn: Conn, principal: Principal, place: Place) -> dict[str, Any]:
    """One place's body (:func:`place_bodies`)."""
    return (await place_bodies(conn, principal, [place]))[0]
