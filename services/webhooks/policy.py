"""What to do after a delivery attempt: classify the answer, schedule a retry, disable a webhook.

Pure functions of their inputs (time and randomness are parameters), used by the sender and by
the delivery worker that the lead wires to Kafka and the database.

Answers:

- 2xx: ``delivered``.
- 410 Gone: ``gone``; the receiver says the endpoint no longer exists: disable the webhook.
- 408, 429 and 5xx, timeouts, connection and TLS errors, failed DNS lookups: ``retry``, on
  :data:`DEFAULT_SCHEDULE` (about 22.7 hours in all) with jitter, never sooner than the answer's
  ``Retry-After``; then dead-letter.
- Anything else, 3xx (redirects are not followed) and the other 4xx included: ``failed``,
  dead-lettered without retry. A 400/401/403/404/422 says the receiver refuses this request or
  is misconfigured; sending the same signed body again would get the same answer, and hammering
  it for a day helps nobody. Such failures still count towards disabling the webhook.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from typing import Literal

Outcome = Literal["delivered", "retry", "gone", "failed"]
Action = Literal["done", "retry", "dead_letter", "disable"]

#: Delays (s) before the 2nd, 3rd, ... attempt: 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 3 h, 6 h,
#: 12 h. Ten attempts over about 22 h 45 min (±20 % jitter each).
DEFAULT_SCHEDULE: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600, 10800, 21600, 43200)
_RETRY_STATUSES = frozenset({408, 429})


def classify_status(status: int) -> Outcome:
    """The outcome of an HTTP answer's status code (see the module documentation)."""
    if 200 <= status < 300:
        return "delivered"
    if status == 410:
        return "gone"
    if status in _RETRY_STATUSES or 500 <= status < 600:
        return "retry"
    return "failed"


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    ``now`` is the current Unix time. A date in the past gives 0; an unreadable value gives
    ``None`` (ignored).
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT; "-0000" parses as naive
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry schedule: ``schedule[i]`` is the delay after the ``i+1``-th failed attempt.

    Each delay is spread by ``±jitter`` (a fraction) so that receivers coming back are not
    hit by every queued delivery at once; a ``Retry-After`` longer than the delay wins, up to
    ``max_retry_after``.
    """

    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    jitter: float = 0.2
    max_retry_after: float = 43_200.0

    @property
    def max_attempts(self) -> int:
        """Attempts in all, the first included."""
        return len(self.schedule) + 1


DEFAULT_RETRY_POLICY = RetryPolicy()


def retry_delay(
    failed_attempts: int,
    *,
    retry_after: float | None = None,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before the next attempt, or ``None`` when retries are exhausted.

    ``failed_attempts`` counts the attempts made so far, all failed (1 after the first).
    ``rand`` returns a float in [0, 1).
    """
    if failed_attempts < 1:
        raise ValueError("failed_attempts starts at 1")
    if failed_attempts > len(policy.schedule):
        return None
    base = policy.schedule[failed_attempts - 1]
    delay = base * (1 - policy.jitter + 2 * policy.jitter * rand())
    if retry_after is not None:
        delay = max(delay, min(retry_after, policy.max_retry_after))
    return delay


@dataclass(frozen=True, slots=True)
class NextStep:
    """What to do with a data point after an attempt; ``delay`` (s) is set for ``retry``."""

    action: Action
    delay: float | None = None


def next_step(
    outcome: Outcome,
    *,
    failed_attempts: int,
    retry_after: float | None = None,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    rand: Callable[[], float] = random.random,
) -> NextStep:
    """Map an attempt's outcome to an action.

    ``delivered`` -> ``done``; ``gone`` -> ``disable`` (the webhook; the point is dropped);
    ``failed`` -> ``dead_letter``; ``retry`` -> ``retry`` after :func:`retry_delay`, or
    ``dead_letter`` once the schedule is exhausted. ``failed_attempts`` includes this attempt.
    """
    if outcome == "delivered":
        return NextStep("done")
    if outcome == "gone":
        return NextStep("disable")
    if outcome == "failed":
        return NextStep("dead_letter")
    delay = retry_delay(failed_attempts, retry_after=retry_after, policy=policy, rand=rand)
    return NextStep("dead_letter") if delay is None else NextStep("retry", delay)


@dataclass(frozen=True, slots=True)
class DisablePolicy:
    """A webhook is disabled once it has failed without a single success for ``after``
    seconds (5 days) and over at least ``min_failures`` attempts (so that two failures days
    apart on a quiet device do not disable it)."""

    after: float = 5 * 86_400.0
    min_failures: int = 20


DEFAULT_DISABLE_POLICY = DisablePolicy()


@dataclass(frozen=True, slots=True)
class EndpointHealth:
    """A webhook's run of failures: what the database keeps per webhook."""

    consecutive_failures: int = 0
    failing_since: float | None = None

    def record(self, outcome: Outcome, *, now: float) -> EndpointHealth:
        """The health after one attempt at Unix time ``now``; a delivery resets it."""
        if outcome == "delivered":
            return EndpointHealth()
        return replace(
            self,
            consecutive_failures=self.consecutive_failures + 1,
            failing_since=now if self.failing_since is None else self.failing_since,
        )


def should_disable(
    health: EndpointHealth, *, now: float, policy: DisablePolicy = DEFAULT_DISABLE_POLICY
) -> bool:
    """Whether a long run of failures should disable the webhook (see :class:`DisablePolicy`).

    A ``gone`` answer disables at once, through :func:`next_step`.
    """
    return (
        health.failing_since is not None
        and now - health.failing_since >= policy.after
        and health.consecutive_failures >= policy.min_failures
    )
