"""The ``device_models`` table: each account's own device models with their JavaScript codec
(register, read, list, replace, delete), what the worker reads of them per batch, and their
health (``failing_since``, the last error). Nothing else names the table's columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection, errors
from psycopg.types.json import Jsonb

from services.devices import DEVICE_ACCOUNTS

Row = dict[str, Any]


class ModelExists(ValueError):
    """The account already has a model of that id: HTTP 409."""


class ModelInUse(ValueError):
    """Devices still use the model: HTTP 409."""


@dataclass(frozen=True, slots=True)
class DeviceModel:
    """An account's own device model."""

    account_id: int
    id: str
    network: str
    source: str
    units: dict[str, str] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    version: int = 1
    failing_since: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    functions: tuple[str, ...] = ()
    created: float = 0.0
    updated: float = 0.0
    language: str = "javascript"


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """What the worker reads of a device's model for each batch: which version to run, and
    whether it is failing (so that it writes only a change of health)."""

    account_id: int
    id: str
    version: int
    failing_since: float | None


def _unix(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _model(row: Row) -> DeviceModel:
    return DeviceModel(
        account_id=row["account_id"],
        id=row["id"],
        network=row["network"],
        source=row["source"],
        units=dict(row["units"]),
        variables=dict(row["variables"]),
        version=row["version"],
        failing_since=_unix(row["failing_since"]),
        last_error=row["last_error"],
        last_error_at=_unix(row["last_error_at"]),
        functions=tuple(row["functions"]),
        created=row["created"].timestamp(),
        updated=row["updated"].timestamp(),
        language=row["language"],
    )


_COLUMNS = (
    "account_id, id, network, language, source, units, variables, functions, version,"
    " failing_since, last_error, last_error_at, created, updated"
)
_SELECT = f"SELECT {_COLUMNS} FROM device_models"  # noqa: S608 (fixed columns, no input)
_INSERT = f"""
INSERT INTO device_models (account_id, id, network, source, units, variables, functions)
VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}
"""  # noqa: S608 (fixed columns, no input)
_REPLACE = f"""
UPDATE device_models SET network = %s, source = %s, units = %s, variables = %s, functions = %s,
  version = version + 1, failing_since = NULL, last_error = NULL, last_error_at = NULL,
  updated = now()
WHERE account_id = %s AND id = %s RETURNING {_COLUMNS}
"""  # noqa: S608 (fixed columns, no input)
#: The devices of an account's model.
_USING = f"SELECT count(*) AS n FROM ({DEVICE_ACCOUNTS}) d"  # noqa: S608 (a fixed fragment)
#: The models (with their version) of the devices ``%s`` (an array of ids).
_VERSIONS = f"""
SELECT d.id AS device, m.account_id, m.id, m.version, m.failing_since
FROM ({DEVICE_ACCOUNTS}) d
JOIN device_models m ON m.account_id = d.account_id AND m.id = d.model
WHERE d.id = ANY(%s)
"""  # noqa: S608 (a fixed fragment)


async def create_model(
    conn: AsyncConnection[Row],
    *,
    account_id: int,
    model_id: str,
    network: str,
    source: str,
    units: Mapping[str, str],
    variables: Mapping[str, Any],
    functions: Sequence[str],
) -> DeviceModel:
    """A new model of the account; raises :class:`ModelExists`."""
    try:
        async with conn.transaction():
            cur = await conn.execute(
                _INSERT,
                (
                    account_id,
                    model_id,
                    network,
                    source,
                    Jsonb(dict(units)),
                    Jsonb(dict(variables)),
                    list(functions),
                ),
            )
            row = await cur.fetchone()
    except errors.UniqueViolation as exc:
        raise ModelExists(f"a model {model_id!r} exists") from exc
    assert row is not None
    return _model(row)


async def get_model(
    conn: AsyncConnection[Row], account_id: int, model_id: str
) -> DeviceModel | None:
    """The account's model, or None."""
    cur = await conn.execute(_SELECT + " WHERE account_id = %s AND id = %s", (account_id, model_id))
    row = await cur.fetchone()
    return None if row is None else _model(row)


async def list_models(conn: AsyncConnection[Row], account_id: int) -> list[DeviceModel]:
    """The account's models, by id."""
    cur = await conn.execute(_SELECT + " WHERE account_id = %s ORDER BY id", (account_id,))
    return [_model(row) for row in await cur.fetchall()]


async def replace_model(
    conn: AsyncConnection[Row],
    *,
    account_id: int,
    model_id: str,
    network: str,
    source: str,
    units: Mapping[str, str],
    variables: Mapping[str, Any],
    functions: Sequence[str],
) -> DeviceModel | None:
    """Replace the model's codec, units and variables: a new version, its health cleared.
    None when the account has no such model. The network of a model in use never changes
    (devices were registered with it): the caller checks."""
    cur = await conn.execute(
        _REPLACE,
        (
            network,
            source,
            Jsonb(dict(units)),
            Jsonb(dict(variables)),
            list(functions),
            account_id,
            model_id,
        ),
    )
    row = await cur.fetchone()
    return None if row is None else _model(row)


async def devices_using(conn: AsyncConnection[Row], account_id: int, model_id: str) -> int:
    """How many of the account's devices are of this model."""
    cur = await conn.execute(
        _USING + " WHERE d.account_id = %s AND d.model = %s", (account_id, model_id)
    )
    row = await cur.fetchone()
    return 0 if row is None else int(row["n"])


async def delete_model(conn: AsyncConnection[Row], account_id: int, model_id: str) -> bool:
    """Delete the model; raises :class:`ModelInUse` while a device of the account uses it,
    False when there is no such model."""
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT id FROM device_models WHERE account_id = %s AND id = %s FOR UPDATE",
            (account_id, model_id),
        )
        if await cur.fetchone() is None:
            return False
        using = await devices_using(conn, account_id, model_id)
        if using:
            raise ModelInUse(f"{using} device(s) use it")
        await conn.execute(
            "DELETE FROM device_models WHERE account_id = %s AND id = %s", (account_id, model_id)
        )
    return True


# --- The worker ------------------------------------------------------------------------------


async def model_versions(
    conn: AsyncConnection[Row], device_ids: Sequence[str]
) -> dict[str, ModelVersion]:
    """The model version of each of ``device_ids`` whose model is one of its account's own
    (one query, read at every batch: a ``PUT`` is seen by the next batch of every worker)."""
    if not device_ids:
        return {}
    cur = await conn.execute(
        _VERSIONS,
        (list(device_ids),),
    )
    found: dict[str, ModelVersion] = {}
    for row in await cur.fetchall():
        found[row["device"]] = ModelVersion(
            row["account_id"], row["id"], row["version"], _unix(row["failing_since"])
        )
    return found


async def model_source(
    conn: AsyncConnection[Row], account_id: int, model_id: str, version: int
) -> DeviceModel | None:
    """The model at ``version`` (None when it changed meanwhile, or is gone)."""
    cur = await conn.execute(
        _SELECT + " WHERE account_id = %s AND id = %s AND version = %s",
        (account_id, model_id, version),
    )
    row = await cur.fetchone()
    return None if row is None else _model(row)


@dataclass(frozen=True, slots=True)
class HealthChange:
    """A model's health after a batch: failing since when (None: it decodes), the last error."""

    account_id: int
    id: str
    version: int
    failing_since: float | None
    last_error: str | None
    at: float


async def note_health(conn: AsyncConnection[Row], changes: Sequence[HealthChange]) -> None:
    """Record each model's health (only for the version decoded: a codec replaced meanwhile
    starts afresh). A failing model keeps its first ``failing_since``."""
    for change in changes:
        at = datetime.fromtimestamp(change.at, UTC)
        if change.failing_since is None:
            await conn.execute(
                "UPDATE device_models SET failing_since = NULL"
                " WHERE account_id = %s AND id = %s AND version = %s",
                (change.account_id, change.id, change.version),
            )
        else:
            await conn.execute(
                "UPDATE device_models SET"
                " failing_since = COALESCE(failing_since, %s), last_error = %s,"
                " last_error_at = %s WHERE account_id = %s AND id = %s AND version = %s",
                (
                    datetime.fromtimestamp(change.failing_since, UTC),
                    change.last_error,
                    at,
                    change.account_id,
                    change.id,
                    change.version,
                ),
            )
