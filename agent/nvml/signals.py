"""Health signals of one GPU as NVML reports them: ECC counts, retired pages and remapped rows,
clock event (throttle) reasons, temperature, power, NVLinks down, and the XIDs the event set
counted.

Discovery reads them with everything else once a minute; the run loop's health tick reads them
every second (:class:`HealthPoll`), the slow-changing ones only every few ticks.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace

from gputopo.agent.nvml.session import FUNCTION_NOT_FOUND, NOT_SUPPORTED, GpuQuery, int_or_none
from gputopo.agent.topology import EccCounts, HealthSignals, MemoryRepair, XidEvent

# nvmlClocksEventReason* bits to names (the same bits as the deprecated ThrottleReason names; the
# last two are newer bits pynvml names nvmlClocksThrottleReasonBoardLimit and ...Reliability).
CLOCK_EVENT_REASONS: tuple[tuple[int, str], ...] = (
    (0x001, "gpu_idle"),
    (0x002, "applications_clocks_setting"),
    (0x004, "sw_power_cap"),
    (0x008, "hw_slowdown"),
    (0x010, "sync_boost"),
    (0x020, "sw_thermal_slowdown"),
    (0x040, "hw_thermal_slowdown"),
    (0x080, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
    (0x200, "board_limit"),
    (0x400, "reliability"),
)

# nvmlDeviceGetCurrentClocksEventReasons is R535 on: an older driver has only the throttle-reason
# API, and a current pynvml then answers FUNCTION_NOT_FOUND (an older pynvml has no such function,
# which GpuQuery answers as NOT_SUPPORTED). Either way the deprecated API is asked instead.
_NO_CLOCK_EVENT_API = (NOT_SUPPORTED, FUNCTION_NOT_FOUND)


@dataclass(frozen=True)
class HealthPoll:
    """One fast poll: the health signals and each GPU's NVLink up/down states. The load sampler
    takes the states from here, so the once-a-second tick reads every link's state once."""

    signals: dict[int, HealthSignals] = field(default_factory=dict)
    nvlink_states: dict[int, tuple[bool, ...]] = field(default_factory=dict)


def decode_clock_event_reasons(mask: int) -> tuple[str, ...]:
    return tuple(name for bit, name in CLOCK_EVENT_REASONS if mask & bit)


def links_down(states: Sequence[bool | None], expected: Collection[int]) -> int:
    """Inactive links that should be up: those in ``expected`` (link numbers that were active
    since the agent started, or every link of a GPU wired to NVSwitches).

    A link index that was never up is not down: an A100 PCIe has 12 link indices whether or
    not all its bridges are fitted, and a missing bridge is how the machine was built, not a
    fault. On an NVSwitch node, a GPU with every link down is down; discovery makes that call,
    because it sees the whole node.
    """
    return sum(1 for link, active in enumerate(states) if active is False and link in expected)


def read_nvlink_states(query: GpuQuery, known_count: int | None) -> tuple[bool, ...]:
    """Only whether each link is up: what the once-a-second poll needs. Past the last link
    NVML answers INVALID_ARGUMENT; once the link count is known (``known_count``) it is not
    asked again."""
    limit = (
        known_count
        if known_count is not None
        else int(getattr(query.module, "NVML_NVLINK_MAX_LINKS", 18))
    )
    states = []
    for link in range(limit):
        state = query.probe("nvmlDeviceGetNvLinkState", link)
        if state is None:
            break
        states.append(bool(int(state)))
    return tuple(states)


def read_memory_repair(query: GpuQuery) -> MemoryRepair:
    single_bit = query.device("nvmlDeviceGetRetiredPages", 0)
    double_bit = query.device("nvmlDeviceGetRetiredPages", 1)
    retired_pending = query.device("nvmlDeviceGetRetiredPagesPendingStatus")
    remapped = query.device("nvmlDeviceGetRemappedRows")
    return MemoryRepair(
        retired_pages_single_bit=len(single_bit) if single_bit is not None else None,
        retired_pages_double_bit=len(double_bit) if double_bit is not None else None,
        retired_pages_pending=bool(int(retired_pending)) if retired_pending is not None else None,
        remapped_rows_correctable=int(remapped[0]) if remapped is not None else None,
        remapped_rows_uncorrectable=int(remapped[1]) if remapped is not None else None,
        remapped_rows_pending=bool(int(remapped[2])) if remapped is not None else None,
        remapped_rows_failure=bool(int(remapped[3])) if remapped is not None else None,
    )


def read_signals(
    query: GpuQuery,
    xids: tuple[XidEvent, ...],
    *,
    nvlinks_down: int,
    stale_xids: tuple[int, ...] = (),
    uncorrected_ecc_events: int = 0,
    slow: HealthSignals | None = None,
) -> HealthSignals:
    """``uncorrected_ecc_events``: double-bit ECC events seen since the session opened; the
    volatile uncorrected count is at least that, even if the counter query fails or lags.
    ``slow``: signals whose lifetime ECC counts and memory repair state are taken as they
    are instead of being asked for again."""
    module = query.module
    corrected = int(getattr(module, "NVML_MEMORY_ERROR_TYPE_CORRECTED", 0))
    uncorrected = int(getattr(module, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", 1))
    volatile = int(getattr(module, "NVML_VOLATILE_ECC", 0))
    aggregate = int(getattr(module, "NVML_AGGREGATE_ECC", 1))
    volatile_uncorrected = int_or_none(
        query.device("nvmlDeviceGetTotalEccErrors", uncorrected, volatile)
    )
    if uncorrected_ecc_events:
        volatile_uncorrected = max(volatile_uncorrected or 0, uncorrected_ecc_events)
    volatile_corrected = int_or_none(
        query.device("nvmlDeviceGetTotalEccErrors", corrected, volatile)
    )
    if slow is not None:
        ecc = replace(
            slow.ecc,
            volatile_corrected=volatile_corrected,
            volatile_uncorrected=volatile_uncorrected,
        )
        repair = slow.memory_repair
    else:
        ecc = EccCounts(
            volatile_corrected=volatile_corrected,
            volatile_uncorrected=volatile_uncorrected,
            aggregate_corrected=int_or_none(
                query.device("nvmlDeviceGetTotalEccErrors", corrected, aggregate)
            ),
            aggregate_uncorrected=int_or_none(
                query.device("nvmlDeviceGetTotalEccErrors", uncorrected, aggregate)
            ),
        )
        repair = read_memory_repair(query)
    reasons = query.device("nvmlDeviceGetCurrentClocksEventReasons")
    if reasons is None and query.last_code in _NO_CLOCK_EVENT_API:
        reasons = query.device("nvmlDeviceGetCurrentClocksThrottleReasons")
    temperature = query.device(
        "nvmlDeviceGetTemperature", int(getattr(module, "NVML_TEMPERATURE_GPU", 0))
    )
    power = query.device("nvmlDeviceGetPowerUsage")
    limit = query.device("nvmlDeviceGetEnforcedPowerLimit")
    return HealthSignals(
        lost=query.lost,
        xid_events=xids,
        stale_xids=stale_xids,
        ecc=ecc,
        memory_repair=repair,
        throttle_reasons=decode_clock_event_reasons(int(reasons)) if reasons is not None else None,
        temperature_c=int_or_none(temperature),
        power_w=int(power) / 1000.0 if power is not None else None,
        power_limit_w=int(limit) / 1000.0 if limit is not None else None,
        nvlinks_down=nvlinks_down,
    )
