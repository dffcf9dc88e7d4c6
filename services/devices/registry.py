"""The device registry: models, ownership and visibility."""

from __future__ import annotations

import csv
import io
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, errors, sql

from services.accounts.keys import Principal
from services.accounts.users import USERNAME
from services.platform import timescale

Row = dict[str, Any]
log = logging.getLogger(__name__)

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


class InvalidOwner(ValueError):
    """An owner the caller may not give a device to (unknown, or outside its account)."""


class DeviceInUse(ValueError):
    """The device is still referred to by data that prevents its deletion."""


def canonical_id(device_id: str, network: str | None = None) -> str:
    """Hex ids (Sigfox, DevEUI) are upper-case; MQTT ids are kept as given.

    Without a network, an all-hex id is upper-cased: ids are compared case-insensitively.
    """
    if network == "mqtt":
        return device_id
    if network is None and not re.fullmatch(r"[0-9A-Fa-f]+", device_id):
        return device_id
    return device_id.upper()


def validate_new_device(device_id: str, model: str) -> tuple[str, str]:
    """Check id and model; returns (canonical id, network)."""
    network = MODEL_NETWORKS.get(model)
    if network is None:
        raise InvalidDevice(f"unknown model {model!r}; one of {', '.join(MODEL_NETWORKS)}")
    canonical = canonical_id(device_id.strip(), network)
    if canonical.lower() in RESERVED_IDS:
        raise InvalidDevice(f"{canonical!r} is reserved")
    pattern = _HEX_ID.get(network, _MQTT_ID)
    if not pattern.fullmatch(canonical):
        what = {
            "sigfox": "a Sigfox id (1 to 8 hex digits)",
            "lorawan": "a DevEUI (16 hex digits)",
        }.get(network, "1 to 64 characters of letters, digits, '_', '.', ':' or '-'")
        raise InvalidDevice(f"device id must be {what}")
    return canonical, network


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the pipeline needs to know of a device to process its uplinks."""

    id: str
    model: str
    owner_id: int
    active: bool


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def device_body(row: Row) -> dict[str, Any]:
    """The API body of a device."""
    return {
        "id": row["id"],
        "name": row["name"],
        "model": row["model"],
        "network": row["network"],
        "owner": row["owner"],
        "active": row["active"],
        "created": int(row["created"].timestamp()),
        "last_seen": _ts(row["last_seen"]),
    }


_SELECT = """
SELECT d.id, d.name, d.model, d.network, d.owner_id, u.username AS owner, d.active, d.created,
       d.last_seen, COALESCE(u.parent_id, u.id) AS account_id
FROM devices d JOIN users u ON u.id = d.owner_id
"""


async def create_device(
    conn: AsyncConnection[Row],
    *,
    device_id: str,
    model: str,
    name: str,
    owner_id: int,
) -> Row | None:
    """Register a device; None when the id is taken."""
    canonical, network = validate_new_device(device_id, model)
    cur = await conn.execute(
        "INSERT INTO devices (id, name, model, network, owner_id) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING id",  # the id, in any case, is taken
        (canonical, name, model, network, owner_id),
    )
    if await cur.fetchone() is None:
        return None
    return await get_device_row(conn, canonical)


def plausible_id(device_id: str) -> bool:
    """False for what cannot be a device id (every id is short printable ASCII): such a
    request is answered 404 without a query."""
    return 0 < len(device_id) <= MAX_ID_LENGTH and device_id.isascii() and device_id.isprintable()


async def get_device_row(conn: AsyncConnection[Row], device_id: str) -> Row | None:
    """A device with its owner's name and account, whoever may see it."""
    if not plausible_id(device_id):
        return None
    # Case-insensitive (api-contract.md); unique by the index devices_id_ci, which this uses.
    cur = await conn.execute(_SELECT + " WHERE upper(d.id) = upper(%s)", (device_id,))
    return await cur.fetchone()


def visible_to(row: Row, principal: Principal) -> bool:
    """A normal user sees its own devices; an integrator sees those of its whole account."""
    if principal.is_integrator:
        return bool(row["account_id"] == principal.account_id)
    return bool(row["owner_id"] == principal.user_id)


async def visible_device(
    conn: AsyncConnection[Row], device_id: str, principal: Principal
) -> Row | None:
    """The device if this principal may see it (else None: 404, nothing is revealed)."""
    row = await get_device_row(conn, device_id)
    if row is None or not visible_to(row, principal):
        return None
    return row


async def list_devices(conn: AsyncConnection[Row], principal: Principal) -> list[Row]:
    """Every device this principal may see, by id."""
    if principal.is_integrator:
        cur = await conn.execute(
            _SELECT + " WHERE COALESCE(u.parent_id, u.id) = %s ORDER BY d.id",
            (principal.account_id,),
        )
    else:
        cur = await conn.execute(
            _SELECT + " WHERE d.owner_id = %s ORDER BY d.id", (principal.user_id,)
        )
    return await cur.fetchall()


class DeviceDirectory:
    """A short-lived cache of device model/owner/active for the hot path (TTL in seconds)."""

    def __init__(self, ttl: float = 5.0) -> None:
        self._ttl = ttl
        self._cache: dict[str, tuple[float, DeviceInfo | None]] = {}

    async def lookup(
        self, conn: AsyncConnection[Row], ids: set[str]
    ) -> dict[str, DeviceInfo | None]:
        """Device infos for ``ids`` (None for unknown ids), from cache or one query."""
        now = time.monotonic()
        found: dict[str, DeviceInfo | None] = {}
        missing: list[str] = []
        for device_id in ids:
            hit = self._cache.get(device_id)
            if hit is not None and hit[0] > now:
                found[device_id] = hit[1]
            else:
                missing.append(device_id)
        if missing:
            cur = await conn.execute(
                "SELECT id, model, owner_id, active FROM devices WHERE id = ANY(%s)", (missing,)
            )
            rows = {row["id"]: row for row in await cur.fetchall()}
            for device_id in missing:
                row = rows.get(device_id)
                info = (
                    None
                    if row is None
                    else DeviceInfo(row["id"], row["model"], row["owner_id"], row["active"])
                )
                self._cache[device_id] = (now + self._ttl, info)
                found[device_id] = info
        return found


# --- Changes made through the API ---------------------------------------------------------


async def resolve_owner(conn: AsyncConnection[Row], principal: Principal, owner: str | None) -> int:
    """The owner's user id: the caller, or (for an integrator) itself or one of its users.

    Raises :class:`InvalidOwner`; an owner outside the caller's account is reported exactly as
    an unknown one (nothing of another hierarchy is revealed).
    """
    if owner is None or owner == principal.username:
        return principal.user_id
    if principal.is_integrator and USERNAME.match(owner):
        cur = await conn.execute(
            "SELECT id FROM users WHERE username = %s AND parent_id = %s",
            (owner, principal.user_id),
        )
        row = await cur.fetchone()
        if row is not None:
            return int(row["id"])
    raise InvalidOwner(f"unknown owner {owner!r}")


async def update_device(
    conn: AsyncConnection[Row],
    device_id: str,
    *,
    name: str | None = None,
    active: bool | None = None,
    owner_id: int | None = None,
) -> Row | None:
    """Change what is given (None keeps the value); returns the device as it now is."""
    await conn.execute(
        "UPDATE devices SET name = COALESCE(%s, name), active = COALESCE(%s, active),"
        " owner_id = COALESCE(%s, owner_id) WHERE id = %s",
        (name, active, owner_id, device_id),
    )
    return await get_device_row(conn, device_id)


#: What a device leaves without a foreign key to it: deleted with it, or whoever registers the
#: same id next (another account, perhaps) would read the old device's data.
_DEVICE_DATA = ("points", "device_latest", "device_state", "device_events")


async def delete_device(conn: AsyncConnection[Row], device_id: str) -> None:
    """Delete a device and its data (points, latest values, state, events) in one transaction;
    raises :class:`DeviceInUse` when other data still refers to it.

    On TimescaleDB the continuous aggregates over the deleted points' time span are then
    refreshed (on ``conn``, autocommit, outside the transaction): until that succeeds their
    materialised buckets would still hold the old device's figures. A failure is logged and the
    refresh policies catch up within their window."""
    try:
        async with conn.transaction():
            await conn.execute("DELETE FROM devices WHERE id = %s", (device_id,))
            cur = await conn.execute(
                "SELECT min(time) AS start, max(time) AS end FROM points WHERE device = %s",
                (device_id,),
            )
            span = await cur.fetchone()
            for table in _DEVICE_DATA:
                await conn.execute(
                    sql.SQL("DELETE FROM {} WHERE device = %s").format(sql.Identifier(table)),
                    (device_id,),
                )
    except errors.ForeignKeyViolation as exc:
        raise DeviceInUse("other data still refers to this device") from exc
    if span is None or span["start"] is None:
        return
    try:
        await timescale.refresh_aggregates(conn, span["start"], span["end"])
    except Exception as exc:  # the device is deleted all the same
        log.warning("aggregates of deleted device %s not refreshed: %r", device_id, exc)


CSV_COLUMNS = ("id", "name", "model", "network", "owner", "active", "created", "last_seen")


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    # A cell starting with = + - @ (or a tab/CR) is a formula to a spreadsheet: neutralise it.
    if text and text[0] in "=+-@\t\r":
        return "'" + text
    return text


def devices_csv(bodies: Iterable[dict[str, Any]]) -> str:
    """The devices as CSV (header + one row each), safe to open in a spreadsheet."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for body in bodies:
        writer.writerow([_csv_cell(body[column]) for column in CSV_COLUMNS])
    return out.getvalue()
