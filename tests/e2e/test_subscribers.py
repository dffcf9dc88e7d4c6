"""The subscribers of docs/topics.md, run as a subscriber would (their own process, their own
consumer group) against the pipeline on the embedded broker: an uplink's reading reaches them
within seconds, and matches docs/asyncapi.json."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.schemas import check_asyncapi
from tests.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
TOPICS_DOC = ROOT / "docs" / "topics.md"
#: From the subscriber's start to the reading: a group join (3 s with the examples' 6 s session
#: timeout; 22.5 s with the clients' default 45 s), the uplink's trip, and the process's start.
WITHIN = 12.0


def test_the_documented_code_is_the_examples_code() -> None:
    """Every Python block of docs/topics.md is (part of) an example file the tests run."""
    blocks = re.findall(r"```python\n(.*?)```", TOPICS_DOC.read_text(encoding="utf-8"), re.S)
    assert blocks
    sources = [path.read_text(encoding="utf-8") for path in EXAMPLES.glob("*.py")]
    for block in blocks:
        assert any(block in source for source in sources), block[:200]


async def _first_line(
    process: asyncio.subprocess.Process, device: str, deadline: float
) -> tuple[str, str]:
    assert process.stdout is not None
    while True:
        left = deadline - time.monotonic()
        line = await asyncio.wait_for(process.stdout.readline(), max(left, 0.01))
        assert line, "the subscriber stopped"
        key, value = line.decode().rstrip("\n").split("\t", 1)
        if key == device:
            return key, value


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGINT)  # KeyboardInterrupt: the example closes its consumer
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


@pytest.mark.parametrize("example", ["confluent_kafka_consumer", "kafka_python_consumer"])
async def test_a_documented_subscriber_gets_a_reading_within_seconds(
    stack: Stack, example: str
) -> None:
    device = f"5B{uuid.uuid4().hex[:6].upper()}"
    headers = {"X-API-Key": stack.api_key}
    created = await stack.client.post(
        "/v1/devices", json={"id": device, "model": "orbit-t"}, headers=headers
    )
    assert created.status_code == 201, created.text
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-u",
        str(EXAMPLES / f"{example}.py"),
        stack.settings.kafka or "",
        stack.settings.topic("readings"),
        f"subscriber-{uuid.uuid4().hex[:8]}",  # a new group, as a new subscriber is
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        uplink = {"device": device, "time": 1700000000, "data": "010f08fc0906", "seqNumber": 1}
        answer = await stack.client.post(
            "/callbacks/sigfox", json=uplink, headers={"X-Callback-Token": stack.token}
        )
        assert answer.status_code == 204, answer.text
        key, value = await _first_line(process, device, started + WITHIN)
        took = time.monotonic() - started
    finally:
        await _stop(process)
    assert took < WITHIN
    check_asyncapi("readings", key, value.encode())
    assert json.loads(value)["device"] == device
    print(f"{example}: first reading {took:.1f} s after the subscriber started")
