"""Usage buffering, device CSV and ids, the CLI's --expires, and the OpenAPI document."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import typer

from services.accounts.usage import UsageBuffer, day_range
from services.devices import export, ids
from services.entrypoints.api_app import create_app
from services.entrypoints.cli_keys import parse_expires
from services.platform.settings import Settings


def test_usage_counts_add_up_per_user_and_day() -> None:
    buffer = UsageBuffer()
    noon = datetime(2024, 3, 1, 12, tzinfo=UTC).timestamp()
    buffer.count(1, "api_requests", at=noon)
    buffer.count(1, "api_requests", at=noon + 60)
    buffer.count(1, "points", 10, at=noon)
    buffer.count(2, "uplinks", at=noon)
    buffer.count(1, "deliveries", at=noon + 86400)
    assert buffer.pending() == {
        (1, date(2024, 3, 1)): {"uplinks": 0, "points": 10, "deliveries": 0, "api_requests": 2},
        (2, date(2024, 3, 1)): {"uplinks": 1, "points": 0, "deliveries": 0, "api_requests": 0},
        (1, date(2024, 3, 2)): {"uplinks": 0, "points": 0, "deliveries": 1, "api_requests": 0},
    }


class _FailingConn:
    async def execute(self, query: str, params: Any = None) -> None:
        raise RuntimeError("down")


class _Conn:
    def __init__(self) -> None:
        self.params: list[Any] = []

    async def execute(self, query: str, params: Any = None) -> None:
        self.params.append(params)


async def test_usage_flush_is_one_statement_and_keeps_counts_on_failure() -> None:
    buffer = UsageBuffer()
    buffer.count(1, "api_requests", at=0)
    with pytest.raises(RuntimeError):
        await buffer.flush(_FailingConn())  # type: ignore[arg-type]
    buffer.count(1, "api_requests", at=0)
    conn = _Conn()
    assert await buffer.flush(conn) == 1  # type: ignore[arg-type]
    [params] = conn.params
    assert params == [[1], [date(1970, 1, 1)], [0], [0], [0], [2]]
    assert buffer.pending() == {}


def test_day_range() -> None:
    now = datetime(2024, 3, 31, 10, tzinfo=UTC).timestamp()
    assert day_range(None, None, now=now) == (date(2024, 3, 2), date(2024, 3, 31))
    start = datetime(2024, 3, 1, 23, tzinfo=UTC).timestamp()
    assert day_range(start, now, now=now) == (date(2024, 3, 1), date(2024, 3, 31))
    with pytest.raises(ValueError, match="after"):
        day_range(now, start)
    with pytest.raises(ValueError, match="366"):
        day_range(0, now)


def test_csv_export_is_spreadsheet_safe() -> None:
    body = {
        "id": "1A",
        "name": "=cmd|' /C calc'!A0",
        "model": "orbit-t",
        "network": "sigfox",
        "owner": "+alice",
        "active": True,
        "created": 1700000000,
        "last_seen": None,
    }
    rows = list(csv.reader(io.StringIO(export.devices_csv([body]))))
    assert rows[0] == list(export.CSV_COLUMNS)
    assert rows[1] == [
        "1A",
        "'=cmd|' /C calc'!A0",
        "orbit-t",
        "sigfox",
        "'+alice",
        "true",
        "1700000000",
        "",
    ]


def test_device_ids() -> None:
    assert ids.validate_new_device("1a2b3c", "orbit-t") == ("1A2B3C", "sigfox")
    with pytest.raises(ids.InvalidDevice, match="reserved"):
        ids.validate_new_device("export.csv", "json")
    assert ids.plausible_id("relay-1")
    for bad in ("", "a\x00", "é", "x" * 65, "a\nb"):
        assert not ids.plausible_id(bad)


def test_expires() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    base = datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_expires("30d", now=now) == base + timedelta(days=30)
    assert parse_expires("12h", now=now) == base + timedelta(hours=12)
    assert parse_expires("2w", now=now) == base + timedelta(weeks=2)
    assert parse_expires("1700000000") == datetime.fromtimestamp(1700000000, UTC)
    assert parse_expires("2025-06-30") == datetime(2025, 6, 30, tzinfo=UTC)
    assert parse_expires("2025-06-30T12:00:00+02:00").utcoffset() == timedelta(hours=2)
    with pytest.raises(typer.BadParameter):
        parse_expires("soon")


def _document() -> dict[str, Any]:
    app = create_app(Settings(embedded=True, database_url="-", kafka="-"))
    document: dict[str, Any] = app.openapi()
    return document


def test_openapi_declares_the_errors_with_their_body() -> None:
    document = _document()
    assert "ErrorBody" in document["components"]["schemas"]
    for path, item in document["paths"].items():
        if not (path.startswith("/v1/") or path == "/graphql"):
            continue
        for method, operation in item.items():
            responses = operation["responses"]
            for code in ("401", "403", "429", "500"):
                assert code in responses, (method, path, code)
                schema = responses[code]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}
            assert "Retry-After" in responses["429"]["headers"]
            if "{" in path:
                assert "404" in responses, (method, path)
            assert operation.get("summary") or operation.get("description"), (method, path)
            assert {"APIKeyHeader": []} in operation["security"]
    commands = document["paths"]["/v1/devices/{device_id}/commands"]["post"]["responses"]
    assert {"200", "400", "404", "503"} <= set(commands)
