from __future__ import annotations

from gputopo.agent.health import HealthPolicy, assess
from gputopo.agent.topology import (
    EccCounts,
    FabricInfo,
    Health,
    HealthSignals,
    MemoryRepair,
    XidEvent,
)


def test_quiet_gpu_is_ok_with_no_reasons() -> None:
    assert assess(HealthSignals()) == (Health.OK, ())


def test_unknown_signals_never_count_against_a_gpu() -> None:
    signals = HealthSignals(
        ecc=EccCounts(),
        memory_repair=MemoryRepair(),
        throttle_reasons=None,
        temperature_c=None,
    )
    assert assess(signals)[0] is Health.OK


def test_lost_gpu_is_failed() -> None:
    health, reasons = assess(HealthSignals(lost=True))
    assert health is Health.FAILED
    assert "GPU is lost" in reasons[0]


def test_xid_79_fallen_off_the_bus_is_failed() -> None:
    health, reasons = assess(HealthSignals(xid_events=(XidEvent(79, 2),)))
    assert health is Health.FAILED
    assert reasons == ("XID 79 (GPU has fallen off the bus) x2",)


def test_application_xids_are_ignored() -> None:
    signals = HealthSignals(xid_events=(XidEvent(13), XidEvent(31), XidEvent(43)))
    assert assess(signals) == (Health.OK, ())


def test_contained_ecc_xid_94_degrades_and_unknown_xid_degrades() -> None:
    health, reasons = assess(HealthSignals(xid_events=(XidEvent(94), XidEvent(999))))
    assert health is Health.DEGRADED
    assert reasons == ("XID 94 (contained ECC error) x1", "XID 999 (unclassified) x1")


def test_volatile_uncorrectable_ecc_is_failed_but_aggregate_history_is_not() -> None:
    assert assess(HealthSignals(ecc=EccCounts(volatile_uncorrected=3)))[0] is Health.FAILED
    assert assess(HealthSignals(ecc=EccCounts(aggregate_uncorrected=3)))[0] is Health.OK


def test_row_remap_failure_fails_and_pending_remap_degrades() -> None:
    failed = assess(HealthSignals(memory_repair=MemoryRepair(remapped_rows_failure=True)))
    assert failed == (Health.FAILED, ("row remapping failed",))
    pending = assess(HealthSignals(memory_repair=MemoryRepair(remapped_rows_pending=True)))
    assert pending[0] is Health.DEGRADED
    retired = assess(HealthSignals(memory_repair=MemoryRepair(retired_pages_pending=True)))
    assert retired[0] is Health.DEGRADED


def test_thermal_throttling_degrades_but_power_cap_and_idle_do_not() -> None:
    hot = assess(HealthSignals(throttle_reasons=("hw_thermal_slowdown", "sw_power_cap")))
    assert hot == (Health.DEGRADED, ("clocks held back: hw_thermal_slowdown",))
    assert assess(HealthSignals(throttle_reasons=("sw_power_cap", "gpu_idle")))[0] is Health.OK


def test_nvlinks_down_and_unfinished_fabric_degrade() -> None:
    assert assess(HealthSignals(nvlinks_down=2)) == (Health.DEGRADED, ("NVLinks down: 2",))
    fabric = FabricInfo(cluster_uuid=None, clique_id=None, state="in_progress")
    assert assess(HealthSignals(), fabric=fabric)[0] is Health.DEGRADED
    done = FabricInfo(cluster_uuid="u", clique_id=1, state="completed")
    assert assess(HealthSignals(), fabric=done)[0] is Health.OK


def test_failed_reasons_come_before_degraded_ones() -> None:
    signals = HealthSignals(nvlinks_down=1, xid_events=(XidEvent(48),))
    health, reasons = assess(signals)
    assert health is Health.FAILED
    assert reasons == ("XID 48 (double-bit ECC error) x1", "NVLinks down: 1")


def test_policy_can_add_a_temperature_limit_and_change_fatal_xids() -> None:
    policy = HealthPolicy(temperature_limit_c=85, fatal_xids=frozenset({94}))
    assert assess(HealthSignals(temperature_c=90), policy=policy)[0] is Health.DEGRADED
    assert assess(HealthSignals(xid_events=(XidEvent(94),)), policy=policy)[0] is Health.FAILED
