"""The sandbox of JavaScript codecs (``device-codecs.md``): one V8 isolate per compiled codec.

Why V8 through ``mini-racer`` rather than QuickJS: see docs/codecs.md, "The engine". In short,
an isolate is a separate heap with its own hard memory limit and a terminable execution, with no
file system, network, ``require`` or timers (the harness deletes mini-racer's ``setTimeout``);
V8 runs ES5 and every later edition; and re-running a 100 KB codec's top level for each uplink
costs microseconds, which is what gives each uplink a fresh codec at all.

Every call into an isolate crosses two threads (about 0.2 ms), so uplinks are decoded in
chunks: one call runs a chunk of uplinks one after the other, each with its own fresh codec
(``_sandbox.js``). A chunk has the time limit of *one* uplink; a chunk that exceeds it, or the
isolate's memory, is run again uplink by uplink, each with its own limit, so that only the
uplink at fault fails, with ``codec_timeout`` or ``codec_memory``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from py_mini_racer import (
    JSEvalException,
    JSOOMException,
    JSParseException,
    JSTimeoutException,
    MiniRacer,
    init_mini_racer,
    mini_racer,
)

#: The harness run in every isolate before the codec (``_sandbox.js``).
_HARNESS = (Path(__file__).parent / "_sandbox.js").read_text()
#: The functions a codec may define; a codec must define one that decodes uplinks.
UPLINK_FUNCTIONS = ("decodeUplink", "Decode", "Decoder")
CODEC_FUNCTIONS = (*UPLINK_FUNCTIONS, "normalizeUplink", "encodeDownlink", "decodeDownlink")
#: Uplinks run in one call into the isolate.
CHUNK = 128
#: After this many uplinks in a row that hit the time or memory limit, the rest of the same
#: call fail at once (``codec_timeout`` / ``codec_memory``) without running: a codec that loops
#: on every uplink costs a batch 3 time limits, not one per uplink.
GIVE_UP_AFTER = 3
#: The longest downlink payload (LoRaWAN, DR with the largest payload).
MAX_DOWNLINK_BYTES = 242

_LINE = re.compile(r"^undefined:(\d+):")


@dataclass(frozen=True, slots=True)
class CodecLimits:
    """What one codec may use: time per call, memory per isolate, source and output size."""

    timeout_ms: int = 50
    memory_bytes: int = 32 * 1024 * 1024
    max_source_bytes: int = 256 * 1024
    max_output_bytes: int = 64 * 1024


class CodecInvalid(ValueError):
    """A codec that cannot be registered: it does not compile, throws at its top level,
    defines no uplink function, or is too large. ``line`` is the source line, when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True, slots=True)
class CodecFailure:
    """Why a call failed: ``codec_timeout``, ``codec_memory``, ``codec_exception: <message>``,
    ``codec_result: <what>`` or ``codec_error: <the codec's errors>``."""

    reason: str
    line: int | None = None
    errors: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """The reason's class: ``codec_timeout``, ``codec_exception``, ..."""
        return self.reason.split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class UplinkInput:
    """One uplink handed to a codec: its bytes, FPort and receive time (Unix seconds)."""

    payload: bytes
    port: int
    received: float


@dataclass(frozen=True, slots=True)
class UplinkOutput:
    """What a codec made of one uplink: ``data``, the normalized payload (``None`` without
    ``normalizeUplink``) and the warnings of both."""

    data: dict[str, Any]
    normalized: dict[str, Any] | list[Any] | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DownlinkOutput:
    """What ``encodeDownlink`` made of a downlink: the bytes and the FPort."""

    payload: bytes
    port: int
    warnings: tuple[str, ...] = ()


# --- The isolates' event loop ------------------------------------------------------------------

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


#: V8's flags: mini-racer's default, and no memory protection keys. On a CPU with them (PKU:
#: AMD EPYC, recent Xeons) V8 guards its tables with a key that threads started by Python do
#: not all hold, and creating an isolate on such a thread segfaulted (in
#: ``JSDispatchTable::PreAllocatedEntryNeedsInitialization``); the codecs' sandbox is the
#: isolate's own limits, not these keys.
V8_FLAGS = ("--single-threaded", "--no-memory-protection-keys")


def _engine_loop() -> asyncio.AbstractEventLoop:
    """The one event loop thread mini-racer talks to V8 through, shared by every isolate of the
    process (mini-racer would otherwise start a thread per isolate, or take over the caller's
    loop, where a time limit cannot be applied). V8 starts here, with :data:`V8_FLAGS`."""
    global _loop
    with _loop_lock:
        if _loop is None:
            init_mini_racer(flags=V8_FLAGS, ignore_duplicate_init=True)
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="codec-engine", daemon=True).start()
            _loop = loop
        return _loop


# --- A compiled codec --------------------------------------------------------------------------


#: Isolates are created and freed one at a time in the process. mini-racer does both through
#: process-wide state, with the GIL released; once (a CI run, 2026-12-07) the test process died
#: of a segfault in ``mr_init_context`` on a thread compiling a codec while other threads ran,
#: the garbage collector among them, which frees an isolate nobody closed on whichever thread
#: it runs.
_isolates_lock = threading.Lock()
#: Isolates dropped without close(): freed by the next thread that takes the lock. Not freed in
#: the finaliser itself: that may run on the engine's loop thread, which a thread holding the
#: lock (inside mini-racer) can be waiting for.
_orphans: list[contextlib.AbstractContextManager[MiniRacer]] = []


def _free_orphans() -> None:
    """Free the isolates dropped without close(); the caller holds :data:`_isolates_lock`."""
    while _orphans:
        closer = _orphans.pop()
        with contextlib.suppress(Exception):
            closer.__exit__(None, None, None)


@dataclass(eq=False)
class _Isolate:
    racer: MiniRacer
    closer: contextlib.AbstractContextManager[MiniRacer]
    closed: bool = False

    def close(self) -> None:
        """Free the isolate (once), under the process's isolate lock."""
        with _isolates_lock:
            _free_orphans()
            if self.closed:
                return
            self.closed = True
            with contextlib.suppress(Exception):
                self.closer.__exit__(None, None, None)

    def __del__(self) -> None:
        # Dropped without close() (an exception between its creation and its owner): parked
        # for the next thread that takes the lock. Keeping ``closer`` referenced also keeps
        # mini-racer's own finaliser from freeing it here.
        if not self.closed:
            self.closed = True
            _orphans.append(self.closer)


def _open_isolate(limits: CodecLimits) -> _Isolate:
    with _isolates_lock:
        _free_orphans()
        closer = mini_racer(event_loop=_engine_loop())
        isolate = _Isolate(closer.__enter__(), closer)
    isolate.racer.set_hard_memory_limit(limits.memory_bytes)
    isolate.racer.eval(_HARNESS, timeout_sec=1.0)
    return isolate


def _js_string(text: str) -> str:
    return orjson.dumps(text).decode()


def _line(message: str, source: str) -> int | None:
    found = _LINE.match(message)
    if found is None:
        return None
    # `new Function` puts two lines before the body; an error at its closing brace (a block
    # left open) is reported on the line after the source's last.
    return max(1, min(int(found[1]) - 2, source.count("\n") + 1))


def _first_line(message: str) -> str:
    """The engine's message without its location prefix and source excerpt."""
    for text in message.splitlines():
        if text.startswith(("undefined:", "<anonymous>:")) and ": " in text:
            return text.split(": ", 1)[1].strip()
    return message.strip().splitlines()[0] if message.strip() else "error"


@dataclass
class JsCodec:
    """A compiled codec in its own isolate. Thread-safe: calls are serialised."""

    source: str
    variables: dict[str, Any]
    limits: CodecLimits
    functions: frozenset[str]
    _isolate: _Isolate | None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def normalizes(self) -> bool:
        return "normalizeUplink" in self.functions

    @property
    def encodes(self) -> bool:
        return "encodeDownlink" in self.functions

    def close(self) -> None:
        """Free the isolate (later calls reopen one)."""
        with self._lock:
            if self._isolate is not None:
                self._isolate.close()
                self._isolate = None

    # --- calls ---

    def decode_uplinks(self, inputs: Sequence[UplinkInput]) -> list[UplinkOutput | CodecFailure]:
        """Decode each uplink with a fresh codec; one result per input, in order."""
        results: list[UplinkOutput | CodecFailure] = []
        hits: list[CodecFailure] = []  # the uplinks in a row that hit a limit
        with self._lock:
            for start in range(0, len(inputs), CHUNK):
                chunk = inputs[start : start + CHUNK]
                if len(hits) >= GIVE_UP_AFTER:
                    results.extend(CodecFailure(hits[-1].reason) for _ in chunk)
                    continue
                raw = self._call_chunk(chunk)
                if raw is not None:
                    results.extend(_uplink_result(item, self.normalizes) for item in raw)
                    hits.clear()
                    continue
                for one in chunk:  # the chunk hit a limit: each uplink on its own
                    if len(hits) >= GIVE_UP_AFTER:
                        results.append(CodecFailure(hits[-1].reason))
                        continue
                    outcome = self._call_one(one)
                    results.append(outcome)
                    if isinstance(outcome, CodecFailure) and outcome.kind in _LIMITS:
                        hits.append(outcome)
                    else:
                        hits.clear()
        return results

    def decode_uplink(self, one: UplinkInput) -> UplinkOutput | CodecFailure:
        """Decode one uplink (the test endpoint)."""
        return self.decode_uplinks([one])[0]

    def encode_downlink(self, data: dict[str, Any]) -> DownlinkOutput | CodecFailure:
        """``encodeDownlink({"data": data})``, checked: bytes 0..255 (at most 242), FPort 1..223."""
        with self._lock:
            raw = self._call("encode", orjson.dumps(data).decode())
        if isinstance(raw, CodecFailure):
            return raw
        return _downlink_result(raw)

    def decode_downlink(self, payload: bytes, port: int) -> dict[str, Any] | CodecFailure:
        """``decodeDownlink({"bytes", "fPort"})``'s ``data``, checked like an uplink's."""
        with self._lock:
            raw = self._call(
                "decodeDownlink", orjson.dumps({"bytes": list(payload), "fPort": port}).decode()
            )
        if isinstance(raw, CodecFailure):
            return raw
        result = _uplink_result(raw, normalizes=False)
        return result if isinstance(result, CodecFailure) else result.data

    # --- the isolate ---

    def _racer(self) -> MiniRacer:
        if self._isolate is None:
            self._isolate = _open_isolate(self.limits)
            self._isolate.racer.eval(
                f"__hivepipe.load({_js_string(self.source)}, "
                f"{_js_string(orjson.dumps(self.variables).decode())}, "
                f"{self.limits.max_output_bytes})",
                timeout_sec=1.0,
            )
        return self._isolate.racer

    def _reset(self) -> None:
        """After a memory failure the heap may be full: a new isolate."""
        if self._isolate is not None:
            self._isolate.close()
            self._isolate = None

    def _eval(self, code: str) -> Any:
        return self._racer().eval(code, timeout_sec=self.limits.timeout_ms / 1000)

    def _call_chunk(self, chunk: Sequence[UplinkInput]) -> list[Any] | None:
        """One call for the chunk; None when it hit the time or memory limit."""
        argument = orjson.dumps([_input_json(one) for one in chunk]).decode()
        try:
            text = self._eval(f"__hivepipe.decodeMany({_js_string(argument)})")
        except JSTimeoutException:
            self._after_timeout()
            return None
        except JSOOMException:
            self._reset()
            return None
        return list(orjson.loads(str(text)))

    def _call_one(self, one: UplinkInput) -> UplinkOutput | CodecFailure:
        argument = orjson.dumps([_input_json(one)]).decode()
        raw = self._call("decodeMany", argument)
        if isinstance(raw, CodecFailure):
            return raw
        return _uplink_result(raw[0], self.normalizes)

    def _call(self, function: str, argument: str) -> Any:
        try:
            text = self._eval(f"__hivepipe.{function}({_js_string(argument)})")
        except JSTimeoutException:
            self._after_timeout()
            return CodecFailure("codec_timeout")
        except JSOOMException:
            self._reset()
            return CodecFailure("codec_memory")
        except JSEvalException as exc:  # the harness itself failed: the codec broke it
            return CodecFailure(f"codec_exception: {_first_line(str(exc))}")
        return orjson.loads(str(text))

    def _after_timeout(self) -> None:
        """Put back the globals the interrupted call left (the harness could not)."""
        try:
            self._racer().eval("__hivepipe.restore()", timeout_sec=self.limits.timeout_ms / 1000)
        except JSEvalException:
            self._reset()


#: The failures of a limit (counted towards GIVE_UP_AFTER).
_LIMITS = frozenset({"codec_timeout", "codec_memory"})


def compile_codec(
    source: str, *, variables: dict[str, Any] | None = None, limits: CodecLimits | None = None
) -> JsCodec:
    """Compile ``source`` in a new isolate; raises :class:`CodecInvalid` (with the line) for a
    source too large, a syntax error, an exception or a time-out at its top level, or a codec
    without ``decodeUplink``, ``Decode`` or ``Decoder``."""
    limits = limits or CodecLimits()
    size = len(source.encode())
    if size > limits.max_source_bytes:
        raise CodecInvalid(f"the source is {size} bytes, more than {limits.max_source_bytes}")
    if "\x00" in source:
        raise CodecInvalid("the source contains a NUL character")
    isolate = _open_isolate(limits)
    try:
        names = isolate.racer.eval(
            f"__hivepipe.load({_js_string(source)}, "
            f"{_js_string(orjson.dumps(variables or {}).decode())}, {limits.max_output_bytes})",
            timeout_sec=max(limits.timeout_ms, 1000) / 1000,
        )
    except JSTimeoutException:
        isolate.close()
        raise CodecInvalid("the codec's top level did not finish in time") from None
    except JSOOMException:
        isolate.close()
        raise CodecInvalid("the codec's top level exceeded the memory limit") from None
    except (JSParseException, JSEvalException) as exc:
        isolate.close()
        message = str(exc)
        raise CodecInvalid(_first_line(message), _line(message, source)) from None
    functions = frozenset(orjson.loads(str(names)))
    if not functions & set(UPLINK_FUNCTIONS):
        isolate.close()
        raise CodecInvalid(
            "the codec defines none of decodeUplink(input), Decode(fPort, bytes, variables) "
            "or Decoder(bytes, port)"
        )
    return JsCodec(
        source=source,
        variables=dict(variables or {}),
        limits=limits,
        functions=functions,
        _isolate=isolate,
    )


# --- Checking what a codec returned ------------------------------------------------------------


def _input_json(one: UplinkInput) -> dict[str, Any]:
    return {"bytes": list(one.payload), "fPort": one.port, "recvTime": one.received * 1000}


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(str(item) for item in value)


def _errors(value: Any) -> tuple[str, ...]:
    return tuple(text for text in _strings(value) if text) or (
        ("error",) if isinstance(value, list) and value else ()
    )


def _exception(item: dict[str, Any]) -> CodecFailure:
    line = item.get("line")
    return CodecFailure(
        f"codec_exception: {item['e']}", line if isinstance(line, int) and line > 0 else None
    )


def _returned(item: Any, *, undefined: str, not_object: str) -> dict[str, Any] | CodecFailure:
    """The object a codec function returned (``item``: the sandbox's record of one call), or
    why there is none: its exception, an output over the limit, ``undefined`` (``undefined``
    is then the reason), not an object (``not_object``, with ``{kind}``), or the codec's own
    ``errors``."""
    if not isinstance(item, dict):
        return CodecFailure("codec_result: not an object")
    if "e" in item:
        return _exception(item)
    if "x" in item:
        return CodecFailure(f"codec_result: the output is too large ({item['x']} characters)")
    if item.get("u"):
        return CodecFailure(f"codec_result: {undefined}")
    result = item.get("r")
    if not isinstance(result, dict):
        return CodecFailure(f"codec_result: {not_object.format(kind=_kind(result))}")
    errors = _errors(result.get("errors"))
    if errors:
        return CodecFailure(f"codec_error: {'; '.join(errors)}", errors=errors)
    return result


def _uplink_result(item: Any, normalizes: bool) -> UplinkOutput | CodecFailure:
    result = _returned(
        item,
        undefined="the codec returned undefined",
        not_object="the codec returned {kind}, not an object",
    )
    if isinstance(result, CodecFailure):
        return result
    data = result.get("data", {})
    if not isinstance(data, dict):
        return CodecFailure(f"codec_result: data is {_kind(data)}, not an object")
    warnings = _strings(result.get("warnings"))
    normalized: dict[str, Any] | list[Any] | None = None
    if normalizes:
        norm = item.get("n")
        if not isinstance(norm, dict):
            return CodecFailure(f"codec_result: normalizeUplink returned {_kind(norm)}")
        errors = _errors(norm.get("errors"))
        if errors:
            return CodecFailure(f"codec_error: {'; '.join(errors)}", errors=errors)
        normalized = norm.get("data")
        if not isinstance(normalized, dict | list):
            return CodecFailure(
                f"codec_result: normalized data is {_kind(normalized)}, not an object or array"
            )
        warnings += _strings(norm.get("warnings"))
    return UplinkOutput(data=data, normalized=normalized, warnings=warnings)


def _downlink_result(item: Any) -> DownlinkOutput | CodecFailure:
    result = _returned(
        item,
        undefined="the codec has no encodeDownlink",
        not_object="encodeDownlink returned {kind}",
    )
    if isinstance(result, CodecFailure):
        return result
    raw, port = result.get("bytes"), result.get("fPort")
    if (
        not isinstance(raw, list)
        or not raw
        or len(raw) > MAX_DOWNLINK_BYTES
        or not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in raw)
    ):
        return CodecFailure(
            f"codec_result: bytes must be 1 to {MAX_DOWNLINK_BYTES} integers 0..255"
        )
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 223:
        return CodecFailure("codec_result: fPort must be an integer 1..223")
    return DownlinkOutput(bytes(raw), port, _strings(result.get("warnings")))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
