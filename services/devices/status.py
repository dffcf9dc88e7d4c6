"""Whether a device may send: the one decision behind every ``unknown_device`` and
``inactive_device`` dead letter (a device without a row is unknown; one with ``active`` false is
deactivated)."""

from __future__ import annotations

from services.devices.directory import DeviceInfo

#: The reason given for the uplink or event of a device without a row.
UNKNOWN_DEVICE = "unknown_device"
#: The reason given for the uplink or event of a deactivated device.
INACTIVE_DEVICE = "inactive_device"


def device_problem(active: bool | None) -> str | None:
    """:data:`UNKNOWN_DEVICE` for no device (``active`` None), :data:`INACTIVE_DEVICE` for a
    deactivated one, None when the device may send."""
    if active is None:
        return UNKNOWN_DEVICE
    return None if active else INACTIVE_DEVICE


def info_problem(info: DeviceInfo | None) -> str | None:
    """:func:`device_problem` of a directory entry (None: no such device)."""
    return device_problem(None if info is None else info.active)
