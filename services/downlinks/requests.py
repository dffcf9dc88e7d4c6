"""LoRaWAN downlinks requested through the API: stored, pushed, the network server's answer kept.

A downlink is stored (``pending``) before the network server is called, so nothing requested is
ever lost from view, then marked ``queued`` or ``failed`` with the answer; ChirpStack's reports
then make it ``sent``, ``acknowledged`` or ``nacked`` (:func:`note_report`). No transaction spans
the HTTP call. Each request is also recorded on the Kafka ``commands`` topic.
"""

from __future__ import annotations

import time
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from services.commands import command_record, record_command
from services.downlinks.network_servers import (
    Answer,
    Downlink,
    NetworkServer,
    NetworkServerUnreachable,
)
from services.platform import DeviceEvent, Publisher

Row = dict[str, Any]


class NetworkServerFailed(RuntimeError):
    """The network server refused or could not be reached; ``answer`` is None when unreachable."""

    def __init__(self, message: str, answer: Answer | None, downlink: Row | None) -> None:
        super().__init__(message)
        self.answer = answer
        self.downlink = downlink

    @property
    def retryable(self) -> bool:
        """True when the failure is the server's state (down, overloaded, our credentials)."""
        return (
            self.answer is None
            or self.answer.status >= 500
            or self.answer.status
            in (
                401,
                403,
                408,
                429,
            )
        )


#: A network server's report of a downlink (its device event's type) → the stored downlink's new
#: status, and the statuses it may follow (a report never undoes a later one).
_REPORTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "downlink_sent_ns": ("sent", ("queued",)),
    "downlink_ack": ("acknowledged", ("queued", "sent")),
    "downlink_nack": ("nacked", ("queued", "sent")),
}


async def note_report(conn: AsyncConnection[Row], event: DeviceEvent) -> int:
    """Apply a network server's report (``txack``, ``ack``) to the downlink it names; how many
    stored downlinks changed (0 or 1).

    ChirpStack answers a push with the queue item's id (kept in ``answer``) and names it again,
    ``queueItemId``, in its ``txack`` and ``ack`` events. The Things Stack's push answers no id,
    so its reports stay device events only.
    """
    report = _REPORTS.get(event.type)
    item = event.data.get("queueItemId")
    if report is None or not isinstance(item, str) or not item:
        return 0
    status, after = report
    cur = await conn.execute(
        "UPDATE lorawan_downlinks SET status = %s WHERE device = %s"
        " AND network_server = 'chirpstack' AND answer->>'id' = %s AND status = ANY(%s)",
        (status, event.device, item, list(after)),
    )
    return cur.rowcount


def downlink_body(row: Row) -> dict[str, Any]:
    """The API body of a stored downlink."""
    return {
        "id": row["id"],
        "device": row["device"],
        "port": row["port"],
        "payload_hex": row["payload_hex"],
        "confirmed": row["confirmed"],
        "status": row["status"],
        "network_server": row["network_server"],
        "answer": None
        if row["answer_status"] is None
        else {"status": row["answer_status"], "body": row["answer"]},
        "requested": row["requested"].timestamp(),
    }


async def list_downlinks(conn: AsyncConnection[Row], device: str, *, limit: int = 100) -> list[Row]:
    """A device's downlinks, newest first."""
    cur = await conn.execute(
        "SELECT * FROM lorawan_downlinks WHERE device = %s ORDER BY id DESC LIMIT %s",
        (device, limit),
    )
    return await cur.fetchall()


async def _finish(
    conn: AsyncConnection[Row], row_id: int, status: str, answer: Answer | None
) -> Row:
    cur = await conn.execute(
        "UPDATE lorawan_downlinks SET status = %s, answer_status = %s, answer = %s"
        " WHERE id = %s RETURNING *",
        (
            status,
            None if answer is None else answer.status,
            None if answer is None else Jsonb(answer.body),
            row_id,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def queue_downlink(
    conn: AsyncConnection[Row],
    *,
    server: NetworkServer,
    kafka: Publisher,
    kafka_topic: str,
    device: str,
    downlink: Downlink,
    user_id: int,
) -> Row:
    """Store, push to the network server, record the answer; returns the stored row.

    Raises :class:`NetworkServerFailed` (the row is kept, ``failed``, with the answer).
    """
    requested = time.time()
    cur = await conn.execute(
        "INSERT INTO lorawan_downlinks (device, port, payload_hex, confirmed, network_server,"
        " requested_by) VALUES (%s, %s, %s, %s, %s, %s) RETURNING *",
        (device, downlink.port, downlink.payload_hex, downlink.confirmed, server.name, user_id),
    )
    stored = await cur.fetchone()
    assert stored is not None
    answer: Answer | None = None
    reason = ""
    try:
        answer = await server.push(device, downlink)
    except NetworkServerUnreachable as exc:
        reason = str(exc)
    ok = answer is not None and answer.ok
    row = await _finish(conn, stored["id"], "queued" if ok else "failed", answer)
    outcome: dict[str, Any] = {"status": row["status"], "network_server": server.name}
    if answer is not None:
        outcome["answer"] = answer.to_dict()
    if reason:
        outcome["reason"] = reason
    await record_command(
        kafka,
        kafka_topic,
        command_record(
            device=device,
            kind="downlink",
            payload={
                "id": row["id"],
                "port": downlink.port,
                "payload_hex": downlink.payload_hex,
                "confirmed": downlink.confirmed,
            },
            requested=requested,
            outcome=outcome,
        ),
    )
    if not ok:
        message = reason or f"the network server answered {answer.status if answer else '?'}"
        raise NetworkServerFailed(message, answer, row)
    return row


async def clear_downlinks(
    conn: AsyncConnection[Row],
    *,
    server: NetworkServer,
    kafka: Publisher,
    kafka_topic: str,
    device: str,
) -> int:
    """Flush the device's queue on the network server, then mark its queued rows ``cleared``.

    Returns how many stored downlinks were cleared; raises :class:`NetworkServerFailed`.
    """
    requested = time.time()
    try:
        answer = await server.clear(device)
    except NetworkServerUnreachable as exc:
        failed = {"status": "failed", "network_server": server.name, "reason": str(exc)}
        await _record_clear(kafka, kafka_topic, device, requested, failed)
        raise NetworkServerFailed(str(exc), None, None) from exc
    outcome: dict[str, Any] = {
        "status": "cleared" if answer.ok else "failed",
        "network_server": server.name,
        "answer": answer.to_dict(),
    }
    if not answer.ok:
        await _record_clear(kafka, kafka_topic, device, requested, outcome)
        raise NetworkServerFailed(f"the network server answered {answer.status}", answer, None)
    cur = await conn.execute(
        "UPDATE lorawan_downlinks SET status = 'cleared'"
        " WHERE device = %s AND status IN ('pending', 'queued')",
        (device,),
    )
    outcome["cleared"] = cur.rowcount
    await _record_clear(kafka, kafka_topic, device, requested, outcome)
    return cur.rowcount


async def _record_clear(
    kafka: Publisher, topic: str, device: str, requested: float, outcome: dict[str, Any]
) -> None:
    await record_command(
        kafka,
        topic,
        command_record(
            device=device, kind="downlink_clear", payload={}, requested=requested, outcome=outcome
        ),
    )
