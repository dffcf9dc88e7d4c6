# mypy: disable-error-code="untyped-decorator"
"""The GraphQL account: the key's user and limits, the account's profile, its fleets with their
assets and its places with their devices, loaded in batches (:mod:`api.graphql.loaders`): the
statements of ``account { fleets { assets { latest } } places { devices } }`` do not grow with
the number of fleets, places or devices. Scopes and tenancy are REST's."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from api.graphql.context import Context, need
from api.graphql.types import Device, device_from_row
from services.accounts import Profile
from services.fleets import fleet_store, place_store


@strawberry.type(description="A named group of the account's devices")
class Fleet:
    id: int
    name: str
    created: int

    @strawberry.field(description="The fleet's devices the key's user may see, by id [readdev]")
    async def assets(self, info: Info[Context, None]) -> list[Device]:
        context = need(info, "readdev")
        return [device_from_row(row) for row in await context.loaders.fleet_devices.load(self.id)]


@strawberry.type(description="Where devices are installed")
class Place:
    id: int
    name: str
    type: str
    latitude: float | None
    longitude: float | None
    address: str | None
    created: int

    @strawberry.field(description="The devices there now the key's user may see [readdev]")
    async def devices(self, info: Info[Context, None]) -> list[Device]:
        context = need(info, "readdev")
        return [device_from_row(row) for row in await context.loaders.place_devices.load(self.id)]


@strawberry.type
class Account:
    id: int = strawberry.field(description="The account's id (its integrator's or own user's)")
    username: str
    integrator: bool
    scopes: list[str]
    rate_per_minute: int
    rate_per_day: int

    @strawberry.field(description="The account's name [readdev]")
    async def name(self, info: Info[Context, None]) -> str | None:
        return (await _profile(info, self.id)).name

    @strawberry.field(description="The account's contact name [readdev]")
    async def contact_name(self, info: Info[Context, None]) -> str | None:
        return (await _profile(info, self.id)).contact_name

    @strawberry.field(description="The account's country, ISO 3166-1 alpha-2 [readdev]")
    async def country(self, info: Info[Context, None]) -> str | None:
        return (await _profile(info, self.id)).country

    @strawberry.field(description="The account's fleets, by name [readdev]")
    async def fleets(self, info: Info[Context, None]) -> list[Fleet]:
        context = need(info, "readdev")
        return [
            Fleet(id=fleet.id, name=fleet.name, created=fleet.created)
            for fleet in await fleet_store.list_fleets(context.conn, self.id)
        ]

    @strawberry.field(description="The account's places, by name [readdev]")
    async def places(self, info: Info[Context, None]) -> list[Place]:
        context = need(info, "readdev")
        return [
            Place(
                id=place.id,
                name=place.name,
                type=place.type,
                latitude=place.latitude,
                longitude=place.longitude,
                address=place.address,
                created=place.created,
            )
            for place in await place_store.list_places(context.conn, self.id)
        ]


async def _profile(info: Info[Context, None], account_id: int) -> Profile:
    context = need(info, "readdev")
    return await context.loaders.profile.load(account_id)
