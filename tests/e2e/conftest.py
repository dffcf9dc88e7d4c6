from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import drop_schema, new_schema
from tests.stack import Stack, run_stack, stack_settings


@pytest.fixture(scope="module")
async def stack(
    pg_server: str, kafka_server: str, mqtt_server: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """One pipeline per test module: its own schema, topic prefix and worker process."""
    import uuid

    name, url = new_schema(pg_server)
    settings = stack_settings(
        database_url=url,
        kafka=kafka_server,
        mqtt_url=mqtt_server,
        prefix=f"e{uuid.uuid4().hex[:10]}.",
        data_dir=Path(tmp_path_factory.mktemp("stack")),
        webhook_allowed_cidrs="127.0.0.0/8",
        webhook_allow_http=True,
    )
    async with run_stack(settings) as running:
        yield running
    drop_schema(pg_server, name)
