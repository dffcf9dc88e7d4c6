# mypy: disable-error-code="untyped-decorator"
"""The GraphQL query root: the key's account (with its fleets and places), the integrator's
users, the visible devices."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from api.graphql.account import Account
from api.graphql.context import Context, need
from api.graphql.models import DeviceModelType, list_models
from api.graphql.types import Device, User, device_from_row
from services.accounts import users as accounts
from services.devices import store as devices_store
from services.devices import visible_device


@strawberry.type
class Query:
    @strawberry.field(
        description="The key's user, its account's limits, profile, fleets and places"
    )
    def account(self, info: Info[Context, None]) -> Account:
        context = info.context
        p, settings = context.principal, context.ctx.settings
        return Account(
            id=p.account_id,
            username=p.username,
            integrator=p.is_integrator,
            scopes=sorted(p.scopes),
            rate_per_minute=p.rate_per_minute or settings.rate_limit_per_minute,
            rate_per_day=p.rate_per_day or settings.rate_limit_per_day,
        )

    @strawberry.field(description="The integrator's users [manageusers]")
    async def users(self, info: Info[Context, None]) -> list[User]:
        context = need(info, "manageusers")
        rows = await accounts.list_users(context.conn, parent_id=context.principal.user_id)
        return [User(**accounts.user_body(row)) for row in rows]

    @strawberry.field(description="Every visible device [readdev]")
    async def devices(self, info: Info[Context, None]) -> list[Device]:
        context = need(info, "readdev")
        rows = await devices_store.list_devices(context.conn, context.principal)
        return [device_from_row(row) for row in rows]

    @strawberry.field(description="One device, null when not visible [readdev]")
    async def device(self, info: Info[Context, None], id: str) -> Device | None:
        context = need(info, "readdev")
        row = await visible_device(context.conn, id, context.principal)
        return None if row is None else device_from_row(row)

    @strawberry.field(description="The built-in device models and the account's own [readdev]")
    async def models(self, info: Info[Context, None]) -> list[DeviceModelType]:
        context = need(info, "readdev")
        return await list_models(
            context.conn, context.principal.account_id, context.ctx.settings.codec_failing_after
        )
