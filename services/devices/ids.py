"""Device ids, models and networks: which model belongs to which network, the canonical form of
an id, what a new device's id must look like, and what cannot be an id at all."""

from __future__ import annotations

import re

#: Device model -> network, per api-contract.md.
MODEL_NETWORKS: dict[str, str] = {
    "orbit-t": "sigfox",
    "orbit-th": "sigfox",
    "orbit-lite": "sigfox",
    "lorawan-lpp": "lorawan",
    "json": "mqtt",
    "relay-controller": "mqtt",
}
_HEX_ID = {"sigfox": re.compile(r"^[0-9A-F]{1,8}$"), "lorawan": re.compile(r"^[0-9A-F]{16}$")}
_MQTT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


#: Ids that would shadow a route under ``/v1/devices/``.
RESERVED_IDS = frozenset({"export.csv"})
#: The longest id of any network; a longer one cannot exist (and is not sent to the database).
MAX_ID_LENGTH = 64


class InvalidDevice(ValueError):
    """A device body that cannot be registered (the reason says why)."""


def canonical_id(device_id: str, network: str | None = None) -> str:
    """Hex ids (Sigfox, DevEUI) are upper-case; MQTT ids are kept as given.

    Without a network, an all-hex id is upper-cased: ids are compared case-insensitively.
    """
    if network == "mqtt":
        return device_id
    if network is None and not re.fullmatch(r"[0-9A-Fa-f]+", device_id):
        return device_id
    return device_id.upper()


def validate_new_device(device_id: str, model: str, network: str | None = None) -> tuple[str, str]:
    """Check id and model; returns (canonical id, network). ``network`` is given for a model of
    the account's own (``services.codecs``), whose network the model names."""
    network = network or MODEL_NETWORKS.get(model)
    if network is None:
        raise InvalidDevice(f"unknown model {model!r}; one of {', '.join(MODEL_NETWORKS)}")
    canonical = canonical_id(device_id.strip(), network)
    if canonical.lower() in RESERVED_IDS:
        raise InvalidDevice(f"{canonical!r} is reserved")
    if canonical and not canonical.strip("."):
        # `/v1/devices/..` is another path to every client or proxy that normalises paths.
        raise InvalidDevice("device id must not be made only of dots ('.', '..', ...)")
    pattern = _HEX_ID.get(network, _MQTT_ID)
    if not pattern.fullmatch(canonical):
        what = {
            "sigfox": "a Sigfox id (1 to 8 hex digits)",
            "lorawan": "a DevEUI (16 hex digits)",
        }.get(network, "1 to 64 characters of letters, digits, '_', '.', ':' or '-'")
        raise InvalidDevice(f"device id must be {what}")
    return canonical, network


def plausible_id(device_id: str) -> bool:
    """False for what cannot be a device id (every id is short printable ASCII): such a
    request is answered 404 without a query."""
    return 0 < len(device_id) <= MAX_ID_LENGTH and device_id.isascii() and device_id.isprintable()
