"""The account's profile: its name, contact name and country (ISO 3166-1 alpha-2). Every user
of the account reads it [readdev]; the integrator or standalone user changes it [writedev]."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import AfterValidator, BaseModel, Field

from api.deps import ConnDep, ReadDev, StorableText, WriteDev, must_manage_account
from api.openapi import error_responses
from api.routing import OrjsonRoute
from services.accounts import Profile, country_code
from services.accounts import profile as profiles

router = APIRouter(prefix="/v1/account", tags=["account"], route_class=OrjsonRoute)

Country = Annotated[
    str,
    Field(min_length=2, max_length=2, examples=["FR"]),
    AfterValidator(country_code),
]


class AccountOut(BaseModel):
    id: int = Field(description="the account's id (its integrator's or standalone user's)")
    name: str | None
    contact_name: str | None
    country: str | None = Field(description="ISO 3166-1 alpha-2")


class AccountPatch(BaseModel):
    """Fields left out are kept; null clears one."""

    name: StorableText | None = Field(default=None, min_length=1, max_length=200)
    contact_name: StorableText | None = Field(default=None, min_length=1, max_length=200)
    country: Country | None = None


def _body(profile: Profile) -> dict[str, Any]:
    return {
        "id": profile.account_id,
        "name": profile.name,
        "contact_name": profile.contact_name,
        "country": profile.country,
    }


@router.get("", response_model=AccountOut)
async def get_account(principal: ReadDev, conn: ConnDep) -> Any:
    """The caller's account: id, name, contact name, country."""
    return _body(await profiles.get_profile(conn, principal.account_id))


@router.patch("", response_model=AccountOut, responses=error_responses(403))
async def update_account(body: AccountPatch, principal: WriteDev, conn: ConnDep) -> Any:
    """Change the account's profile (the integrator or standalone user only)."""
    must_manage_account(principal, "profile")
    current = await profiles.get_profile(conn, principal.account_id)
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    return _body(await profiles.save_profile(conn, dataclasses.replace(current, **changes)))
