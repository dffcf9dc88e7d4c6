"""The Orbit pending queue: rules 1-5, downlink planning and frames, acks, time-outs, budget.

The stateful property test is in ``test_orbit_queue_stateful.py``.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.orbit import (
    DeviceConfig,
    Downlink,
    InvalidParam,
    Outcome,
    PendingUpdate,
    apply_ack,
    decode_downlink,
    delete_pending,
    downlinks_left_24h,
    encode_downlink,
    mark_sent,
    note_uplink,
    plan_downlink,
    register_updates,
    render_view,
)
from tests.samples import sample

T = 1700000000.0
DAY = 86400.0


def queued(config: DeviceConfig, now: float = T, **values: float) -> DeviceConfig:
    return register_updates(config, values, now)[0]


def kinds(outcomes: tuple[Outcome, ...]) -> list[tuple[str, str]]:
    return [(o.kind, o.param) for o in outcomes]


def statuses(config: DeviceConfig) -> list[tuple[str, int, str]]:
    return [(u.param, u.value_raw, u.status) for u in config.pending]


def send(config: DeviceConfig, now: float) -> tuple[DeviceConfig, Downlink]:
    downlink = plan_downlink(config, now)
    assert downlink is not None
    return mark_sent(config, downlink, now), downlink


def planned(config: DeviceConfig, now: float = T) -> list[str]:
    downlink = plan_downlink(config, now)
    return [] if downlink is None else [name for name, _ in downlink.updates]


# --- the spec's examples, byte for byte ------------------------------------------------------


def test_spec_downlink_example_seq_7() -> None:
    config = queued(replace(DeviceConfig.new("orbit-t"), seq=6), sample_interval=30, led=1)

    downlink = plan_downlink(config, T)

    assert downlink == Downlink(
        seq=7,
        updates=(("sample_interval", 30), ("led", 1)),
        frame=bytes.fromhex("a20701001e060001"),
    )
    assert downlink.frame_hex == "a20701001e060001"


def test_sample_answer_is_the_first_downlink_of_a_device() -> None:
    expected = sample("sigfox-downlink-answer.json")
    config = queued(DeviceConfig.new("orbit-t"), led=1, sample_interval=30)

    downlink = plan_downlink(config, T)

    assert downlink is not None
    assert {"1A2B3C": {"downlinkData": downlink.frame_hex}} == expected


def test_frames_are_padded_to_eight_bytes_and_decode_back() -> None:
    frame = encode_downlink(3, [("temp_low", -1000)])

    assert frame.hex() == "a103" + "04fc18" + "000000"
    assert decode_downlink(frame) == (3, (("temp_low", -1000),))
    assert decode_downlink(bytes.fromhex("a20701001e060001")) == (
        7,
        (("sample_interval", 30), ("led", 1)),
    )


@pytest.mark.parametrize(
    ("seq", "updates"), [(1, []), (1, [("led", 1)] * 3), (256, [("led", 1)]), (-1, [("led", 1)])]
)
def test_frames_refuse_what_does_not_fit(seq: int, updates: list[tuple[str, int]]) -> None:
    with pytest.raises(ValueError, match="downlink|seq"):
        encode_downlink(seq, updates)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("a20701001e0600", "not an Orbit downlink"),
        ("b20701001e060001", "not an Orbit downlink"),
        ("a007000000000000", "announces 0 updates"),
        ("a307010001020001", "announces 3 updates"),
        ("a107080001000000", "unknown parameter id 0x08"),
    ],
)
def test_decode_refuses_what_is_not_a_downlink(frame: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode_downlink(bytes.fromhex(frame))


# --- registering: rules 1-5 --------------------------------------------------------------------


def test_rule_1_the_active_value_with_nothing_pending_queues_nothing() -> None:
    config = DeviceConfig.new("orbit-t")

    new, outcomes = register_updates(config, {"sample_interval": 15, "temp_high": 40}, T)

    assert new == config
    assert kinds(outcomes) == [("unchanged", "sample_interval"), ("unchanged", "temp_high")]


def test_rule_2_the_active_value_removes_a_queued_update() -> None:
    config = queued(DeviceConfig.new("orbit-t"), sample_interval=30, led=1)

    new, outcomes = register_updates(config, {"sample_interval": 15}, T + 1)

    assert statuses(new) == [("led", 1, "queued")]
    assert kinds(outcomes) == [("param_dropped", "sample_interval")]
    assert outcomes[0].reason == "equals the active value"


def test_rule_3_a_queued_update_is_replaced_in_place() -> None:
    config = queued(DeviceConfig.new("orbit-t"), sample_interval=30)

    new, outcomes = register_updates(config, {"sample_interval": 45}, T + 60)

    assert new.pending == (PendingUpdate("sample_interval", 45, "queued", queued_at=T),)
    assert kinds(outcomes) == [("param_replaced", "sample_interval")]
    assert outcomes[0].event_data() == {"param": "sample_interval", "value": 45, "previous": 30}


def test_rule_3_replacing_a_requeued_update_forgets_its_sends() -> None:
    requeued = PendingUpdate("sample_interval", 30, "queued", T, attempts=2, seq=4, sent_at=T)
    config = replace(DeviceConfig.new("orbit-t"), pending=(requeued,))

    same, _ = register_updates(config, {"sample_interval": 30}, T + 1)
    other, _ = register_updates(config, {"sample_interval": 45}, T + 1)

    assert same == config  # the same value: its sends still count
    assert other.pending == (PendingUpdate("sample_interval", 45, "queued", queued_at=T),)


def test_rule_4_an_in_flight_update_gets_a_queued_successor_sent_after_the_ack() -> None:
    config, _ = send(queued(DeviceConfig.new("orbit-t"), sample_interval=30), T)

    new, outcomes = register_updates(config, {"sample_interval": 45}, T + 60)

    assert kinds(outcomes) == [("param_queued", "sample_interval")]
    assert statuses(new) == [
        ("sample_interval", 30, "in_flight"),
        ("sample_interval", 45, "queued"),
    ]
    assert plan_downlink(new, T + 600) is None  # waits for the ack
    acked, _ = apply_ack(new, 1, [(0x01, 30)], T + 600)
    assert planned(acked, T + 600) == ["sample_interval"]
    assert plan_downlink(acked, T + 600) == Downlink(
        2, (("sample_interval", 45),), encode_downlink(2, [("sample_interval", 45)])
    )


def test_rule_4_the_ack_makes_the_queued_successor_redundant() -> None:
    config, _ = send(queued(DeviceConfig.new("orbit-t"), sample_interval=30), T)
    config = queued(config, T + 60, sample_interval=20)

    # The sensor clamped 30 to 20: the successor asks for what is now active.
    new, outcomes = apply_ack(config, 1, [(0x01, 20)], T + 600)

    assert new.pending == ()
    assert new.active["sample_interval"] == 20
    assert kinds(outcomes) == [
        ("param_acked", "sample_interval"),
        ("param_dropped", "sample_interval"),
    ]
    assert outcomes[0].requested_raw == 30
    assert outcomes[1].reason == "equals the acked value"


def test_rule_4_applies_even_to_the_active_value_while_in_flight() -> None:
    # The ack will change the active value: going back to 15 needs another downlink.
    config, _ = send(queued(DeviceConfig.new("orbit-t"), sample_interval=30), T)

    new, outcomes = register_updates(config, {"sample_interval": 15}, T + 60)
    again, outcomes_again = register_updates(new, {"sample_interval": 15}, T + 120)
    acked, _ = apply_ack(again, 1, [(0x01, 30)], T + 600)

    assert kinds(outcomes) == [("param_queued", "sample_interval")]
    assert kinds(outcomes_again) == [("param_replaced", "sample_interval")]
    assert statuses(acked) == [("sample_interval", 15, "queued")]


def test_rule_5_a_new_update_is_queued() -> None:
    new, outcomes = register_updates(DeviceConfig.new("orbit-th"), {"humidity_high": 80}, T)

    assert new.pending == (PendingUpdate("humidity_high", 160, "queued", queued_at=T),)
    assert kinds(outcomes) == [("param_queued", "humidity_high")]
    assert outcomes[0].event_data() == {"param": "humidity_high", "value": 80}


def test_registering_validates_everything_first() -> None:
    config = DeviceConfig.new("orbit-th")

    with pytest.raises(InvalidParam) as caught:
        register_updates(config, {"led": 1, "batch_size": 4, "colour": 1}, T)

    assert caught.value.details == (
        "batch_size must be between 1 and 3 samples on orbit-th, got 4",
        "unknown parameter 'colour' (known: sample_interval, batch_size, temp_high, temp_low, "
        "humidity_high, led, downlink_every)",
    )


def test_registering_one_invalid_param_raises_its_own_error() -> None:
    with pytest.raises(InvalidParam, match="no parameter 'humidity_high'") as caught:
        register_updates(DeviceConfig.new("orbit-t"), {"humidity_high": 80, "led": 1}, T)

    assert caught.value.param == "humidity_high"


def test_re_registering_a_failed_update_queues_it_afresh() -> None:
    failed = PendingUpdate("led", 1, "failed", queued_at=T, attempts=3, seq=5, sent_at=T)
    config = replace(DeviceConfig.new("orbit-t"), pending=(failed,))

    same, same_outcomes = register_updates(config, {"led": 1}, T + DAY)
    active, active_outcomes = register_updates(config, {"led": 0}, T + DAY)

    assert same.pending == (PendingUpdate("led", 1, "queued", queued_at=T + DAY),)
    assert kinds(same_outcomes) == [("param_queued", "led")]
    assert active.pending == ()
    assert kinds(active_outcomes) == [("param_dropped", "led")]


# --- choosing what a downlink carries ----------------------------------------------------------


def test_nothing_queued_means_no_downlink() -> None:
    assert plan_downlink(DeviceConfig.new("orbit-t"), T) is None


def test_priority_comes_before_age() -> None:
    config = queued(DeviceConfig.new("orbit-t"), T, led=1)
    config = queued(config, T + 1, sample_interval=30)
    config = queued(config, T + 2, temp_high=30)

    assert planned(config) == ["temp_high", "sample_interval"]


def test_oldest_first_then_parameter_id() -> None:
    config = queued(DeviceConfig.new("orbit-t"), T, downlink_every=12)
    config = queued(config, T + 1, led=1)
    same_time = queued(DeviceConfig.new("orbit-t"), T, led=1, downlink_every=12)

    assert planned(config) == ["downlink_every", "led"]
    assert planned(same_time) == ["led", "downlink_every"]


def test_a_group_travels_together_oldest_member_first() -> None:
    config = queued(DeviceConfig.new("orbit-th"), T, temp_low=5)
    config = queued(config, T + 1, humidity_high=80)
    config = queued(config, T + 2, temp_high=30)

    # humidity_high is older than temp_high, but the pair ranks by its oldest member.
    assert planned(config) == ["temp_low", "temp_high"]


def test_a_group_that_does_not_fit_the_slot_left_waits_and_others_fill_it() -> None:
    config = queued(DeviceConfig.new("orbit-th"), T, humidity_high=80)
    config = queued(config, T + 1, temp_high=30, temp_low=5)
    config = queued(config, T + 2, sample_interval=30)

    config, first = send(config, T + 600)
    config, second = send(config, T + 1200)

    assert first.updates == (("humidity_high", 160), ("sample_interval", 30))
    assert second.updates == (("temp_high", 3000), ("temp_low", 500))


def test_a_group_alone_with_one_slot_left_waits_for_the_next_downlink() -> None:
    config = queued(DeviceConfig.new("orbit-th"), T, humidity_high=80)
    config = queued(config, T + 1, temp_high=30, temp_low=5)

    assert planned(config) == ["humidity_high"]


def test_a_lone_member_of_a_group_goes_alone() -> None:
    config = queued(DeviceConfig.new("orbit-t"), T, temp_low=5, led=1)

    assert planned(config) == ["temp_low", "led"]


def test_orbit_lite_carries_one_update_and_splits_a_group() -> None:
    config = queued(DeviceConfig.new("orbit-lite"), T, temp_high=30, temp_low=5, led=1)

    config, first = send(config, T)
    config, second = send(config, T + 600)
    config, third = send(config, T + 1200)

    assert [first.updates, second.updates, third.updates] == [
        (("temp_high", 3000),),
        (("temp_low", 500),),
        (("led", 1),),
    ]
    assert first.frame_hex == "a101030bb8000000"


@pytest.mark.parametrize(
    ("values", "first"),
    [
        ({"temp_high": 30, "temp_low": 5}, "temp_high"),  # either order is fine: spec order
        ({"temp_high": -20, "temp_low": -30}, "temp_low"),  # high first: low -10 > high -20
        ({"temp_high": 60, "temp_low": 50}, "temp_high"),
    ],
)
def test_a_split_group_keeps_low_below_high_on_the_device(
    values: dict[str, float], first: str
) -> None:
    config = queued(DeviceConfig.new("orbit-lite"), T, **values)

    assert planned(config) == [first]


def test_a_split_group_in_age_order_unless_unsafe() -> None:
    config = queued(DeviceConfig.new("orbit-lite"), T, temp_low=50)
    config = queued(config, T + 1, temp_high=60)
    lowering = queued(DeviceConfig.new("orbit-lite"), T, temp_low=-30)
    lowering = queued(lowering, T + 1, temp_high=-20)

    assert planned(config) == ["temp_high"]  # low 50 first would sit above high 40
    assert planned(lowering) == ["temp_low"]


# --- marking a downlink sent, seq ----------------------------------------------------------


def test_mark_sent_puts_the_updates_in_flight() -> None:
    config = queued(DeviceConfig.new("orbit-t"), T, sample_interval=30, led=1, temp_high=30)

    new, downlink = send(config, T + 600)

    assert downlink.seq == 1
    assert new.seq == 1
    assert new.downlinks == (T + 600,)
    assert downlink.updates == (("temp_high", 3000), ("sample_interval", 30))
    assert [(u.param, u.status, u.seq, u.sent_at) for u in new.pending] == [
        ("sample_interval", "in_flight", 1, T + 600),
        ("led", "queued", None, None),
        ("temp_high", "in_flight", 1, T + 600),
    ]


def test_mark_sent_refuses_a_downlink_of_another_config() -> None:
    config = queued(DeviceConfig.new("orbit-t"), T, led=1)
    downlink = plan_downlink(config, T)
    assert downlink is not None

    with pytest.raises(ValueError, match="does not follow"):
        mark_sent(replace(config, seq=5), downlink, T)
    with pytest.raises(ValueError, match="not queued"):
        mark_sent(queued(config, T, led=0), downlink, T)


def test_seq_wraps_from_255_to_0_then_1() -> None:
    config = replace(DeviceConfig.new("orbit-t"), seq=254)
    seqs = []
    for i in range(3):
        config = queued(config, T + i, sample_interval=20 + i)
        config, downlink = send(config, T + i * DAY)
        seqs.append(downlink.seq)
        config, _ = apply_ack(config, downlink.seq, [(0x01, 20 + i)], T + i * DAY + 1)

    assert seqs == [255, 0, 1]
    assert config.seq == 1


# --- the budget --------------------------------------------------------------------------------


def test_four_downlinks_per_rolling_24_hours() -> None:
    config = DeviceConfig.new("orbit-t")
    for i in range(4):
        config = queued(config, T + i, sample_interval=20 + i)
        config, downlink = send(config, T + i * 3600)
        config, _ = apply_ack(config, downlink.seq, [(0x01, 20 + i)], T + i * 3600 + 1)
    config = queued(config, T + 5, led=1)

    assert downlinks_left_24h(config, T + 4 * 3600) == 0
    assert plan_downlink(config, T + 4 * 3600) is None
    assert plan_downlink(config, T + DAY - 1) is None
    assert downlinks_left_24h(config, T + DAY) == 1  # the first left the window
    assert planned(config, T + DAY) == ["led"]
    assert downlinks_left_24h(config, T + DAY + 3 * 3600) == 4


def test_budget_of_a_new_device() -> None:
    assert downlinks_left_24h(DeviceConfig.new("orbit-t"), T) == 4


# --- acks --------------------------------------------------------------------------------------


def test_ack_sets_active_values_and_removes_the_acked_updates() -> None:
    config, _ = send(queued(DeviceConfig.new("orbit-t"), sample_interval=30, led=1), T)

    new, outcomes = apply_ack(config, 1, [(0x01, 30), (0x06, 1)], T + 600)

    assert new.pending == ()
    assert (new.active["sample_interval"], new.active["led"]) == (30, 1)
    assert kinds(outcomes) == [("param_acked", "sample_interval"), ("param_acked", "led")]
    assert outcomes[0].event_data() == {"param": "sample_interval", "value": 30, "seq": 1}


def test_ack_of_a_clamped_value_is_active_whatever_was_asked() -> None:
    config, _ = send(queued(DeviceConfig.new("orbit-t"), temp_high=30.5), T)

    new, outcomes = apply_ack(config, 1, [(0x03, 3000)], T + 600)

    assert (new.active["temp_high"], new.pending) == (3000, ())
    assert outcomes[0].event_data() == {
        "param": "temp_high", "value": 30.0, "seq": 1, "requested": 30.5,
    }  # fmt: skip


def test_ack_of_part_of_a_downlink_leaves_the_rest_in_flight() -> None:
    config, _ = send(queued(DeviceConfig.new("orbit-t"), sample_interval=30, led=1), T)

    new, _ = apply_ack(config, 1, [(0x06, 1)], T + 600)

    assert statuses(new) == [("sample_interval", 30, "in_flight")]


def test_ack_whose_seq_matches_nothing_still_sets_active_values() -> None:
    config, _ = send(queued(DeviceConfig.new("orbit-t"), sample_interval=30), T)
    config = queued(config, T + 1, led=1)

    new, outcomes = apply_ack(config, 9, [(0x01, 30), (0x06, 1), (0x02, 3)], T + 600)

    # sample_interval stays in flight (its own ack may come); led's queued update is redundant.
    assert statuses(new) == [("sample_interval", 30, "in_flight")]
    assert (new.active["sample_interval"], new.active["led"], new.active["batch_size"]) == (
        30,
        1,
        3,
    )
    assert kinds(outcomes) == [("param_dropped", "led")]


def test_ack_ignores_ids_the_model_lacks() -> None:
    new, outcomes = apply_ack(DeviceConfig.new("orbit-t"), 1, [(0x05, 160), (0x09, 1)], T)

    assert "humidity_high" not in new.active
    assert outcomes == ()


def test_a_late_ack_answers_an_update_queued_again() -> None:
    config, _ = send(queued(DeviceConfig.new("orbit-t"), sample_interval=30), T)
    config, _ = note_uplink(config, T + 600)
    config, outcomes = note_uplink(config, T + 1200)
    assert kinds(outcomes) == [("param_requeued", "sample_interval")]

    new, late = apply_ack(config, 1, [(0x01, 25)], T + 1800)  # clamped, and late

    assert (new.pending, new.active["sample_interval"]) == ((), 25)
    assert kinds(late) == [("param_acked", "sample_interval")]


def test_an_ack_of_the_failed_value_clears_the_failed_update() -> None:
    failed = PendingUpdate("led", 1, "failed", queued_at=T, attempts=3, seq=5, sent_at=T)
    config = replace(DeviceConfig.new("orbit-t"), pending=(failed,))

    same_seq, _ = apply_ack(config, 5, [(0x06, 0)], T + 600)
    other_seq, outcomes = apply_ack(config, 4, [(0x06, 1)], T + 600)
    unrelated, _ = apply_ack(config, 4, [(0x06, 0)], T + 600)

    assert same_seq.pending == ()
    assert other_seq.pending == ()
    assert kinds(outcomes) == [("param_dropped", "led")]
    assert unrelated.pending == config.pending


# --- uplinks and time-outs ---------------------------------------------------------------------


def in_flight_led() -> DeviceConfig:
    config, _ = send(queued(DeviceConfig.new("orbit-t"), led=1), T)
    return config


def test_the_downlink_request_itself_does_not_count() -> None:
    config = in_flight_led()

    same_uplink, _ = note_uplink(config, T, answered_with_seq=1)
    by_seq, _ = note_uplink(config, T + 5, answered_with_seq=1)  # clocks apart: seq decides
    older, _ = note_uplink(config, T - 600)  # an older uplink processed late

    assert same_uplink == by_seq == older == config


def test_requeued_at_the_second_uplink_after_the_send() -> None:
    config = in_flight_led()

    first, first_outcomes = note_uplink(config, T + 600)
    second, outcomes = note_uplink(first, T + 1200)

    assert first_outcomes == ()
    assert first.pending[0].uplinks_since_send == 1
    assert second.pending == (
        PendingUpdate("led", 1, "queued", T, attempts=1, seq=1, sent_at=T, uplinks_since_send=0),
    )
    assert [(o.kind, o.attempts, o.seq) for o in outcomes] == [("param_requeued", 1, 1)]


def test_an_ack_in_the_second_uplink_comes_first() -> None:
    config, _ = note_uplink(in_flight_led(), T + 600)

    acked, _ = apply_ack(config, 1, [(0x06, 1)], T + 1200)
    new, outcomes = note_uplink(acked, T + 1200)

    assert (new.pending, outcomes) == ((), ())


def test_failed_after_three_unanswered_sends() -> None:
    config = queued(DeviceConfig.new("orbit-t"), led=1)
    t = T
    for _ in range(3):
        config, _ = send(config, t)
        config, _ = note_uplink(config, t + 600)
        config, outcomes = note_uplink(config, t + 1200)
        t += 1800

    assert [(u.status, u.attempts) for u in config.pending] == [("failed", 3)]
    assert [(o.kind, o.attempts) for o in outcomes] == [("param_failed", 3)]
    assert plan_downlink(config, t) is None
    assert render_view("1A2B3C", config, t)["pending"][0]["status"] == "failed"


def test_a_timed_out_update_is_superseded_by_its_queued_successor() -> None:
    config = queued(in_flight_led(), T + 1, led=0)  # back to the active value: rule 4
    config, _ = note_uplink(config, T + 600)
    superseded, outcomes = note_uplink(config, T + 1200)
    config = queued(in_flight_led(), T + 1, led=1)  # the same value again
    superseded_same, _ = note_uplink(note_uplink(config, T + 600)[0], T + 1200)

    # led=0 is the active value: with led=1 never acked, nothing is left to send.
    assert superseded.pending == ()
    assert kinds(outcomes) == [("param_dropped", "led"), ("param_dropped", "led")]
    assert outcomes[0].reason == "superseded by a newer update"
    assert statuses(superseded_same) == [("led", 1, "queued")]
    assert superseded_same.pending[0].queued_at == T + 1


def test_a_timed_out_update_whose_value_became_active_is_dropped() -> None:
    config = in_flight_led()
    config, _ = apply_ack(config, 0, [(0x06, 1)], T + 600)  # some other ack set led=1

    config, _ = note_uplink(config, T + 600)
    new, outcomes = note_uplink(config, T + 1200)

    assert new.pending == ()
    assert kinds(outcomes) == [("param_dropped", "led")]


def test_each_in_flight_downlink_counts_its_own_uplinks() -> None:
    config = queued(DeviceConfig.new("orbit-lite"), T, led=1, sample_interval=30)
    config, _ = send(config, T)  # sample_interval, seq 1
    config, _ = note_uplink(config, T + 600)
    config, _ = send(config, T + 600)  # led, seq 2, answering that uplink
    config, outcomes = note_uplink(config, T + 1200)

    assert kinds(outcomes) == [("param_requeued", "sample_interval")]
    assert [(u.param, u.status, u.uplinks_since_send) for u in config.pending] == [
        ("led", "in_flight", 1),
        ("sample_interval", "queued", 0),
    ]


# --- deleting ----------------------------------------------------------------------------------


def test_delete_removes_every_pending_update_of_the_param() -> None:
    config, _ = send(queued(DeviceConfig.new("orbit-t"), led=1, sample_interval=30), T)
    config = queued(config, T + 1, led=0)

    new, outcomes = delete_pending(config, "led")
    nothing, none = delete_pending(new, "led")

    assert statuses(new) == [("sample_interval", 30, "in_flight")]
    assert kinds(outcomes) == [("param_dropped", "led"), ("param_dropped", "led")]
    assert {o.reason for o in outcomes} == {"deleted by an operator"}
    assert (nothing, none) == (new, ())


def test_delete_of_an_unknown_param() -> None:
    with pytest.raises(InvalidParam, match="unknown parameter"):
        delete_pending(DeviceConfig.new("orbit-t"), "colour")


# --- the API view ------------------------------------------------------------------------------


def test_view_in_natural_units() -> None:
    config = queued(DeviceConfig.new("orbit-th"), T, humidity_high=80.5, temp_high=30.5)
    config, _ = send(config, T + 600)
    config = queued(config, T + 601.5, temp_high=31)

    assert render_view("1A2B3C", config, T + 700) == {
        "device": "1A2B3C",
        "model": "orbit-th",
        "active": {"sample_interval": 15, "batch_size": 4, "temp_high": 40, "temp_low": -10,
                   "humidity_high": 90, "led": 0, "downlink_every": 24},
        "pending": [
            {"param": "temp_high", "value": 30.5, "status": "in_flight", "queued": T,
             "attempts": 0, "seq": 1},
            {"param": "temp_high", "value": 31, "status": "queued", "queued": T + 601.5,
             "attempts": 0, "seq": None},
            {"param": "humidity_high", "value": 80.5, "status": "in_flight", "queued": T,
             "attempts": 0, "seq": 1},
        ],
        "downlinks_left_24h": 3,
    }  # fmt: skip
