"""A stateful property test of the Orbit pending queue against a simulated device.

Hypothesis drives registrations (valid and invalid), deletions, the passing of time and the
device's uplinks: each may request a downlink, carry the oldest ack the device owes (or not:
the ack comes late), or be lost (with the ack it carried). Downlinks may be lost; the device
clamps some values. A simple reference model (the device's values, the operator's last intent,
every downlink sent) checks the invariants after every step.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from services.orbit import (
    MODELS,
    PARAMS,
    PARAMS_BY_ID,
    DeviceConfig,
    InvalidParam,
    Model,
    apply_ack,
    decode_downlink,
    delete_pending,
    downlinks_left_24h,
    from_raw,
    mark_sent,
    note_uplink,
    plan_downlink,
    register_updates,
)

T = 1700000000.0
DAY = 86400.0
ALLOWED_SHAPES = {(), ("queued",), ("in_flight",), ("in_flight", "queued"), ("failed",)}


def clamp(name: str, raw: int) -> int:
    """What the simulated firmware applies: it clamps two parameters."""
    if name == "sample_interval":
        return max(raw, 5)
    if name == "temp_high":
        return min(raw, 8500)
    return raw


def expected_kind(config: DeviceConfig, name: str, raw: int) -> str:
    """Rules 1-5 for one parameter, as the spec states them (a failed update is replaced)."""
    statuses = {u.status for u in config.pending if u.param == name}
    in_flight = "in_flight" in statuses
    if raw == config.active[name] and not in_flight:
        return "param_dropped" if statuses & {"queued", "failed"} else "unchanged"
    return "param_replaced" if "queued" in statuses else "param_queued"


class OrbitQueueMachine(RuleBasedStateMachine):
    config: DeviceConfig
    model: Model

    @initialize(
        model=st.sampled_from(sorted(MODELS)),
        seq=st.sampled_from([0, 253, 254, 255]),
        uplink_loss=st.sampled_from([0, 0, 10, 30]),
        downlink_loss=st.sampled_from([0, 0, 10, 30, 100]),
    )
    def start(self, model: str, seq: int, uplink_loss: int, downlink_loss: int) -> None:
        self.config = replace(DeviceConfig.new(model), seq=seq)  # 253..255: see the seq wrap
        self.model = MODELS[model]
        self.now = T
        self.device = dict(self.config.active)  # what the sensor has applied
        self.owed_acks: list[tuple[int, tuple[tuple[int, int], ...]]] = []  # oldest first
        self.sent: list[tuple[float, int]] = []  # (time, seq) of every downlink
        self.last_seq = seq
        self.intent: dict[str, int | None] = {}  # last registered raw value; None: unknowable
        self.lost_something = False
        self.uplinks_after: dict[int, int] = {}  # seq -> uplinks seen since its send
        self.loss_percent = {"uplink": uplink_loss, "downlink": downlink_loss}  # 100: no signal

    def _pending_of(self, name: str) -> list[str]:
        return [u.status for u in self.config.pending if u.param == name]

    # --- the operator ------------------------------------------------------------------------

    @rule(data=st.data())
    def register(self, data: st.DataObject) -> None:
        names = data.draw(
            st.lists(st.sampled_from(self.model.params), min_size=1, max_size=3, unique=True)
        )
        raws = {}
        for name in names:
            low, high = PARAMS[name].raw_range(self.model.name)
            # The active value, pending values and the range's ends (the firmware clamps some).
            nearby = [self.config.active[name], low, high]
            nearby += [u.value_raw for u in self.config.pending if u.param == name]
            candidates = [v for v in nearby if low <= v <= high]
            raws[name] = data.draw(st.sampled_from(candidates) | st.integers(low, high))
        before = self.config

        self.config, outcomes = register_updates(
            before, {name: from_raw(name, raw) for name, raw in raws.items()}, self.now
        )

        for outcome in outcomes:
            event(f"register: {outcome.kind}")
        assert [(o.kind, o.param) for o in outcomes] == [
            (expected_kind(before, name, raw), name) for name, raw in raws.items()
        ]
        self.intent.update(raws)

    @rule(data=st.data())
    def register_invalid(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self.model.params))
        low, high = PARAMS[name].raw_range(self.model.name)
        bad = data.draw(st.sampled_from([low - 1, high + 1]))
        valid = {"led": 1} if name != "led" else {"downlink_every": 12}
        updates = {**valid, name: from_raw(name, bad)}
        before = self.config
        with pytest.raises(InvalidParam) as caught:
            register_updates(before, updates, self.now)
        assert caught.value.param == name
        assert self.config == before

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self.model.params))
        had = len(self._pending_of(name))

        self.config, outcomes = delete_pending(self.config, name)

        assert len(outcomes) == had
        assert self._pending_of(name) == []
        self.intent[name] = None

    @rule(hours=st.floats(min_value=0, max_value=30))
    def time_passes(self, hours: float) -> None:
        self.now += hours * 3600

    # --- the device and the network -------------------------------------------------------

    def _lost(self, data: st.DataObject, what: str) -> bool:
        return data.draw(st.integers(0, 99)) < self.loss_percent[what]

    @rule(data=st.data(), minutes=st.integers(10, 600), carries_ack=st.integers(0, 3))
    def downlink_request(self, data: st.DataObject, minutes: int, carries_ack: int) -> None:
        self._uplink(data, minutes, carries_ack=carries_ack > 0, requests_downlink=True)

    @rule(data=st.data(), minutes=st.integers(10, 600), carries_ack=st.integers(0, 3))
    def uplink(self, data: st.DataObject, minutes: int, carries_ack: int) -> None:
        self._uplink(data, minutes, carries_ack=carries_ack > 0, requests_downlink=False)

    @rule(data=st.data(), count=st.integers(2, 12))
    def busy_hours(self, data: st.DataObject, count: int) -> None:
        """Several uplinks in a row, each asking for a downlink or not."""
        for _ in range(count):
            minutes = data.draw(st.integers(10, 120))
            carries_ack, requests = data.draw(st.integers(0, 3)) > 0, data.draw(st.booleans())
            self._uplink(data, minutes, carries_ack=carries_ack, requests_downlink=requests)

    def _uplink(
        self, data: st.DataObject, minutes: int, *, carries_ack: bool, requests_downlink: bool
    ) -> None:
        """One uplink of the device, which carries the oldest ack it owes unless it delays it."""
        self.now += minutes * 60
        ack = self.owed_acks.pop(0) if carries_ack and self.owed_acks else None
        if self._lost(data, "uplink"):
            self.lost_something |= ack is not None
            return  # the ack it carried is lost with it; the network never answers
        # The uplink is applied first, its ack then its count, also when it asks for a downlink:
        # the answer (services.orbit.store.answer_request_in) is planned after both.
        if ack is not None:
            self._apply_ack(*ack)
        for seq in self.uplinks_after:
            self.uplinks_after[seq] += 1
        self.config, outcomes = note_uplink(self.config, self.now)
        for outcome in outcomes:
            event(f"note_uplink: {outcome.kind} {outcome.reason or ''}".strip())
            if outcome.attempts is not None:  # timed out: the second uplink after the send
                assert outcome.seq is not None
                assert self.uplinks_after[outcome.seq] == 2
            if outcome.kind == "param_failed":
                self.intent[outcome.param] = None
        if requests_downlink:  # answered at once, from the state the uplink left
            self._answer_request(data)

    def _answer_request(self, data: st.DataObject) -> int | None:
        in_flight = {u.param for u in self.config.pending if u.status == "in_flight"}
        ready = {
            u.param
            for u in self.config.pending
            if u.status == "queued" and u.param not in in_flight
        }
        left = downlinks_left_24h(self.config, self.now)
        downlink = plan_downlink(self.config, self.now)
        if downlink is None:
            assert left == 0 or not ready
            return None
        names = [name for name, _ in downlink.updates]
        event(f"downlink of {len(names)} on {self.model.name}")
        assert left > 0
        assert 1 <= len(names) <= self.model.params_per_downlink
        assert len(set(names)) == len(names)
        assert set(names) <= ready
        assert downlink.seq == (self.last_seq + 1) % 256  # 1 first; never skipped nor reused
        assert len(downlink.frame) == 8
        assert decode_downlink(downlink.frame) == (downlink.seq, downlink.updates)

        self.config = mark_sent(self.config, downlink, self.now)
        self.sent.append((self.now, downlink.seq))
        self.last_seq = downlink.seq
        self.uplinks_after[downlink.seq] = 0
        assert sum(1 for t, _ in self.sent if self.now - t < DAY) <= 4
        downlink_lost = self._lost(data, "downlink")
        self.lost_something |= downlink_lost
        if not downlink_lost:
            applied = tuple((PARAMS[n].id, clamp(n, raw)) for n, raw in downlink.updates)
            for param_id, raw in applied:
                self.device[PARAMS_BY_ID[param_id].name] = raw
            self.owed_acks.append((downlink.seq, applied))
        return downlink.seq

    def _apply_ack(self, seq: int, values: tuple[tuple[int, int], ...]) -> None:
        self.config, outcomes = apply_ack(self.config, seq, values, self.now)
        answered = {o.param for o in outcomes if o.kind == "param_acked"}
        for outcome in outcomes:
            event(
                f"ack: {outcome.kind}" + (" (clamped)" if outcome.requested_raw is not None else "")
            )
        for param_id, raw in values:
            name = PARAMS_BY_ID[param_id].name
            assert self.config.active[name] == raw  # acked values are always active
            if name not in answered and not self._pending_of(name):
                # A late ack of an update no longer pending: the device's value is the truth.
                self.intent[name] = None

    # --- invariants -----------------------------------------------------------------------------

    @invariant()
    def queue_has_a_valid_shape(self) -> None:
        for name in {u.param for u in self.config.pending}:
            assert name in self.model.params
            assert tuple(sorted(self._pending_of(name))) in ALLOWED_SHAPES
        for update in self.config.pending:
            assert 0 <= update.attempts <= 3
            assert (update.attempts == 3) == (update.status == "failed")
            if update.status == "in_flight":
                assert update.seq is not None
                assert update.sent_at is not None
                assert self.uplinks_after[update.seq] < 2  # else it would have timed out

    @invariant()
    def nothing_waits_to_set_the_active_value(self) -> None:
        for update in self.config.pending:
            if (
                update.status != "in_flight"
                and update.value_raw == self.config.active[update.param]
            ):
                # Only a successor of an in-flight update may (its ack changes the value).
                assert "in_flight" in self._pending_of(update.param)

    @invariant()
    def budget_matches_the_downlinks_sent(self) -> None:
        recent = sum(1 for t, _ in self.sent if self.now - t < DAY)
        assert downlinks_left_24h(self.config, self.now) == 4 - recent >= 0

    @invariant()
    def seq_is_the_last_one_sent(self) -> None:
        assert self.config.seq == self.last_seq

    @invariant()
    def settled_params_hold_the_operators_value(self) -> None:
        for name, raw in self.intent.items():
            if raw is not None and not self._pending_of(name):
                assert self.config.active[name] == clamp(name, raw)

    @invariant()
    def active_is_the_device_once_every_ack_is_in(self) -> None:
        # A lost downlink or ack leaves the device unknown until it acks again.
        if not self.owed_acks and not self.lost_something:
            assert dict(self.config.active) == self.device


OrbitQueueMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestOrbitQueue = OrbitQueueMachine.TestCase
