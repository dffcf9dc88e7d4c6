"""JavaScript codecs (issue #17): decodes per second through a typical vendor codec in one
process, and the end-to-end rate of a custom-codec device beside a built-in one.

``uv run python -m bench.codecs`` runs the section alone and prints its figures (it does not
write docs/benchmarks.md); ``make bench`` runs it as the ``codecs`` section.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psycopg

from bench.callbacks import Figures
from bench.env import Running
from services.codecs import UplinkInput, compile_codec, flatten_points

CODECS = Path(__file__).resolve().parents[1] / "tests" / "data" / "codecs"
#: A Milesight EM300-TH uplink (battery, temperature, humidity) and the LHT65's example.
EM300_TH = bytes([0x01, 0x75, 0x32, 0x03, 0x67, 0xC8, 0x00, 0x04, 0x68, 0x3C])
LHT65 = bytes([0xCB, 0xF6, 0x0B, 0x0D, 0x03, 0x76, 0x01, 0x0A, 0xDD, 0x7F, 0xFF])


def _library(kilobytes: int) -> str:
    """Bundled helpers and tables, as vendors ship them, of about ``kilobytes`` KB."""
    parts: list[str] = []
    i = 0
    while sum(len(p) for p in parts) < kilobytes * 1000:
        parts.append(
            f"var T{i} = [{','.join(str((i + j) % 256) for j in range(64))}];\n"
            f"function h{i}(b, o) {{ var v = 0; for (var k = 0; k < 4; k++)"
            f" {{ v = (v << 8) | (b[o + k] & 0xff); }} return (v ^ T{i}[o % 64]) >>> 0; }}\n"
        )
        i += 1
    return "".join(parts)


def decode_rates(seconds: float = 3.0, batch: int = 1000) -> dict[str, float]:
    """Decodes per second in this process, batches of ``batch`` uplinks as the worker sends
    them: the codec alone, and with the points made of each result."""
    milesight = (CODECS / "milesight-em300-th.js").read_text()
    lht65 = (CODECS / "dragino-lht65.js").read_text()
    rates: dict[str, float] = {}
    for name, source, payload, port in (
        ("milesight-em300-th (normalizeUplink)", milesight, EM300_TH, 1),
        ("dragino-lht65", lht65, LHT65, 2),
        ("dragino-lht65 + 100 KB bundled library", _library(100) + lht65, LHT65, 2),
    ):
        codec = compile_codec(source)
        inputs = [UplinkInput(payload, port, 1_700_000_000.0 + i) for i in range(batch)]
        codec.decode_uplinks(inputs)  # warm
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            for i, out in enumerate(codec.decode_uplinks(inputs)):
                flatten_points("D", inputs[i].received, out.data, out.normalized, {})  # type: ignore[union-attr]
            done += batch
        rates[name] = done / (time.perf_counter() - started)
        codec.close()
    return rates


async def _register(client: httpx.AsyncClient, key: str, model: str, n: int) -> list[str]:
    headers = {"X-API-Key": key}
    if model == "lht65-bench":
        source = (CODECS / "dragino-lht65.js").read_text()
        answer = await client.post(
            "/v1/models",
            json={"id": model, "network": "lorawan", "codec": {"source": source}},
            headers=headers,
        )
        assert answer.status_code in (201, 409), answer.text
    prefix = uuid.uuid4().hex[:6].upper()
    ids = [f"{prefix}{i:010X}" for i in range(n)]
    for device in ids:
        answer = await client.post(
            "/v1/devices", json={"id": device, "model": model}, headers=headers
        )
        assert answer.status_code == 201, answer.text
    return ids


async def _drive(
    run: Running, model: str, payload: bytes, port: int, n: int
) -> tuple[float, float]:
    """ChirpStack uplinks for ``n``/100 devices of ``model``, 100 each; uplinks and points
    stored per second from the first callback to the last point in PostgreSQL."""
    async with httpx.AsyncClient(base_url=run.base_url, timeout=30) as admin:
        ids = await _register(admin, run.api_key, model, max(1, n // 100))
    data = base64.b64encode(payload).decode()
    expected: int | None = None
    assert run.settings.database_url
    async with await psycopg.AsyncConnection.connect(
        run.settings.database_url, autocommit=True
    ) as conn:

        async def stored() -> int:
            cur = await conn.execute("SELECT count(*) FROM points WHERE device = ANY(%s)", (ids,))
            row = await cur.fetchone()
            return int(row[0]) if row else 0

        connector = aiohttp.TCPConnector(limit=64)
        sem = asyncio.Semaphore(64)
        async with aiohttp.ClientSession(base_url=run.base_url, connector=connector) as client:

            async def one(i: int) -> None:
                device = ids[i % len(ids)]
                body: dict[str, Any] = {
                    "deduplicationId": str(uuid.uuid4()),
                    "time": f"2023-11-14T{10 + i // 3600 % 10:02d}:{i // 60 % 60:02d}:"
                    f"{i % 60:02d}.{i % 1000:03d}+00:00",
                    "deviceInfo": {"devEui": device.lower(), "deviceName": device},
                    "fCnt": i,
                    "fPort": port,
                    "data": data,
                }
                async with sem:
                    async with client.post(
                        "/callbacks/chirpstack",
                        json=body,
                        params={"event": "up", "token": run.settings.token},
                    ) as answer:
                        assert answer.status == 204, await answer.text()

            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            while True:
                count = await stored()
                if expected is None and count:
                    # the points of one uplink: its metrics, once the first is stored
                    cur = await conn.execute(
                        "SELECT count(DISTINCT metric) FROM points WHERE device = ANY(%s)", (ids,)
                    )
                    row = await cur.fetchone()
                    expected = int(row[0]) * n if row else None
                if expected is not None and count >= expected:
                    elapsed = time.perf_counter() - started
                    return n / elapsed, count / elapsed
                if time.perf_counter() - started > 300:
                    raise TimeoutError(f"{count} of {expected} points stored")
                await asyncio.sleep(0.05)


def section_codecs(run: Running, n: int, figures: Figures) -> dict[str, float]:
    """The section's figures (added to ``figures``), also returned by name."""
    rates = decode_rates()
    for name, rate in rates.items():
        figures.add(
            f"decodes through a JavaScript codec in one process: {name}",
            f"{rate:,.0f} /s",
            "target ≥ 10,000/s",
        )
    builtin = asyncio.run(_drive(run, "lorawan-lpp", bytes.fromhex("03670110056700ff"), 1, n))
    custom = asyncio.run(_drive(run, "lht65-bench", LHT65, 2, n))
    figures.add(
        f"ChirpStack uplinks stored end to end, built-in lorawan-lpp ({n:,}, 2 points each)",
        f"{builtin[0]:,.0f} uplinks/s ({builtin[1]:,.0f} points/s)",
        "1",
    )
    figures.add(
        f"ChirpStack uplinks stored end to end, custom JavaScript codec dragino-lht65"
        f" ({n:,}, 6 points each)",
        f"{custom[0]:,.0f} uplinks/s ({custom[1]:,.0f} points/s)",
        f"{custom[0] / builtin[0]:.2f} × built-in (uplinks)",
    )
    return {**rates, "builtin": builtin[0], "custom": custom[0]}


def main() -> None:
    import argparse

    from bench.env import running_pipeline

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uplinks", type=int, default=2000)
    parser.add_argument("--decode-only", action="store_true")
    args = parser.parse_args()
    figures = Figures()
    if args.decode_only:
        for name, rate in decode_rates().items():
            print(f"{name}: {rate:,.0f} decodes/s")
        return
    with running_pipeline() as run:
        section_codecs(run, args.uplinks, figures)
    for name, value, ratio in figures.rows:
        print(f"{name}: {value}  ({ratio})")


if __name__ == "__main__":
    main()
