"""``hivepipe accounts``: an account's rate limits (an integrator's apply to all its users), on
the database directly (see :mod:`services.entrypoints.cli_database`).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from services.entrypoints.cli_database import Row, fail, run

accounts_app = typer.Typer(help="Accounts: rate limits.", no_args_is_help=True)


@accounts_app.command("limits")
def accounts_limits(
    name: Annotated[str, typer.Argument(help="the account: an integrator or a standalone user")],
    per_minute: Annotated[int | None, typer.Option("--per-minute", min=1)] = None,
    per_day: Annotated[int | None, typer.Option("--per-day", min=1)] = None,
) -> None:
    """Set an account's rate limits (applies to the integrator and all its users)."""
    from services.accounts import users as accounts

    if per_minute is None and per_day is None:
        fail("give --per-minute and/or --per-day")

    async def action(conn: Any) -> Row:
        return await accounts.set_limits(
            conn, username=name, per_minute=per_minute, per_day=per_day
        )

    try:
        row = run(action)
    except (accounts.UnknownUser, accounts.InvalidUser) as exc:
        fail(str(exc))
    typer.echo(
        f"{row['username']}: {row['rate_per_minute'] or 'default'}/minute,"
        f" {row['rate_per_day'] or 'default'}/day"
    )
