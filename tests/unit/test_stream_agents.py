"""The decode agent's reading of raw messages: nothing unreadable is dropped silently."""

from __future__ import annotations

import orjson

from services.events import UplinkEnvelope, dumps
from stream.agents import read_envelopes


def test_unreadable_values_become_dead_letters() -> None:
    good = UplinkEnvelope(source="sigfox", device="1A", received=1.0, payload_hex="01")
    envelopes, bad = read_envelopes([dumps(good.to_dict()), b"{not json", b'{"id": 1}'])
    assert envelopes == [good]
    assert len(bad) == 2
    first = orjson.loads(bad[0][1])
    assert first["raw"] == "{not json"
    assert first["error"].startswith("unreadable")
