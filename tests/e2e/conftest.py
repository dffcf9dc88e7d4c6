from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.stack import Stack, stack_in_new_schema


@pytest.fixture(scope="module")
async def stack(
    pg_server: str, kafka_server: str, mqtt_server: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """One pipeline per test module: its own schema, topic prefix and worker process."""
    import uuid

    async with stack_in_new_schema(
        pg_server,
        kafka=kafka_server,
        mqtt_url=mqtt_server,
        prefix=f"e{uuid.uuid4().hex[:10]}.",
        data_dir=Path(tmp_path_factory.mktemp("stack")),
        webhook_allowed_cidrs="127.0.0.0/8",
        webhook_allow_http=True,
    ) as running:
        yield running
