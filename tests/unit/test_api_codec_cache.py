"""The API's cache of compiled codecs belongs to its context: each app has its own, and its
isolates are freed when the app stops (a module-wide cache keyed by ``id(ctx)`` kept every
isolate alive for the life of the process, and could hand a later app an earlier one's)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from api.codecs import _cache
from services.codecs import DeviceModel, compile_codec
from services.platform import Settings

SOURCE = "function decodeUplink(input) { return {data: {n: input.bytes.length}}; }"


def _context() -> Any:
    return SimpleNamespace(settings=Settings(), closers=[], codec_cache=None)


def _model() -> DeviceModel:
    return DeviceModel(
        account_id=1,
        id="m",
        network="lorawan",
        source=SOURCE,
        units={},
        variables={},
        version=1,
        functions=("decodeUplink",),
    )


def test_each_context_has_its_own_cache_closed_when_it_stops() -> None:
    first, second = _context(), _context()
    cache = _cache(first)
    assert _cache(first) is cache
    assert _cache(second) is not cache
    codec = compile_codec(SOURCE)
    cache.put((1, "m", 1), _model(), codec)
    assert codec._isolate is not None
    assert len(first.closers) == 1
    for close in first.closers:
        asyncio.run(close())
    assert codec._isolate is None  # freed at shutdown
