# mypy: disable-error-code="untyped-decorator"
"""The GraphQL object types: devices (with their readings, state and Orbit parameters resolved
on demand, each under its scope), users, a command's result. The account, its fleets and
places are :mod:`api.graphql.account`'s."""

from __future__ import annotations

import time
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from api.graphql.context import Context, need
from api.graphql.models import DeviceModelType, one_model
from services.devices import export, visible_device
from services.orbit import store as orbit_store
from services.readings import latest_state

ORBIT_MODELS = frozenset({"orbit-t", "orbit-th", "orbit-lite"})


@strawberry.type(description="The latest value of one metric")
class Reading:
    device: str
    time: float
    metric: str
    value: float
    unit: str | None


@strawberry.type
class Device:
    id: str
    name: str
    model: str
    network: str
    owner: str
    active: bool
    created: int
    last_seen: float | None

    @strawberry.field(description="The latest point of each metric [readdata]")
    async def readings(self, info: Info[Context, None]) -> list[Reading]:
        return await _latest(info, self.id)

    @strawberry.field(description="The latest point of each metric, as `readings` [readdata]")
    async def latest(self, info: Info[Context, None]) -> list[Reading]:
        return await _latest(info, self.id)

    @strawberry.field(description="The device's model: built-in, or one of the account's own")
    async def device_model(self, info: Info[Context, None]) -> DeviceModelType | None:
        context = info.context
        row = await visible_device(context.conn, self.id, context.principal)
        if row is None:
            return None
        return await one_model(
            context.conn, row["account_id"], self.model, context.ctx.settings.codec_failing_after
        )

    @strawberry.field(description="The latest relay-controller state report [readdata]")
    async def state(self, info: Info[Context, None]) -> JSON | None:
        context = need(info, "readdata")
        latest = await latest_state(context.conn, self.id)
        return None if latest is None else JSON(latest[1])

    @strawberry.field(description="Orbit parameters: active and pending [readorbit]")
    async def orbit(self, info: Info[Context, None]) -> JSON | None:
        context = need(info, "readorbit")
        if self.model not in ORBIT_MODELS:
            return None
        return JSON(await orbit_store.orbit_view(context.conn, self.id, time.time()))


async def _latest(info: Info[Context, None], device: str) -> list[Reading]:
    # Batched: the devices of one query (a fleet's assets, every device) load in one statement.
    context = need(info, "readdata")
    return [
        Reading(device=p.device, time=p.time, metric=p.metric, value=p.value, unit=p.unit)
        for p in await context.loaders.latest.load(device)
    ]


def device_from_row(row: dict[str, Any]) -> Device:
    """The GraphQL device of a ``devices`` row."""
    return Device(**export.device_body(row))


@strawberry.type
class User:
    username: str
    integrator: bool
    parent: str | None
    created: int


@strawberry.type
class CommandResult:
    status: str
