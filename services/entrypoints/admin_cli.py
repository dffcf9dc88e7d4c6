"""Administration commands: ``hivepipe users``, ``hivepipe keys``, ``hivepipe accounts``.

They talk to the database directly: ``HIVEPIPE_DATABASE_URL``, or when it is unset the embedded
installation's, which ``hivepipe up`` writes into ``{HIVEPIPE_DATA_DIR}/urls.json`` while it
runs (the embedded PostgreSQL listens on a port it picks at each start).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic_settings import BaseSettings, SettingsConfigDict

T = TypeVar("T")
Row = dict[str, Any]
URLS_FILE = "urls.json"

users_app = typer.Typer(help="Users and integrators.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (a key is printed once, at creation).", no_args_is_help=True)
accounts_app = typer.Typer(help="Accounts: rate limits.", no_args_is_help=True)


class CliSettings(BaseSettings):
    """Only what the CLI's commands need (no secret is required to administer the database)."""

    model_config = SettingsConfigDict(env_prefix="HIVEPIPE_", extra="ignore")

    database_url: str | None = None
    kafka: str | None = None
    topic_prefix: str = "hivepipe."
    data_dir: Path = Path(".hivepipe")


def write_urls(data_dir: Path, urls: dict[str, str | None]) -> Path:
    """Record the URLs ``hivepipe up`` uses (mode 0600: a URL may carry a password)."""
    path = data_dir / URLS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(urls, out, indent=2)
    return path


def installation_url(settings: CliSettings, name: str) -> str | None:
    """Setting ``name`` (``database_url``, ``kafka``) from the environment, else the running
    embedded installation's (``urls.json``), else None."""
    configured = getattr(settings, name)
    if configured:
        return str(configured)
    try:
        url = json.loads((settings.data_dir / URLS_FILE).read_text()).get(name)
    except (OSError, ValueError):
        return None
    return str(url) if url else None


def database_url(settings: CliSettings | None = None) -> str:
    """``HIVEPIPE_DATABASE_URL``, else the running embedded installation's (``urls.json``)."""
    settings = settings or CliSettings()
    url = installation_url(settings, "database_url")
    if not url:
        path = settings.data_dir / URLS_FILE
        _fail(f"No database: set HIVEPIPE_DATABASE_URL, or start `hivepipe up` (it writes {path}).")
    return str(url)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _run(action: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``action(conn)`` on an autocommit connection; database errors become one line."""
    import psycopg
    from psycopg.rows import dict_row

    url = database_url()

    async def main() -> T:
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, row_factory=dict_row, connect_timeout=10
        ) as conn:
            return await action(conn)

    try:
        return asyncio.run(main())
    except psycopg.errors.UndefinedTable:
        _fail("the database is not initialised: run `hivepipe up` (or `hivepipe api`) once")
    except psycopg.OperationalError as exc:
        _fail(f"cannot reach the database ({exc.__class__.__name__}); is `hivepipe up` running?")
    raise AssertionError("unreachable")


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


# --- users -------------------------------------------------------------------------------


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="the username")],
    integrator: Annotated[bool, typer.Option("--integrator", help="a parent account")] = False,
    parent: Annotated[
        str | None, typer.Option("--parent", help="the integrator this user belongs to")
    ] = None,
) -> None:
    """Create a user, an integrator (--integrator) or an integrator's user (--parent)."""
    from services.accounts import users as accounts

    async def action(conn: Any) -> Row:
        return await accounts.add_user(conn, username=name, is_integrator=integrator, parent=parent)

    try:
        row = _run(action)
    except (accounts.InvalidUser, accounts.UserExists) as exc:
        _fail(str(exc))
        return
    kind = "user"
    if row["is_integrator"]:
        kind = "integrator"
    elif row["parent"]:
        kind = f"user of {row['parent']}"
    typer.echo(f"created {kind} {row['username']}")


@users_app.command("list")
def users_list() -> None:
    """Every user, with its integrator and rate limits."""
    from services.accounts import users as accounts

    rows = _run(lambda conn: accounts.list_users(conn))
    for row in rows:
        kind = "integrator" if row["is_integrator"] else "user"
        limits = ""
        if row["rate_per_minute"] or row["rate_per_day"]:
            per_minute, per_day = row["rate_per_minute"] or "-", row["rate_per_day"] or "-"
            limits = f" limits={per_minute}/min,{per_day}/day"
        parent = f" parent={row['parent']}" if row["parent"] else ""
        typer.echo(f"{row['username']}\t{kind}{parent}{limits}")


# --- keys --------------------------------------------------------------------------------


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
    from services.accounts import keys
    from services.accounts import users as accounts
    from services.accounts.scopes import InvalidScopes

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
        key, row = _run(action)
    except (
        accounts.UnknownUser,
        InvalidScopes,
        keys.InvalidKeyRequest,
        keys.KeyNameTaken,
    ) as exc:
        _fail(str(exc))
        return
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
        rows = _run(action)
    except accounts.UnknownUser as exc:
        _fail(str(exc))
        return
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
        revoked = _run(action)
    except accounts.UnknownUser as exc:
        _fail(str(exc))
        return
    if revoked is None:
        _fail(f"{user!r} has no key {name!r}")
    typer.echo(f"revoked key {name} of {user}")


# --- accounts ----------------------------------------------------------------------------


@accounts_app.command("limits")
def accounts_limits(
    name: Annotated[str, typer.Argument(help="the account: an integrator or a standalone user")],
    per_minute: Annotated[int | None, typer.Option("--per-minute", min=1)] = None,
    per_day: Annotated[int | None, typer.Option("--per-day", min=1)] = None,
) -> None:
    """Set an account's rate limits (applies to the integrator and all its users)."""
    from services.accounts import users as accounts

    if per_minute is None and per_day is None:
        _fail("give --per-minute and/or --per-day")

    async def action(conn: Any) -> Row:
        return await accounts.set_limits(
            conn, username=name, per_minute=per_minute, per_day=per_day
        )

    try:
        row = _run(action)
    except (accounts.UnknownUser, accounts.InvalidUser) as exc:
        _fail(str(exc))
        return
    typer.echo(
        f"{row['username']}: {row['rate_per_minute'] or 'default'}/minute,"
        f" {row['rate_per_day'] or 'default'}/day"
    )
