"""A device as it leaves the service: its API body (JSON and GraphQL) and the CSV export of a
list of them, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime
from typing import Any

Row = dict[str, Any]


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def device_body(row: Row) -> dict[str, Any]:
    """The API body of a device."""
    return {
        "id": row["id"],
        "name": row["name"],
        "model": row["model"],
        "network": row["network"],
        "owner": row["owner"],
        "active": row["active"],
        "created": int(row["created"].timestamp()),
        "last_seen": _ts(row["last_seen"]),
    }


CSV_COLUMNS = ("id", "name", "model", "network", "owner", "active", "created", "last_seen")


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    # A cell starting with = + - @ (or a tab/CR) is a formula to a spreadsheet: neutralise it.
    if text and text[0] in "=+-@\t\r":
        return "'" + text
    return text


def devices_csv(bodies: Iterable[dict[str, Any]]) -> str:
    """The devices as CSV (header + one row each), safe to open in a spreadsheet."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for body in bodies:
        writer.writerow([_csv_cell(body[column]) for column in CSV_COLUMNS])
    return out.getvalue()
