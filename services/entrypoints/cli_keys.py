"""``hivepipe keys``: create a key (printed once, only its hash is stored), list keys (never the
key itself), revoke one; with the parsing of ``--expires``.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from services.entrypoints.cli_database import Row, fail, run

keys_app = typer.Typer(help="API keys (a key is printed once, at creation).", no_args_is_help=True)

_DURATION = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_expires(text: str, *, now: float | None = None) -> datetime:
    """``30d``, ``12h``, ``90m``, ``2w``; a Unix time; or an ISO date/time (UTC if no zone)."""
    text = text.strip()
    base = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    match = _DURATION.match(text)
    if match:
        return base + timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if text.isdigit():
        return datetime.fromtimestamp(int(text), UTC)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(
            "use a duration (30d, 12h, 90m, 2w), a Unix time or an ISO date"
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _ts(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@keys_app.command("create")
def keys_create(
    user: Annotated[str, typer.Option("--user", help="the key's user")],
    scopes: Annotated[
        str,
        typer.Option(
            "--scopes", help="a preset (read-only, read-write, admin) or scopes, comma-separated"
        ),
    ],
    name: Annotated[str | None, typer.Option("--name", help="default: cli-<time>")] = None,
    expires: Annotated[
        str | None, typer.Option("--expires", help="30d, 12h, a Unix time or an ISO date")
    ] = None,
) -> None:
    """Create a key and print it (once: only its hash is stored)."""
    from services.accounts import InvalidScopes, keys
    from services.accounts import users as accounts

    expiration = None if expires is None else parse_expires(expires)
    key_name = name or datetime.now(UTC).strftime("cli-%Y%m%d%H%M%S")
    requested = [s.strip() for s in scopes.split(",") if s.strip()]

    async def action(conn: Any) -> tuple[str, Row]:
        row = await accounts.get_user(conn, user)
        if row is None:
            raise accounts.UnknownUser(f"no user {user!r}")
        granted = keys.key_scopes(requested, is_integrator=row["is_integrator"])
        return await keys.issue_key(
            conn, user_id=row["id"], name=key_name, scopes=granted, expiration=expiration
        )

    try:
        key, row = run(action)
    except (
        accounts.UnknownUser,
        InvalidScopes,
        keys.InvalidKeyRequest,
        keys.KeyNameTaken,
    ) as exc:
        fail(str(exc))
    typer.echo(
        f"key {row['name']} for {row['user']}: {', '.join(row['scopes'])}"
        f" (expires {_ts(row['expiration'])}); shown once:",
        err=True,
    )
    typer.echo(key)


@keys_app.command("list")
def keys_list(
    user: Annotated[str | None, typer.Option("--user", help="only this user's keys")] = None,
) -> None:
    """Keys: name, prefix, user, scopes, expiration, revoked, last use (never the key)."""
    from services.accounts import keys
    from services.accounts import users as accounts

    async def action(conn: Any) -> list[Row]:
        if user is None:
            users = await accounts.list_users(conn)
        else:
            row = await accounts.get_user(conn, user)
            if row is None:
                raise accounts.UnknownUser(f"no user {user!r}")
            users = [row]
        return await keys.list_keys(conn, [int(u["id"]) for u in users])

    try:
        rows = run(action)
    except accounts.UnknownUser as exc:
        fail(str(exc))
    for row in rows:
        state = "revoked" if row["revoked"] else "active"
        typer.echo(
            f"{row['user']}\t{row['name']}\t{row['prefix']}…\t{state}\t{','.join(row['scopes'])}"
            f"\texpires={_ts(row['expiration'])}\tlast_used={_ts(row['last_used'])}"
        )


@keys_app.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Argument(help="the key's name")],
    user: Annotated[str, typer.Option("--user", help="the key's user")],
) -> None:
    """Revoke a key: refused from the very next request on."""
    from services.accounts import keys
    from services.accounts import users as accounts

    async def action(conn: Any) -> Row | None:
        row = await accounts.get_user(conn, user)
        if row is None:
            raise accounts.UnknownUser(f"no user {user!r}")
        key = await keys.get_key(conn, user_id=row["id"], name=name)
        return None if key is None else await keys.revoke_key(conn, key["id"])

    try:
        revoked = run(action)
    except accounts.UnknownUser as exc:
        fail(str(exc))
    if revoked is None:
        fail(f"{user!r} has no key {name!r}")
    typer.echo(f"revoked key {name} of {user}")
