# mypy: disable-error-code="untyped-decorator"
"""The GraphQL device models: the built-in ones and the account's own (with their codec's
functions and health; the source is the REST route's)."""

from __future__ import annotations

import time

import strawberry
from strawberry.scalars import JSON

from api.deps import Conn
from services.codecs import DeviceModel, model_store
from services.devices import ids


@strawberry.type(name="DeviceModel", description="A device model and its codec")
class DeviceModelType:
    id: str
    network: str
    builtin: bool
    functions: list[str]
    units: JSON
    version: int | None
    failing: bool
    failing_since: float | None
    last_error: str | None


def _builtin(model_id: str) -> DeviceModelType:
    return DeviceModelType(
        id=model_id,
        network=ids.MODEL_NETWORKS[model_id],
        builtin=True,
        functions=[],
        units=JSON({}),
        version=None,
        failing=False,
        failing_since=None,
        last_error=None,
    )


def _own(model: DeviceModel, failing_after: float) -> DeviceModelType:
    since = model.failing_since
    return DeviceModelType(
        id=model.id,
        network=model.network,
        builtin=False,
        functions=list(model.functions),
        units=JSON(model.units),
        version=model.version,
        failing=since is not None and time.time() - since >= failing_after,
        failing_since=since,
        last_error=model.last_error,
    )


async def list_models(conn: Conn, account_id: int, failing_after: float) -> list[DeviceModelType]:
    """The built-in models, then the account's own."""
    own = await model_store.list_models(conn, account_id)
    return [_builtin(m) for m in ids.MODEL_NETWORKS] + [_own(m, failing_after) for m in own]


async def one_model(
    conn: Conn, account_id: int, model_id: str, failing_after: float
) -> DeviceModelType | None:
    """A built-in model, or one of the account's own (None: neither)."""
    if model_id in ids.MODEL_NETWORKS:
        return _builtin(model_id)
    model = await model_store.get_model(conn, account_id, model_id)
    return None if model is None else _own(model, failing_after)
