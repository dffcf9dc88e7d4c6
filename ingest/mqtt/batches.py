"""What a batch of received MQTT messages becomes: journal entries for ``uplinks``, and
``dead-letter`` messages with their reasons (pure functions; the adapter publishes them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ingest.mqtt.bridge import Received
from services.platform import Message, UplinkEnvelope, dumps
from services.uplinks import (
    Rejected,
    dead_letter_message,
    envelope_fields,
    journal_entry,
    rejected,
)

#: A batch's ``uplinks`` messages with their envelope ids (for the journal), its
#: ``dead-letter`` messages, and why each dead letter.
Prepared = tuple[list[tuple[str, Message]], list[Message], list[str]]


def split_batch(
    parsed: Sequence[UplinkEnvelope | Rejected], problems: Mapping[str, str | None]
) -> Prepared:
    """Envelopes of devices that may send go to ``uplinks``; rejected messages, and those of
    devices with a problem (``unknown_device``, ``inactive_device``), to ``dead-letter``."""
    uplinks: list[tuple[str, Message]] = []
    dead: list[Message] = []
    reasons: list[str] = []
    for item in parsed:
        if isinstance(item, Rejected):
            dead.append((item.key, dumps(item.record)))
            reasons.append(item.reason)
        elif (problem := problems.get(item.device)) is not None:
            dead.append(dead_letter_message(item.device, envelope_fields(item), problem))
            reasons.append(problem)
        else:
            uplinks.append(journal_entry(item))
    return uplinks, dead, reasons


def kept_raw(batch: Sequence[Received], *, max_bytes: int) -> Prepared:
    """A batch that could not be prepared, kept raw on ``dead-letter`` (``internal_error``):
    the adapter never stalls on a message it cannot handle."""
    dead: list[Message] = []
    reasons: list[str] = []
    for r in batch:
        item = rejected(
            r.topic,
            r.payload,
            device=None,
            kind=None,
            received=r.received,
            reason="internal_error",
            detail="",
            max_bytes=max_bytes,
        )
        dead.append((item.key, dumps(item.record)))
        reasons.append(item.reason)
    return [], dead, reasons
