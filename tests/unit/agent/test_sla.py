"""SLA score from health signals, and the hysteresis that keeps it from flapping."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gputopo.agent.sla import SlaHysteresis, SlaState, SlaStateError, assess
from gputopo.agent.topology import EccCounts, Health, MemoryRepair, PciOnlyGpu, XidEvent
from tests.unit.agent.machines import cpu_only, degraded, dgx_h100


def score(topology) -> int:  # type: ignore[no-untyped-def]
    assessment = assess(topology)
    assert assessment is not None
    return assessment.score


def test_healthy_dgx_h100_scores_1000() -> None:
    assert score(dgx_h100()) == 1000


def test_node_without_gpus_has_no_sla() -> None:
    assert assess(cpu_only()) is None


def test_failed_gpu_caps_score_at_usable_fraction() -> None:
    topology = degraded(dgx_h100(), 2, health=Health.FAILED, xid_events=(XidEvent(79),))
    assessment = assess(topology)
    assert assessment is not None
    assert assessment.score == 1000 - 500  # failed 400 + critical XID 300, capped per GPU at 500
    assert any("critical XID 79" in r for r in assessment.reasons)


def test_all_gpus_lost_scores_zero() -> None:
    topology = dgx_h100()
    for index in range(8):
        topology = degraded(topology, index, lost=True)
    assert score(topology) == 0


def test_pci_only_gpu_counts_as_unusable() -> None:
    topology = replace(dgx_h100(), pci_only_gpus=(PciOnlyGpu("0000:99:00.0", reason="no driver"),))
    assert score(topology) == 1000 * 8 // 9


@pytest.mark.parametrize(
    ("signals", "expected"),
    [
        ({"throttle_reasons": ("hw_slowdown",)}, 950),
        ({"throttle_reasons": ("sw_thermal_slowdown",)}, 970),
        ({"throttle_reasons": ("sw_power_cap", "gpu_idle")}, 1000),
        ({"nvlinks_down": 2}, 900),
        ({"nvlinks_down": 18}, 800),
        ({"ecc": EccCounts(volatile_uncorrected=3)}, 800),
        ({"memory_repair": MemoryRepair(remapped_rows_pending=True)}, 900),
        ({"memory_repair": MemoryRepair(remapped_rows_failure=True)}, 700),
        ({"xid_events": (XidEvent(13),)}, 1000),  # application error: not the GPU's fault
        ({"xid_events": (XidEvent(92),)}, 900),
    ],
)
def test_signal_penalties(signals: dict[str, object], expected: int) -> None:
    assert score(degraded(dgx_h100(), 0, **signals)) == expected


def test_degraded_gpu_costs_at_least_the_degraded_minimum() -> None:
    topology = degraded(dgx_h100(), 0, health=Health.DEGRADED, reasons=("temperature 95 C",))
    assert score(topology) == 900


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_sla_drops_immediately_on_worse() -> None:
    hysteresis = SlaHysteresis(3, 60, FakeClock())
    state = hysteresis.observe(SlaState(), 1000)
    assert state.published == 1000
    state = hysteresis.observe(state, 700)
    assert state.published == 700


def test_sla_rises_only_after_n_better_observations_and_time() -> None:
    clock = FakeClock()
    hysteresis = SlaHysteresis(rise_after_observations=3, rise_after_seconds=120, clock=clock)
    state = SlaState(published=700)
    for _ in range(2):
        state = hysteresis.observe(state, 1000)
        clock.now += 60
        assert state.published == 700
    state = hysteresis.observe(state, 1000)  # third observation, 120 s after the first
    assert state.published == 1000
    assert state.candidate is None


def test_sla_rise_needs_the_time_too() -> None:
    clock = FakeClock()
    hysteresis = SlaHysteresis(rise_after_observations=2, rise_after_seconds=300, clock=clock)
    state = SlaState(published=500)
    for _ in range(5):
        state = hysteresis.observe(state, 1000)
        clock.now += 10
    assert state.published == 500
    clock.now += 300
    assert hysteresis.observe(state, 1000).published == 1000


def test_a_worse_observation_resets_the_rise() -> None:
    clock = FakeClock()
    hysteresis = SlaHysteresis(3, 0, clock)
    state = SlaState(published=700)
    state = hysteresis.observe(state, 1000)
    state = hysteresis.observe(state, 1000)
    state = hysteresis.observe(state, 600)  # flap
    assert state == SlaState(published=600)
    state = hysteresis.observe(state, 1000)
    assert state.published == 600 and state.confirmations == 1


def test_rise_goes_to_the_lowest_better_observation() -> None:
    hysteresis = SlaHysteresis(3, 0, FakeClock())
    state = SlaState(published=500)
    for raw in (1000, 800, 950):
        state = hysteresis.observe(state, raw)
    assert state.published == 800


def test_flapping_gpu_never_publishes_a_rise() -> None:
    hysteresis = SlaHysteresis(3, 0, FakeClock())
    state = hysteresis.observe(SlaState(), 1000)
    published = []
    for raw in [700, 1000, 1000, 700, 1000, 1000, 700] * 3:
        state = hysteresis.observe(state, raw)
        published.append(state.published)
    assert set(published) == {700}


def test_state_round_trips_through_json() -> None:
    state = SlaState(published=700, candidate=950, confirmations=2, candidate_since=12.5)
    assert SlaState.from_json(state.to_json()) == state


@pytest.mark.parametrize("text", ["[1]", "not json", '{"published": "high"}'])
def test_unreadable_state_is_refused(text: str) -> None:
    with pytest.raises(SlaStateError):
        SlaState.from_json(text)


def test_out_of_range_score_is_refused() -> None:
    with pytest.raises(ValueError, match="1001"):
        SlaHysteresis().observe(SlaState(), 1001)


def test_worst_gpu_counts_in_full_the_others_by_their_share() -> None:
    topology = degraded(dgx_h100(), 0, throttle_reasons=("hw_slowdown",))
    topology = degraded(topology, 1, throttle_reasons=("hw_slowdown",))
    assert score(topology) == 1000 - 50 - 50 // 8


def test_several_failed_gpus_lower_the_score_in_proportion() -> None:
    topology = dgx_h100()
    for index in (1, 4):
        topology = degraded(topology, index, health=Health.FAILED, xid_events=(XidEvent(79),))
    topology = degraded(topology, 6, lost=True)
    assert score(topology) == 1000 - 500 - (500 + 400) // 8
