"""The worker's first journal replay takes the rows accepted before it joined its group."""

from __future__ import annotations

from stream.journal_replay import first_cutoff


def test_the_first_replay_takes_what_was_accepted_before_the_join() -> None:
    # Started at 100, joined at 112 (tansu: half a session), first tick at 117: a row
    # accepted at 110, acknowledged by a broker that had no topics yet, is replayed now.
    assert first_cutoff(0.0, now=117.0, process_started=100.0, joined=112.0) == 5.0


def test_before_the_join_it_is_the_process_start() -> None:
    assert first_cutoff(0.0, now=117.0, process_started=100.0, joined=None) == 17.0


def test_at_start_is_a_floor() -> None:
    assert first_cutoff(30.0, now=117.0, process_started=100.0, joined=112.0) == 30.0
