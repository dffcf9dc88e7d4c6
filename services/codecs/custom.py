"""Decoding the uplinks of devices whose model is one of their account's own (a JavaScript
codec): the process's cache of compiled codecs, and one batch's decoding.

The worker reads the model version of the batch's devices with every batch
(:func:`~services.codecs.model_store.model_versions`, one query) and compiles a version it has
not seen, so a ``PUT /v1/models/{id}`` is used by every worker from its next batch on. The
codecs run in a thread: the worker's event loop goes on while a codec runs (at most
``GIVE_UP_AFTER`` time limits per model and batch).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from psycopg import AsyncConnection

from services.codecs.base import Decoded, DecodeError
from services.codecs.flattening import flatten_points
from services.codecs.javascript import (
    CodecFailure,
    CodecInvalid,
    CodecLimits,
    JsCodec,
    UplinkInput,
    UplinkOutput,
    compile_codec,
)
from services.codecs.model_store import (
    DeviceModel,
    HealthChange,
    ModelVersion,
    model_source,
    model_versions,
    note_health,
)
from services.codecs.registry import CODECS, decode_uplink
from services.platform import DeviceEvent, UplinkEnvelope

Row = dict[str, Any]
#: (account, model id, version): what a compiled codec is cached under.
CodecKey = tuple[int, str, int]


class _Device(Protocol):
    @property
    def model(self) -> str: ...

    @property
    def active(self) -> bool: ...


@dataclass
class CodecCache:
    """The compiled codecs of one process, per (account, model, version); the least recently
    used are closed beyond ``size``."""

    limits: CodecLimits = field(default_factory=CodecLimits)
    size: int = 256
    _codecs: OrderedDict[CodecKey, tuple[DeviceModel, JsCodec | CodecInvalid]] = field(
        default_factory=OrderedDict
    )

    def get(self, key: CodecKey) -> tuple[DeviceModel, JsCodec | CodecInvalid] | None:
        found = self._codecs.get(key)
        if found is not None:
            self._codecs.move_to_end(key)
        return found

    def put(self, key: CodecKey, model: DeviceModel, codec: JsCodec | CodecInvalid) -> None:
        # Older versions of the same model are of no more use.
        for old in [k for k in self._codecs if k[:2] == key[:2] and k != key]:
            self._drop(old)
        self._codecs[key] = (model, codec)
        while len(self._codecs) > self.size:
            self._drop(next(iter(self._codecs)))

    def _drop(self, key: CodecKey) -> None:
        _, codec = self._codecs.pop(key)
        if isinstance(codec, JsCodec):
            codec.close()

    def close(self) -> None:
        for key in list(self._codecs):
            self._drop(key)


def uplink_input(envelope: UplinkEnvelope) -> UplinkInput:
    """What a codec sees of an uplink: the payload's bytes (an MQTT JSON payload as its UTF-8
    JSON text), the LoRaWAN FPort (1 for networks without ports) and the receive time."""
    if envelope.payload_hex is not None:
        try:
            payload = bytes.fromhex(envelope.payload_hex)
        except (ValueError, TypeError):
            raise DecodeError(f"payload is not hex: {str(envelope.payload_hex)[:32]!r}") from None
    elif envelope.payload_json is not None:
        payload = orjson.dumps(envelope.payload_json)
    else:
        raise DecodeError("empty payload")
    port = envelope.meta.get("f_port")
    return UplinkInput(payload, port if isinstance(port, int) else 1, envelope.received)


def decoded_of(envelope: UplinkEnvelope, output: UplinkOutput, units: Mapping[str, str]) -> Decoded:
    """The points, the ``decoded`` event and the latest state of one decoded uplink."""
    points = flatten_points(
        envelope.device, envelope.received, output.data, output.normalized, units
    )
    event = DeviceEvent(
        envelope.device,
        envelope.received,
        "decoded",
        {
            "data": output.data,
            "normalized": output.normalized,
            "warnings": list(output.warnings),
            "uplink": envelope.id,
        },
    )
    return Decoded(points=points, events=(event,), state=output.data)


@dataclass
class CustomDecodes:
    """One batch's uplinks of custom-model devices, decoded; built-in models pass through."""

    results: dict[str, Decoded | DecodeError] = field(default_factory=dict)
    health: list[HealthChange] = field(default_factory=list)

    def decode(self, model: str, envelope: UplinkEnvelope) -> Decoded:
        """The uplink's decoding: a custom model's from this batch, a built-in model's now."""
        found = self.results.get(envelope.id)
        if found is None:
            return decode_uplink(model, envelope)
        if isinstance(found, DecodeError):
            raise found
        return found

    async def note_health(self, conn: AsyncConnection[Row]) -> None:
        """Record the models that started or stopped failing, and the last error."""
        await note_health(conn, self.health)


async def _codec(
    conn: AsyncConnection[Row], cache: CodecCache, version: ModelVersion
) -> tuple[DeviceModel, JsCodec | CodecInvalid] | None:
    key = (version.account_id, version.id, version.version)
    found = cache.get(key)
    if found is not None:
        return found
    model = await model_source(conn, *key)
    if model is None:  # replaced since the versions were read: the next batch compiles it
        return None
    try:
        codec: JsCodec | CodecInvalid = await asyncio.to_thread(
            compile_codec, model.source, variables=model.variables, limits=cache.limits
        )
    except CodecInvalid as exc:  # stored before a stricter check: every uplink fails
        codec = exc
    cache.put(key, model, codec)
    return model, codec


async def decode_custom(
    conn: AsyncConnection[Row],
    envelopes: Sequence[UplinkEnvelope],
    devices: Mapping[str, _Device | None],
    cache: CodecCache,
) -> CustomDecodes:
    """Decode the uplinks of active devices of custom models (each model's uplinks in one go)."""
    decodes = CustomDecodes()
    custom = [
        env
        for env in envelopes
        if (info := devices.get(env.device)) is not None
        and info.active
        and info.model not in CODECS
    ]
    if not custom:
        return decodes
    versions = await model_versions(conn, list({env.device for env in custom}))
    groups: dict[CodecKey, list[UplinkEnvelope]] = {}
    for env in custom:
        version = versions.get(env.device)
        if version is None:
            model = devices[env.device].model  # type: ignore[union-attr]
            decodes.results[env.id] = DecodeError(f"no codec for device model {model!r}")
            continue
        groups.setdefault((version.account_id, version.id, version.version), []).append(env)
    failing = {(v.account_id, v.id, v.version): v.failing_since for v in versions.values()}
    for key, group in groups.items():
        loaded = await _codec(conn, cache, ModelVersion(*key, failing_since=None))
        if loaded is None:
            for env in group:
                decodes.results[env.id] = DecodeError("codec_changed: decoded again later")
            continue
        model, codec = loaded
        outcomes = await _run(codec, group)
        for env, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, UplinkOutput):
                decodes.results[env.id] = decoded_of(env, outcome, model.units)
            else:
                decodes.results[env.id] = outcome
        change = _health(key, failing.get(key), group, outcomes)
        if change is not None:
            decodes.health.append(change)
    return decodes


async def _run(
    codec: JsCodec | CodecInvalid, group: list[UplinkEnvelope]
) -> list[UplinkOutput | DecodeError]:
    if isinstance(codec, CodecInvalid):
        return [DecodeError(f"codec_invalid: {codec.message}") for _ in group]
    outcomes: list[UplinkOutput | DecodeError] = [DecodeError("") for _ in group]
    inputs: list[UplinkInput] = []
    positions: list[int] = []
    for index, env in enumerate(group):
        try:
            inputs.append(uplink_input(env))
            positions.append(index)
        except DecodeError as exc:
            outcomes[index] = exc
    results = await asyncio.to_thread(codec.decode_uplinks, inputs)
    for index, result in zip(positions, results, strict=True):
        outcomes[index] = (
            DecodeError(_reason(result)) if isinstance(result, CodecFailure) else result
        )
    return outcomes


def _reason(failure: CodecFailure) -> str:
    if failure.line is not None:
        return f"{failure.reason} (line {failure.line})"
    return failure.reason


def _health(
    key: CodecKey,
    failing_since: float | None,
    group: list[UplinkEnvelope],
    outcomes: list[UplinkOutput | DecodeError],
) -> HealthChange | None:
    """A change of the model's health to record: it decoded (and was failing), or it failed on
    every uplink of the batch."""
    errors = [o for o in outcomes if isinstance(o, DecodeError)]
    now = time.time()
    if len(errors) < len(outcomes):
        if failing_since is None:
            return None
        return HealthChange(*key, failing_since=None, last_error=None, at=now)
    first = min(env.received for env in group)
    return HealthChange(
        *key, failing_since=failing_since or first, last_error=errors[-1].reason, at=now
    )
