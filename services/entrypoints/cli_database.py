"""How the administration commands (``hivepipe users``, ``keys``, ``accounts``) reach the
database: an action runs on an autocommit connection to :func:`installation.database_url
<services.entrypoints.installation.database_url>`, and a failure ends the command with one line
on stderr and exit code 1.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import typer

from services.entrypoints.installation import database_url

T = TypeVar("T")
Row = dict[str, Any]


def fail(message: str) -> NoReturn:
    """End the command: ``error: message`` on stderr, exit code 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def run(action: Callable[[Any], Awaitable[T]]) -> T:
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
        fail("the database is not initialised: run `hivepipe up` (or `hivepipe api`) once")
    except psycopg.OperationalError as exc:
        fail(f"cannot reach the database ({exc.__class__.__name__}); is `hivepipe up` running?")
