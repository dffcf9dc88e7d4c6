"""The device registry: ids, models and networks, ownership and visibility, and the cached
directory the hot paths read."""

from services.devices import access, export, ids, store
from services.devices.access import visible_device
from services.devices.directory import DeviceDirectory
from services.devices.status import device_problem, info_problem
from services.devices.store import ACTIVE_BY_ID, CURRENT_OWNERS, DEVICE_ACCOUNTS, HOLD_BY_ID

__all__ = [
    "ACTIVE_BY_ID",
    "CURRENT_OWNERS",
    "DEVICE_ACCOUNTS",
    "DeviceDirectory",
    "HOLD_BY_ID",
    "access",
    "device_problem",
    "export",
    "ids",
    "info_problem",
    "store",
    "visible_device",
]
