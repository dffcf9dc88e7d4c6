"""Webhooks end to end: a Sigfox callback in, signed POSTs out to a real receiver on 127.0.0.1.

The whole stack runs for real (the API on a port, the Faust worker as a child process, Kafka,
PostgreSQL); the receiver is an aiohttp server in this process whose answers depend on the path.
Retries run on a short schedule (``HIVEPIPE_WEBHOOK_RETRY_SCHEDULE``) so that each test takes
seconds.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from standardwebhooks import Webhook

from services.codecs import decode_uplink
from services.platform.events import TOPIC_DEAD_LETTER, UplinkEnvelope
from services.webhooks import message_id
from tests.api_support import Account, connect, make_account
from tests.servers import http_receiver
from tests.stack import (
    Stack,
    eventually,
    stack_in_new_schema,
    start_worker,
    stop_worker,
    wait_ready,
)

# --- The receiver ------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float


@dataclass
class Receiver:
    """Answers by path prefix: ``/ok`` 204, ``/flaky`` 500 the first time a webhook-id is seen
    then 200, ``/gone`` 410, ``/fail`` always 500, ``/busy`` always 503 with
    ``Retry-After: 1``, ``/down`` 503 with ``Retry-After`` while
    ``down`` is set (200 after), ``/missing`` 404."""

    port: int = 0
    requests: list[Received] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    down: bool = True
    retry_after: int = 4
    #: ``/hang`` requests get no answer until this is set (then 200).
    unhang: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, path: str, msg_id: str) -> tuple[int, dict[str, str]]:
        kind = path.split("/")[1]
        if kind == "ok":
            return 204, {}
        if kind == "flaky":
            first = msg_id not in self.seen
            self.seen.add(msg_id)
            return (500, {}) if first else (200, {})
        if kind == "gone":
            return 410, {}
        if kind == "fail":
            return 500, {}
        if kind == "busy":
            return 503, {"Retry-After": "1"}
        if kind == "down":
            return (503, {"Retry-After": str(self.retry_after)}) if self.down else (200, {})
        return 404, {}

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.path.startswith("/hang/"):
            await self.unhang.wait()
            status, headers = 200, {}
        else:
            status, headers = self.answer(request.path, request.headers.get("webhook-id", ""))
        self.requests.append(
            Received(
                request.path,
                {k.lower(): v for k, v in request.headers.items()},
                body,
                status,
                time.time(),
            )
        )
        return web.Response(status=status, headers=headers)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()
    async with http_receiver(state.handle) as port:
        state.port = port
        yield state


# --- The stack ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def stack(
    pg_server: str, kafka_server: str, mqtt_server: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """The pipeline with webhooks to 127.0.0.0/8 over http, and retries in seconds."""
    async with stack_in_new_schema(
        pg_server,
        kafka=kafka_server,
        mqtt_url=mqtt_server,
        prefix=f"w{uuid.uuid4().hex[:10]}.",
        data_dir=Path(tmp_path_factory.mktemp("webhooks")),
        webhook_allowed_cidrs="127.0.0.0/8",
        webhook_allow_http=True,
        webhook_retry_schedule="0.2,0.5,1,1",
        webhook_retry_poll_interval=0.1,
        webhook_retry_lease=3.0,
        webhook_disable_after=1.5,
        webhook_disable_min_failures=6,
    ) as running:
        first = running.worker
        try:
            yield running
        finally:
            # run_stack stops the worker it started; a test may have replaced it.
            if running.worker is not None and running.worker is not first:
                stop_worker(running.worker)


@pytest.fixture(scope="module")
async def owner(stack: Stack) -> Account:
    """A normal user (not an integrator) who owns the devices and manages their webhooks."""
    assert stack.settings.database_url
    return await make_account(stack.settings.database_url, f"owner-{uuid.uuid4().hex[:6]}")


_seq = iter(range(1, 1_000_000))


def frame(*temps: int) -> str:
    """An Orbit 0x01 frame: temperatures in 1/100 °C, oldest first, 15 min apart."""
    return "010f" + "".join(f"{t:04x}" for t in temps)


async def new_device(stack: Stack, owner: Account) -> str:
    device = f"{uuid.uuid4().int % 0xFFFFFF:06X}"
    created = await stack.client.post(
        "/v1/devices", json={"id": device, "model": "orbit-t"}, headers=owner.headers
    )
    assert created.status_code == 201, created.text
    return device


async def add_webhook(stack: Stack, owner: Account, device: str, url: str) -> dict[str, Any]:
    created = await stack.client.post(
        f"/v1/devices/{device}/webhooks", json={"url": url}, headers=owner.headers
    )
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    assert set(body) == {"id", "url", "secret"}
    return body


async def uplink(stack: Stack, device: str, data: str, when: int) -> list[dict[str, Any]]:
    """Post a Sigfox callback; returns the data points it carries, in frame order."""
    seq = next(_seq)
    answer = await stack.client.post(
        "/callbacks/sigfox",
        json={"device": device, "time": when, "data": data, "seqNumber": seq},
        headers={"X-Callback-Token": stack.token},
    )
    assert answer.status_code == 204, answer.text
    envelope = UplinkEnvelope(
        source="sigfox", device=device, received=float(when), payload_hex=data
    )
    return [p.to_dict() for p in decode_uplink("orbit-t", envelope).points]


async def webhook_state(stack: Stack, owner: Account, device: str, hook_id: int) -> dict[str, Any]:
    listing = await stack.client.get(f"/v1/devices/{device}/webhooks", headers=owner.headers)
    assert listing.status_code == 200, listing.text
    return next(w for w in listing.json()["webhooks"] if w["id"] == hook_id)


async def deliveries(stack: Stack, owner: Account, device: str, hook_id: int) -> list[Any]:
    answer = await stack.client.get(
        f"/v1/devices/{device}/webhooks/{hook_id}/deliveries", headers=owner.headers
    )
    assert answer.status_code == 200, answer.text
    return list(answer.json()["deliveries"])


async def dead_letters(
    stack: Stack, predicate: Any, *, want: int = 1, timeout: float = 15.0
) -> list[Any]:
    """Dead-letter messages matching ``predicate`` (at least ``want`` of them, or what came
    within ``timeout``), read from the topic's beginning ("latest" offsets are not trusted)."""
    consumer = AIOKafkaConsumer(
        stack.settings.topic(TOPIC_DEAD_LETTER),
        bootstrap_servers=stack.settings.kafka,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    found: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(found) < want:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    value = orjson.loads(record.value)
                    if predicate(value):
                        found.append(value)
    finally:
        await consumer.stop()
    return found


def verified(request: Received, secret: str) -> Any:
    """The request's data point, once its Standard Webhooks signature checks out."""
    return Webhook(secret).verify(request.body, request.headers)


# --- Managing webhooks --------------------------------------------------------------------------


async def test_only_the_owner_manages_webhooks_and_bad_urls_get_their_code(
    stack: Stack, owner: Account, receiver: Receiver
) -> None:
    device = await new_device(stack, owner)
    path = f"/v1/devices/{device}/webhooks"
    h = owner.headers

    # The stack's admin key is an integrator's: its own device is visible, but it cannot manage
    # webhooks; another tenant's device is 404 exactly like an unknown one.
    admin = {"X-API-Key": stack.api_key}
    own = await stack.client.post(
        "/v1/devices", json={"id": "ADD1", "model": "orbit-t"}, headers=admin
    )
    assert own.status_code == 201, own.text
    for method in ("GET", "POST"):
        answer = await stack.client.request(
            method, "/v1/devices/ADD1/webhooks", json={"url": f"{receiver.base}/ok"}, headers=admin
        )
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "integrator_webhooks_forbidden"
    stranger = await make_account(stack.settings.database_url or "", f"x-{uuid.uuid4().hex[:6]}")
    for who, target in (
        (stranger.headers, path),
        (h, "/v1/devices/ADD1/webhooks"),
        (h, "/v1/devices/FFFFFFF0/webhooks"),
    ):
        answer = await stack.client.post(target, json={"url": f"{receiver.base}/ok"}, headers=who)
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["code"] == "device_not_found"

    # Each refused URL: 422 with the rule's code.
    refused = {
        "ftp://127.0.0.1/x": "scheme_not_allowed",
        "http://user:pw@127.0.0.1/x": "credentials_not_allowed",
        "http://10.1.2.3/x": "address_not_allowed",
        "http://169.254.169.254/latest": "address_not_allowed",
        "http://[::1]/x": "address_not_allowed",
        "http://127.1/x": "ambiguous_ip",
        "http://2130706433/x": "ambiguous_ip",
        "http://127.0.0.1:99999/x": "invalid_port",
        "http://[::1%25eth0]/x": "invalid_host",
        "http://127.0.0.1/a b": "invalid_url",
        f"{receiver.base}/{'a' * 2100}": "url_too_long",
        "http://no-such-host.invalid/x": "host_not_found",
    }
    for url, code in refused.items():
        answer = await stack.client.post(path, json={"url": url}, headers=h)
        assert answer.status_code == 422, (url, answer.text)
        assert answer.json()["error"]["code"] == code, (url, answer.text)
    # Bad input is the contract's 422, never a 500.
    for raw in (
        b'{"url": 42}',
        b'{"url": "http://127.0.0.1/\\ud800"}',
        b'{"url": "\\u0000"}',
        b"{}",
    ):
        answer = await stack.client.post(
            path, content=raw, headers={**h, "Content-Type": "application/json"}
        )
        assert answer.status_code == 422, (raw, answer.text)
        assert set(answer.json()) == {"error"}

    # At most 5 per device (409), no duplicate URL (409); the URL comes back normalised.
    created = [await add_webhook(stack, owner, device, f"{receiver.base}/ok/{i}") for i in range(5)]
    assert created[0]["url"] == f"{receiver.base}/ok/0"
    assert all(c["secret"].startswith("whsec_") for c in created)
    sixth = await stack.client.post(path, json={"url": f"{receiver.base}/ok/5"}, headers=h)
    assert (sixth.status_code, sixth.json()["error"]["code"]) == (409, "too_many_webhooks")
    await stack.client.delete(f"{path}/{created[4]['id']}", headers=h)
    again = await stack.client.post(path, json={"url": f"{receiver.base}/ok/0"}, headers=h)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "webhook_exists")

    listing = await stack.client.get(path, headers=h)
    assert listing.status_code == 200
    hooks = listing.json()["webhooks"]
    assert [w["id"] for w in hooks] == [c["id"] for c in created[:4]]
    assert "secret" not in listing.text
    assert created[0]["secret"] not in listing.text
    assert hooks[0]["disabled"] is False
    assert hooks[0]["consecutive_failures"] == 0

    # Deleting: 204, then 404; ids that cannot exist are 404 too.
    gone = await stack.client.delete(f"{path}/{created[0]['id']}", headers=h)
    assert gone.status_code == 204
    for hook_id in (created[0]["id"], "abc", "99999999999999999999", "-1", "0"):
        answer = await stack.client.delete(f"{path}/{hook_id}", headers=h)
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["code"] == "webhook_not_found"
    # Another user cannot see or delete this device's webhooks.
    theirs = await stack.client.delete(f"{path}/{created[1]['id']}", headers=stranger.headers)
    assert theirs.status_code == 404
    assert len((await stack.client.get(path, headers=h)).json()["webhooks"]) == 3


# --- Delivering -----------------------------------------------------------------------------------


async def test_points_reach_the_receiver_signed_and_in_order(
    stack: Stack, owner: Account, receiver: Receiver
) -> None:
    device = await new_device(stack, owner)
    hook = await add_webhook(stack, owner, device, f"{receiver.base}/ok/{device}")
    expected: list[dict[str, Any]] = []
    for n in range(4):  # four uplinks of four points each, in quick succession
        temps = [2000 + 10 * n + k for k in range(4)]
        expected += await uplink(stack, device, frame(*temps), 1_700_000_000 + 3600 * n)

    async def all_points() -> list[Received] | None:
        got = receiver.at(f"/ok/{device}")
        return got if len(got) >= len(expected) else None

    got = await eventually(all_points, timeout=20)
    points = [verified(r, hook["secret"]) for r in got]
    assert points == expected  # every point once, in the device's order
    for request, point in zip(got, points, strict=True):
        assert request.headers["content-type"] == "application/json"
        assert request.headers["webhook-id"] == message_id(
            webhook_id=hook["id"], device=device, metric=point["metric"], time=point["time"]
        )
        assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    with pytest.raises(Exception, match="signature"):
        verified(got[0], "whsec_" + "A" * 43 + "=")

    async def recorded() -> list[Any] | None:
        rows = await deliveries(stack, owner, device, hook["id"])
        return rows if len(rows) == len(expected) else None

    rows = await eventually(recorded)
    assert {(r["outcome"], r["result"], r["status"], r["attempt"]) for r in rows} == {
        ("delivered", "delivered", 204, 1)
    }

    # Redelivery: the same point again, with the same webhook-id, signed anew.
    again = await stack.client.post(
        f"/v1/devices/{device}/webhooks/{hook['id']}/deliveries/{rows[0]['id']}/redeliver",
        headers=owner.headers,
    )
    assert again.status_code == 202, again.text
    assert again.json()["message_id"] == rows[0]["message_id"]
    resent = await eventually(
        lambda: _async(len(receiver.at(f"/ok/{device}")) > len(expected) or None)
    )
    assert resent
    last = receiver.at(f"/ok/{device}")[-1]
    assert last.headers["webhook-id"] == rows[0]["message_id"]
    verified(last, hook["secret"])
    missing = await stack.client.post(
        f"/v1/devices/{device}/webhooks/{hook['id']}/deliveries/999999999/redeliver",
        headers=owner.headers,
    )
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "delivery_not_found")

    # Usage counts the deliveries of the owner.
    async def usage_counted() -> int | None:
        answer = await stack.client.get("/v1/usage", headers=owner.headers)
        total = sum(day["deliveries"] for day in answer.json().get("usage", []))
        return total if total >= len(expected) + 1 else None

    await eventually(usage_counted, timeout=10)


async def _async(value: Any) -> Any:
    return value


async def test_a_device_deleted_and_registered_by_another_tenant_feeds_only_the_new_owner(
    stack: Stack, owner: Account, receiver: Receiver
) -> None:
    """Issue #19: the worker cached the device's webhooks for 5 s, so the new owner's points
    went to the former owner's receiver, signed with the former owner's secret."""
    device = await new_device(stack, owner)
    await add_webhook(stack, owner, device, f"{receiver.base}/ok/old-{device}")
    first = await uplink(stack, device, frame(2001), 1_700_000_000)
    await eventually(
        lambda: _async(len(receiver.at(f"/ok/old-{device}")) >= len(first) or None), timeout=15
    )
    # At once, well within the worker's cache TTL: deleted, registered by another tenant.
    gone = await stack.client.delete(f"/v1/devices/{device}", headers=owner.headers)
    assert gone.status_code == 204, gone.text
    assert stack.settings.database_url
    other = await make_account(stack.settings.database_url, f"new-{uuid.uuid4().hex[:6]}")
    again = await stack.client.post(
        "/v1/devices", json={"id": device, "model": "orbit-t"}, headers=other.headers
    )
    assert again.status_code == 201, again.text
    hook = await add_webhook(stack, other, device, f"{receiver.base}/ok/new-{device}")
    second = await uplink(stack, device, frame(2002), 1_700_003_600)
    got = await eventually(lambda: _async(receiver.at(f"/ok/new-{device}") or None), timeout=15)
    assert [verified(r, hook["secret"]) for r in got] == second
    await asyncio.sleep(0.5)
    assert len(receiver.at(f"/ok/old-{device}")) == len(first)


async def test_a_hanging_receiver_holds_up_no_other(
    stack: Stack, owner: Account, receiver: Receiver
) -> None:
    hanging = await new_device(stack, owner)
    await add_webhook(stack, owner, hanging, f"{receiver.base}/hang/{hanging}")
    fast = await new_device(stack, owner)
    await add_webhook(stack, owner, fast, f"{receiver.base}/ok/{fast}")
    try:
        expected = set()
        for n in range(12):  # the device of the receiver that does not answer keeps sending
            points = await uplink(stack, hanging, frame(2000 + n), 1_700_000_000 + 900 * n)
            expected |= {(p["metric"], p["time"]) for p in points}
            await asyncio.sleep(0.1)
        started = time.time()
        await uplink(stack, fast, frame(2100), 1_700_000_000)
        [got] = await eventually(lambda: _async(receiver.at(f"/ok/{fast}") or None), timeout=30)
        # Before: the agent's batches all waited behind the hanging requests until the sender's
        # 10 s timeout. Now a batch waits HIVEPIPE_WEBHOOK_LANE_WAIT (0.25 s) at most for them.
        assert got.at - started < 5.0
    finally:
        receiver.unhang.set()

    async def all_delivered() -> set[tuple[str, float]] | None:
        done = {
            (value["metric"], value["time"])
            for r in receiver.at(f"/hang/{hanging}")
            if r.status == 200 and (value := orjson.loads(r.body))
        }
        return done if done >= expected else None

    assert await eventually(all_delivered, timeout=30) == expected  # nothing lost on the way


async def test_a_500_is_retried_then_delivered(
    stack: Stack, owner: Account, receiver: Receiver
) -> None:
    device = await new_device(stack, owner)
    hook = await add_webhook(stack, owner, device, f"{receiver.base}/flaky/{device}")
    [point] = await uplink(stack, device, frame(2222), 1_700_000_000)

    async def answered_200() -> list[Received] | None:
        got = receiver.at(f"/flaky/{device}")
        return got if any(r.status == 200 for r in got) else None

    got = await eventually(answered_200, timeout=15)
    assert [r.status for r in got] == [500, 200]
    assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
    assert verified(got[1], hook["secret"]) == point  # signed again for the retry
    assert got[1].at - got[0].at >= 0.15  # the schedule's first delay (0.2 s ± 20 %)

    async def settled() -> list[Any] | None:
        rows = await deliveries(stack, owner, device, hook["id"])
        return rows if len(rows) == 2 else None

    newest, oldest = await eventually(settled)
    assert (oldest["attempt"], oldest["outcome"], oldest["result"], oldest["status"]) == (
        1,
        "retry",
        "retrying",
        500,
    )
    assert (newest["attempt"], newest["outcome"], newest["status"]) == (2, "delivered", 200)
    state = await webhook_state(stack, owner, device, hook["id"])
    assert state["disabled"] is False
    assert state["consecutive_failures"] == 0
    assert state["failures"] == 1
    assert state["pending_retries"] == 0


async def test_a_410_disables_the_webhook(stack: Stack, owner: Account, receiver: Receiver) -> None:
    device = await new_device(stack, owner)
    hook = await add_webhook(stack, owner, device, f"{receiver.base}/gone/{device}")
    control = await add_webhook(stack, owner, device, f"{receiver.base}/ok/{device}")
    await uplink(stack, device, frame(2100, 2101), 1_700_000_000)

    async def disabled() -> dict[str, Any] | None:
        state = await webhook_state(stack, owner, device, hook["id"])
        return state if state["disabled"] else None

    state = await eventually(disabled, timeout=15)
    assert "410" in state["disabled_reason"]
    assert len(receiver.at(f"/gone/{device}")) == 1  # the point after it was not sent
    # Later points go to the other webhook only.
    await uplink(stack, device, frame(2102), 1_700_003_600)
    await eventually(lambda: _async(len(receiver.at(f"/ok/{device}")) == 3 or None))
    await asyncio.sleep(0.3)  # a request to the disabled webhook would have come by now
    assert len(receiver.at(f"/gone/{device}")) == 1
    assert (await webhook_state(stack, owner, device, control["id"]))["disabled"] is False
    rows = await eventually(lambda: deliveries(stack, owner, device, hook["id"]))
    assert [(r["outcome"], r["result"], r["status"]) for r in rows] == [("gone", "disabled", 410)]
    redeliver = await stack.client.post(
        f"/v1/devices/{device}/webhooks/{hook['id']}/deliveries/{rows[0]['id']}/redeliver",
        headers=owner.headers,
    )
    assert (redeliver.status_code, redeliver.json()["error"]["code"]) == (409, "webhook_disabled")


async def test_retries_run_out_into_the_dead_letter_topic(
    stack: Stack, owner: Account, receiver: Receiver
) -> None:
    device = await new_device(stack, owner)
    hook = await add_webhook(stack, owner, device, f"{receiver.base}/fail/{device}")
    missing = await add_webhook(stack, owner, device, f"{receiver.base}/missing/{device}")
    [point] = await uplink(stack, device, frame(2300), 1_700_000_000)

    async def dead() -> list[Any] | None:
        rows = await deliveries(stack, owner, device, hook["id"])
        return rows if rows and rows[0]["result"] == "dead" else None

    rows = await eventually(dead, timeout=20)
    assert [r["attempt"] for r in rows] == [5, 4, 3, 2, 1]  # the schedule has 4 delays
    assert all(r["status"] == 500 for r in rows)
    assert [r["result"] for r in rows] == ["dead"] + ["retrying"] * 4
    assert len(receiver.at(f"/fail/{device}")) == 5
    # A 404 is not retried: dead at once.
    [only] = await eventually(lambda: deliveries(stack, owner, device, missing["id"]))
    assert (only["outcome"], only["result"], only["status"]) == ("failed", "dead", 404)

    letters = await dead_letters(stack, lambda v: v.get("device") == device, want=2)
    by_hook = {v["webhook"]: v for v in letters}
    assert by_hook[hook["id"]]["error"].startswith("webhook_retries_exhausted: http: 500")
    assert by_hook[hook["id"]]["point"] == point
    assert by_hook[hook["id"]]["attempts"] == 5
    assert by_hook[missing["id"]]["error"].startswith("webhook_failed: http: 404")
    state = await webhook_state(stack, owner, device, hook["id"])
    assert state["disabled"] is False  # 5 failures: fewer than the 6 that disable
    assert state["consecutive_failures"] == 5
    assert state["pending_retries"] == 0


async def test_a_long_run_of_failures_disables_the_webhook(
    stack: Stack, owner: Account, receiver: Receiver
) -> None:
    device = await new_device(stack, owner)
    # 503 + Retry-After: 1 s: attempts a second apart, so the 1.5 s of failures that disable
    # (with 6 failed attempts) come while each point still has attempts left.
    hook = await add_webhook(stack, owner, device, f"{receiver.base}/busy/{device}")
    await uplink(stack, device, frame(2400, 2401, 2402, 2403), 1_700_000_000)

    async def disabled() -> dict[str, Any] | None:
        state = await webhook_state(stack, owner, device, hook["id"])
        return state if state["disabled"] else None

    state = await eventually(disabled, timeout=20)
    assert state["disabled_reason"].startswith("failing: no successful delivery since")
    assert "http: 503" in state["disabled_reason"]
    assert state["consecutive_failures"] >= 6
    # What was still queued is dead-lettered, not silently dropped.
    letters = await dead_letters(
        stack,
        lambda v: v.get("webhook") == hook["id"] and v["error"].startswith("webhook_disabled"),
    )
    assert letters
    assert letters[0]["error"].startswith("webhook_disabled: webhook disabled (failing")

    async def drained() -> dict[str, Any] | None:
        current = await webhook_state(stack, owner, device, hook["id"])
        return current if current["pending_retries"] == 0 else None

    await eventually(drained, timeout=10)
    sent = len(receiver.at(f"/busy/{device}"))
    await asyncio.sleep(1.5)
    assert len(receiver.at(f"/busy/{device}")) == sent  # nothing more is sent


# --- Surviving a crash ----------------------------------------------------------------------------


async def test_a_retry_survives_the_worker_being_killed(
    stack: Stack, owner: Account, receiver: Receiver
) -> None:
    """Runs last in the module: it replaces the stack's worker."""
    assert stack.worker is not None
    assert stack.settings.database_url
    device = await new_device(stack, owner)
    hook = await add_webhook(stack, owner, device, f"{receiver.base}/down/{device}")
    receiver.down, receiver.retry_after = True, 4
    [point] = await uplink(stack, device, frame(2500), 1_700_000_000)

    async def scheduled() -> dict[str, Any] | None:
        async with await connect(stack.settings.database_url or "") as conn:
            cur = await conn.execute(
                "SELECT attempts, due_at > now() + interval '1 second' AS later"
                " FROM webhook_retries WHERE webhook_id = %s",
                (hook["id"],),
            )
            row = await cur.fetchone()
        return row if row and row["attempts"] == 1 and row["later"] else None

    await eventually(scheduled, timeout=15)
    await asyncio.sleep(1.2)  # the stored message's offset is committed (1 s interval)
    assert await scheduled(), "the retry must still be waiting when the worker dies"
    stack.worker.kill()  # SIGKILL: no shutdown, nothing flushed
    stack.worker.wait()
    receiver.down = False
    worker = start_worker(stack.settings)
    stack.worker = worker
    await wait_ready(stack.settings, worker)

    async def delivered() -> list[Received] | None:
        got = [r for r in receiver.at(f"/down/{device}") if r.status == 200]
        return got or None

    [ok] = await eventually(delivered, timeout=30)
    assert verified(ok, hook["secret"]) == point

    async def recorded() -> list[Any] | None:  # the attempts are written in bulk, soon after
        rows = await deliveries(stack, owner, device, hook["id"])
        return rows if rows and rows[0]["outcome"] == "delivered" else None

    rows = await eventually(recorded)
    # Delivered by the new worker, from the retry queue: the second attempt.
    assert (rows[0]["attempt"], rows[0]["outcome"]) == (2, "delivered")
    assert rows[-1]["status"] == 503
    state = await webhook_state(stack, owner, device, hook["id"])
    assert state["pending_retries"] == 0
    assert state["consecutive_failures"] == 0
