"""Fixtures for real servers and an isolated schema and topic prefix per test (or module)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from urllib.parse import quote

import psycopg
import pytest

from services.platform.db import MIGRATIONS_DIR
from tests.servers import server_url


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    with server_url("database") as url:
        yield url


@pytest.fixture(scope="session")
def kafka_server() -> Iterator[str]:
    with server_url("kafka") as url:
        yield url


@pytest.fixture(scope="session")
def mqtt_server() -> Iterator[str]:
    with server_url("mqtt") as url:
        yield url


def schema_url(base: str, schema: str) -> str:
    """``base`` with every connection's search_path set to ``schema``."""
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema},public')}"


def new_schema(base: str) -> tuple[str, str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    return name, schema_url(base, name)


def drop_schema(base: str, name: str) -> None:
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@asynccontextmanager
async def schema_with(base: str, migrations: Sequence[str], owner: str) -> AsyncIterator[str]:
    """The URL of a fresh schema with these migration files applied in order and a user
    ``owner``; dropped after."""
    name, url = new_schema(base)
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
            for migration in migrations:
                await admin.execute((MIGRATIONS_DIR / migration).read_text())
            await admin.execute("INSERT INTO users (username) VALUES (%s)", (owner,))
        yield url
    finally:
        drop_schema(base, name)


@pytest.fixture
def database_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty schema for this test (dropped after)."""
    name, url = new_schema(pg_server)
    yield url
    drop_schema(pg_server, name)


@pytest.fixture
async def migrated_url(database_url: str) -> str:
    """A fresh schema with every migration applied."""
    from services.platform.db import migrate

    async with await psycopg.AsyncConnection.connect(
        database_url, autocommit=True, row_factory=psycopg.rows.dict_row
    ) as conn:
        await migrate(conn)
    return database_url


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix of this test's own."""
    return f"t{uuid.uuid4().hex[:10]}."
