"""The ``account_profiles`` table: an account's name, contact name and country (ISO 3166-1
alpha-2). One row per account, keyed by the account's own user (the integrator, or the
standalone user); an account that never set its profile has every field None."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from services.accounts.countries import country_code

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Profile:
    """What an account says of itself."""

    account_id: int
    name: str | None = None
    contact_name: str | None = None
    #: ISO 3166-1 alpha-2, upper-case.
    country: str | None = None


async def get_profile(conn: AsyncConnection[Row], account_id: int) -> Profile:
    """The account's profile (every field None until it is set)."""
    cur = await conn.execute(
        "SELECT account_id, name, contact_name, country FROM account_profiles"
        " WHERE account_id = %s",
        (account_id,),
    )
    row = await cur.fetchone()
    return Profile(account_id) if row is None else Profile(**row)


async def save_profile(conn: AsyncConnection[Row], profile: Profile) -> Profile:
    """Write the whole profile; raises :class:`ValueError` for a country that is not an
    ISO 3166-1 alpha-2 code. Returns it as stored."""
    country = None if profile.country is None else country_code(profile.country)
    cur = await conn.execute(
        "INSERT INTO account_profiles (account_id, name, contact_name, country)"
        " VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (account_id) DO UPDATE SET name = EXCLUDED.name,"
        " contact_name = EXCLUDED.contact_name, country = EXCLUDED.country, updated = now()"
        " RETURNING account_id, name, contact_name, country",
        (profile.account_id, profile.name, profile.contact_name, country),
    )
    row = await cur.fetchone()
    assert row is not None
    return Profile(**row)
