"""``hivepipe users``: create a user, an integrator or an integrator's user, and list them all
(on the database directly, see :mod:`services.entrypoints.cli_database`).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from services.entrypoints.cli_database import Row, fail, run

users_app = typer.Typer(help="Users and integrators.", no_args_is_help=True)


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
        row = run(action)
    except (accounts.InvalidUser, accounts.UserExists) as exc:
        fail(str(exc))
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

    rows = run(lambda conn: accounts.list_users(conn))
    for row in rows:
        kind = "integrator" if row["is_integrator"] else "user"
        limits = ""
        if row["rate_per_minute"] or row["rate_per_day"]:
            per_minute, per_day = row["rate_per_minute"] or "-", row["rate_per_day"] or "-"
            limits = f" limits={per_minute}/min,{per_day}/day"
        parent = f" parent={row['parent']}" if row["parent"] else ""
        typer.echo(f"{row['username']}\t{kind}{parent}{limits}")
