"""Fleets and places: how operators group an account's devices (fleets, a device in several)
and where they are installed (places, with each device's history of stays so that a reading
is attributed to where its device was at that time)."""

from services.fleets import fleet_store, place_store, stays
from services.fleets.fleet_store import Fleet, FleetExists
from services.fleets.place_store import PLACE_TYPES, Place, PlaceInUse
from services.fleets.stays import DeviceGone, InvalidSince, MovedMeanwhile, Stay
from services.fleets.visible import manages_account, only_visible, visible_devices, visible_stays

__all__ = [
    "PLACE_TYPES",
    "DeviceGone",
    "Fleet",
    "FleetExists",
    "InvalidSince",
    "MovedMeanwhile",
    "Place",
    "PlaceInUse",
    "Stay",
    "fleet_store",
    "manages_account",
    "only_visible",
    "place_store",
    "stays",
    "visible_devices",
    "visible_stays",
]
