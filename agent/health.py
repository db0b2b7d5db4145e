"""Per-GPU health assessment: pure functions from health signals to ``Health`` plus reasons.

The classification (docs/health.md) follows NVIDIA's XID catalogue and the checks DCGM and the
Kubernetes device plugin make: a GPU is *failed* when it cannot be trusted with work until it
is reset or replaced (lost, fatal XID, uncorrectable ECC since boot, row-remap failure), and
*degraded* when it works but worse or needs a reset soon (throttling by hardware or heat, NVLink
down, pending page retirement or row remap, a non-fatal XID). XIDs caused by the application
rather than the GPU are ignored, as the device plugin does.

Reasons are short fixed phrases with the numbers appended, ordered failed-first, so a taint or
an SLA score can quote them and a human can read them in ``kubectl describe node``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gputopo.agent.topology import FabricInfo, Health, HealthSignals

# XIDs that mean the GPU needs a reset or replacement.
FATAL_XIDS: dict[int, str] = {
    48: "double-bit ECC error",
    62: "internal micro-controller halt",
    64: "ECC page retirement or row remap recording failure",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    95: "uncontained ECC error",
    119: "GSP RPC timeout",
    120: "GSP error",
    140: "unrecovered ECC error",
    143: "GPU initialization failure",
}

# XIDs where the GPU keeps working but should be reset at the next opportunity.
DEGRADING_XIDS: dict[int, str] = {
    61: "internal micro-controller warning",
    63: "ECC page retirement or row remap recording event",
    92: "high single-bit ECC error rate",
    94: "contained ECC error",
}

# XIDs caused by the application, not the GPU (the device plugin's default skip list).
APPLICATION_XIDS: dict[int, str] = {
    13: "graphics engine exception",
    31: "GPU memory page fault",
    43: "GPU stopped processing",
    45: "preemptive cleanup",
    68: "video processor exception",
    109: "context switch timeout",
}

# Clock-event reasons that mean the hardware is holding the GPU back. SW power capping and idle
# are what a healthy GPU does under load or at rest, so they do not count.
DEGRADING_THROTTLE_REASONS: tuple[str, ...] = (
    "hw_slowdown",
    "hw_thermal_slowdown",
    "sw_thermal_slowdown",
    "hw_power_brake_slowdown",
)


@dataclass(frozen=True)
class HealthPolicy:
    """What counts as failed or degraded; the defaults are the documented classification."""

    fatal_xids: frozenset[int] = frozenset(FATAL_XIDS)
    ignored_xids: frozenset[int] = frozenset(APPLICATION_XIDS)
    degrading_throttle_reasons: frozenset[str] = frozenset(DEGRADING_THROTTLE_REASONS)
    temperature_limit_c: int | None = None  # degraded at or above this; None: no check


DEFAULT_POLICY = HealthPolicy()


def xid_description(code: int) -> str:
    for table in (FATAL_XIDS, DEGRADING_XIDS, APPLICATION_XIDS):
        if code in table:
            return table[code]
    return "unclassified"


def assess(
    signals: HealthSignals,
    *,
    fabric: FabricInfo | None = None,
    policy: HealthPolicy = DEFAULT_POLICY,
) -> tuple[Health, tuple[str, ...]]:
    """Classify one GPU. Unknown signals (``None``) never count against it."""
    failed: list[str] = []
    degraded: list[str] = []

    if signals.lost:
        failed.append("GPU is lost (NVML GPU_IS_LOST)")

    for event in signals.xid_events:
        if event.code in policy.ignored_xids or event.code in signals.stale_xids:
            continue  # the application's fault, or past the XID window (agent.nvml.XidDecay)
        text = f"XID {event.code} ({xid_description(event.code)}) x{event.count}"
        (failed if event.code in policy.fatal_xids else degraded).append(text)

    ecc = signals.ecc
    if ecc.volatile_uncorrected:
        failed.append(f"uncorrectable ECC errors since boot: {ecc.volatile_uncorrected}")

    repair = signals.memory_repair
    if repair.remapped_rows_failure:
        failed.append("row remapping failed")
    if repair.remapped_rows_pending:
        degraded.append("row remap pending (GPU reset required)")
    if repair.retired_pages_pending:
        degraded.append("page retirement pending (GPU reset required)")

    if signals.throttle_reasons:
        slowed = [r for r in signals.throttle_reasons if r in policy.degrading_throttle_reasons]
        if slowed:
            degraded.append("clocks held back: " + ", ".join(slowed))

    if (
        policy.temperature_limit_c is not None
        and signals.temperature_c is not None
        and signals.temperature_c >= policy.temperature_limit_c
    ):
        degraded.append(f"temperature {signals.temperature_c} C")

    if signals.nvlinks_down:
        degraded.append(f"NVLinks down: {signals.nvlinks_down}")

    if fabric is not None and fabric.state in ("not_started", "in_progress"):
        degraded.append(f"NVLink fabric not ready ({fabric.state})")
    if fabric is not None and fabric.state == "failed":
        degraded.append("NVLink fabric registration failed")

    if failed:
        return Health.FAILED, tuple(failed + degraded)
    if degraded:
        return Health.DEGRADED, tuple(degraded)
    return Health.OK, ()
