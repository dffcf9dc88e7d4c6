"""Delivery policy (status classes, retries, Retry-After, disabling), signing and the fake."""

from __future__ import annotations

import base64
from email.utils import formatdate

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.platform.events import DataPoint, dumps
from services.webhooks.fake_sender import FakeWebhookSender
from services.webhooks.model import DeliveryResult
from services.webhooks.policy import (
    DEFAULT_SCHEDULE,
    DisablePolicy,
    EndpointHealth,
    NextStep,
    Outcome,
    RetryPolicy,
    classify_status,
    next_step,
    parse_retry_after,
    retry_delay,
    should_disable,
)
from services.webhooks.ports import WebhookSender
from services.webhooks.signing import generate_secret, message_id, signed_headers

NOW = 1_700_000_000.0

# --- classification ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "delivered"),
        (201, "delivered"),
        (202, "delivered"),
        (204, "delivered"),
        (299, "delivered"),
        (410, "gone"),
        (429, "retry"),
        (408, "retry"),
        (500, "retry"),
        (502, "retry"),
        (503, "retry"),
        (504, "retry"),
        (599, "retry"),
        (301, "failed"),
        (302, "failed"),
        (307, "failed"),
        (308, "failed"),
        (400, "failed"),
        (401, "failed"),
        (403, "failed"),
        (404, "failed"),
        (405, "failed"),
        (413, "failed"),
        (422, "failed"),
        (100, "failed"),
        (600, "failed"),
    ],
)
def test_classify_status(status: int, outcome: Outcome) -> None:
    assert classify_status(status) == outcome


# --- Retry-After -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        (formatdate(NOW + 90, usegmt=True), 90.0),
        (formatdate(NOW - 90, usegmt=True), 0.0),  # in the past: now
        ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


# --- retry schedule ----------------------------------------------------------------------


def test_schedule_spans_about_a_day() -> None:
    assert DEFAULT_SCHEDULE[:3] == (5, 30, 120)
    assert list(DEFAULT_SCHEDULE) == sorted(DEFAULT_SCHEDULE)
    total = sum(DEFAULT_SCHEDULE)
    assert 20 * 3600 <= total <= 26 * 3600
    assert RetryPolicy().max_attempts == len(DEFAULT_SCHEDULE) + 1


@pytest.mark.parametrize("attempt", range(1, len(DEFAULT_SCHEDULE) + 1))
def test_delay_follows_schedule_with_bounded_jitter(attempt: int) -> None:
    base = DEFAULT_SCHEDULE[attempt - 1]
    low = retry_delay(attempt, rand=lambda: 0.0)
    mid = retry_delay(attempt, rand=lambda: 0.5)
    high = retry_delay(attempt, rand=lambda: 0.999999)
    assert low == pytest.approx(base * 0.8)
    assert mid == pytest.approx(base)
    assert high == pytest.approx(base * 1.2, rel=1e-5)


@given(st.integers(min_value=1, max_value=len(DEFAULT_SCHEDULE)), st.floats(0, 0.999999))
def test_jitter_stays_within_twenty_percent(attempt: int, r: float) -> None:
    delay = retry_delay(attempt, rand=lambda: r)
    assert delay is not None
    base = DEFAULT_SCHEDULE[attempt - 1]
    assert 0.8 * base <= delay <= 1.2 * base


def test_retries_exhausted_after_schedule() -> None:
    assert retry_delay(len(DEFAULT_SCHEDULE) + 1) is None
    with pytest.raises(ValueError, match="starts at 1"):
        retry_delay(0)


def test_retry_after_wins_when_longer_and_is_capped() -> None:
    assert retry_delay(1, retry_after=300, rand=lambda: 0.5) == 300
    assert retry_delay(5, retry_after=3, rand=lambda: 0.5) == 1800  # shorter: schedule wins
    policy = RetryPolicy(max_retry_after=3600)
    assert retry_delay(1, retry_after=86_400 * 30, policy=policy, rand=lambda: 0.5) == 3600


def test_custom_schedule() -> None:
    policy = RetryPolicy(schedule=(1, 2), jitter=0.0)
    assert [retry_delay(n, policy=policy) for n in (1, 2, 3)] == [1, 2, None]


# --- next step ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "attempts", "expected"),
    [
        ("delivered", 1, NextStep("done")),
        ("delivered", 7, NextStep("done")),
        ("gone", 1, NextStep("disable")),
        ("failed", 1, NextStep("dead_letter")),
        ("retry", 1, NextStep("retry", 5.0)),
        ("retry", 9, NextStep("retry", 43_200.0)),
        ("retry", 10, NextStep("dead_letter")),
    ],
)
def test_next_step(outcome: Outcome, attempts: int, expected: NextStep) -> None:
    assert next_step(outcome, failed_attempts=attempts, rand=lambda: 0.5) == expected


def test_next_step_honours_retry_after() -> None:
    assert next_step("retry", failed_attempts=1, retry_after=60, rand=lambda: 0.5).delay == 60


# --- disabling after a long run of failures ----------------------------------------------


def test_a_delivery_resets_the_run() -> None:
    health = EndpointHealth().record("retry", now=NOW).record("failed", now=NOW + 10)
    assert health == EndpointHealth(consecutive_failures=2, failing_since=NOW)
    assert health.record("delivered", now=NOW + 20) == EndpointHealth()


def test_disable_needs_both_duration_and_count() -> None:
    policy = DisablePolicy(after=5 * 86_400, min_failures=20)
    health = EndpointHealth()
    for i in range(19):
        health = health.record("retry", now=NOW + i * 3600)
    assert not should_disable(health, now=NOW + 6 * 86_400, policy=policy)  # 19 failures
    health = health.record("retry", now=NOW + 20 * 3600)
    assert health.consecutive_failures == 20
    assert not should_disable(health, now=NOW + 4 * 86_400, policy=policy)  # only 4 days
    assert should_disable(health, now=NOW + 5 * 86_400, policy=policy)
    assert not should_disable(EndpointHealth(), now=NOW, policy=policy)


def test_quiet_device_is_not_disabled_by_two_failures_days_apart() -> None:
    health = EndpointHealth().record("failed", now=NOW).record("failed", now=NOW + 6 * 86_400)
    assert not should_disable(health, now=NOW + 6 * 86_400)


# --- signing -----------------------------------------------------------------------------


def test_secret_is_standard_webhooks_form() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert generate_secret() != secret


def test_message_id_is_stable_and_distinct() -> None:
    a = message_id(webhook_id=7, device="1A2B3C", metric="temperature", time=1_700_000_000)
    assert a == message_id(webhook_id="7", device="1A2B3C", metric="temperature", time=1.7e9)
    assert a.startswith("msg_")
    assert len(a) == 36
    others = {
        message_id(webhook_id=8, device="1A2B3C", metric="temperature", time=1_700_000_000),
        message_id(webhook_id=7, device="1A2B3D", metric="temperature", time=1_700_000_000),
        message_id(webhook_id=7, device="1A2B3C", metric="humidity", time=1_700_000_000),
        message_id(webhook_id=7, device="1A2B3C", metric="temperature", time=1_700_000_001),
        message_id(webhook_id=7, device="1A2B3C", metric="temperature", time=1_700_000_000.5),
        # no ambiguity from the separator
        message_id(webhook_id="7\x1f1A2B3C", device="", metric="temperature", time=1_700_000_000),
    }
    assert a not in others
    assert len(others) == 6


def test_signed_headers_verify_with_standardwebhooks() -> None:
    secret = generate_secret()
    point = DataPoint("1A2B3C", 1_700_000_000, "temperature", 23.1, "°C")
    body = dumps(point.to_dict())
    msg = message_id(webhook_id=1, device="1A2B3C", metric="temperature", time=point.time)
    headers = signed_headers(secret=secret, msg_id=msg, body=body)
    assert headers["webhook-id"] == msg
    assert headers["content-type"] == "application/json"
    assert Webhook(secret).verify(body, headers) == point.to_dict()
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"23.1", b"99.9"), headers)


def test_signature_covers_the_attempt_timestamp() -> None:
    secret = generate_secret()
    old = signed_headers(secret=secret, msg_id="msg_x", body=b"{}", timestamp=int(NOW) - 3600)
    assert old["webhook-timestamp"] == str(int(NOW) - 3600)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(b"{}", old)


# --- the fake sender ---------------------------------------------------------------------


async def test_fake_sender_records_and_answers_in_order() -> None:
    retry = DeliveryResult("retry", 503, 1.0, "http: 503", retry_after=30.0)
    fake = FakeWebhookSender(answers=[retry])
    sender: WebhookSender = fake
    first = await sender.send("https://example.com/h", b"{}", {"webhook-id": "msg_1"})
    second = await sender.send("https://example.com/h", b"{}", {"webhook-id": "msg_1"})
    assert first is retry
    assert second.outcome == "delivered"
    assert [r.headers["webhook-id"] for r in fake.sent] == ["msg_1", "msg_1"]


async def test_fake_sender_answer_function() -> None:
    fake = FakeWebhookSender(
        answer=lambda req: DeliveryResult("gone" if "old" in req.url else "delivered", 200, 0.0)
    )
    assert (await fake.send("https://example.com/old", b"", {})).outcome == "gone"
    assert (await fake.send("https://example.com/new", b"", {})).outcome == "delivered"
