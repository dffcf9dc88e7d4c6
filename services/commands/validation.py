"""Device commands: validation of ``POST /v1/devices/{id}/commands`` payloads.

The payload is published as is on MQTT ``devices/{id}/command`` (``wire-formats.md``, "MQTT"):
``{"Output": "Relay", "Relays": [{"relay": "SecurityAlarm", "state": 1, "id": "255.1"}]}``.
"""

from __future__ import annotations

from typing import Any


class CommandInvalid(ValueError):
    """The command payload is refused (HTTP 400); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: Accepted spellings of a relay state (peers quote numbers); False and True equal 0 and 1.
_RELAY_STATES: dict[int | str, int] = {0: 0, 1: 1, "0": 0, "1": 1}


def validate_command(payload: Any) -> dict[str, Any]:
    """Return the payload to publish, or raise :class:`CommandInvalid` with the reason.

    ``Output`` (a non-empty string) is required. For ``Output: "Relay"`` (any case), ``Relays``
    must be a non-empty list whose entries each have ``state`` 0 or 1 (``"0"``/``"1"`` and
    booleans are accepted and published as 0/1) and a relay to address: ``id`` when present and
    not null, else ``relay`` (a non-empty string). ``id`` wins: when both are given only ``id`` is
    checked, and both are published. Other outputs are published unchanged. The input is never
    modified.
    """
    if not isinstance(payload, dict):
        raise CommandInvalid("payload must be a JSON object")
    output = payload.get("Output")
    if not isinstance(output, str) or not output.strip():
        raise CommandInvalid("'Output' is required (a non-empty string)")
    if output.casefold() != "relay":
        return dict(payload)
    relays = payload.get("Relays")
    if not isinstance(relays, list) or not relays:
        raise CommandInvalid("'Relays' must be a non-empty list for Output 'Relay'")
    return {**payload, "Relays": [_relay_entry(i, entry) for i, entry in enumerate(relays)]}


def _relay_entry(index: int, entry: Any) -> dict[str, Any]:
    where = f"Relays[{index}]"
    if not isinstance(entry, dict):
        raise CommandInvalid(f"{where} must be an object")
    target_key = "id" if entry.get("id") is not None else "relay"
    target = entry.get(target_key)
    if not isinstance(target, str) or not target.strip():
        raise CommandInvalid(f"{where} needs 'id' or 'relay' (a non-empty string)")
    state = entry.get("state")
    # isinstance first: 1.0 == 1 would otherwise be found in the table.
    if not isinstance(state, int | str) or state not in _RELAY_STATES:
        raise CommandInvalid(f"{where}.state must be 0 or 1")
    return {**entry, "state": _RELAY_STATES[state]}
