"""ArrivalRate: the rate over the last one to two windows, and when a linger is worth it."""

from __future__ import annotations

from services.platform.arrivals import WORTH, ArrivalRate


def test_the_rate_covers_the_current_and_the_previous_window() -> None:
    rate = ArrivalRate(window=0.5)
    for i in range(50):  # 100 a second for half a second
        rate.arrived(10.0 + i * 0.01)
    rate.arrived(10.5, count=50)  # a new window
    assert rate.per_second() == 100.0
    assert rate.worth_lingering(0.04)  # 4 expected within 40 ms
    assert not rate.worth_lingering(0.02)
    assert not rate.worth_lingering(0.0)


def test_an_old_window_counts_as_empty() -> None:
    rate = ArrivalRate(window=0.5)
    rate.arrived(1.0, count=1000)
    rate.arrived(5.0)  # four seconds later: the thousand are history
    assert rate.per_second() == 1.0
    assert not rate.worth_lingering(1.0)


def test_a_first_arrival_is_not_worth_waiting_for() -> None:
    rate = ArrivalRate()
    rate.arrived(0.0)
    assert rate.per_second() * 0.04 < WORTH
    assert not rate.worth_lingering(0.04)
