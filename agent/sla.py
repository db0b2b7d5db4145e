"""The node's SLA score (0..1000) from GPU health signals, and the hysteresis that publishes it.

The score is what KEP-5471 tolerations compare against (``operator: Gt, value: "950"``), so it
must mean the same on every node and must not flap. It is computed in two steps:

1. :func:`assess` turns one discovery snapshot into a raw score with reasons. Each GPU gets a
   penalty from its signals (:class:`SlaPolicy`, capped at ``per_gpu_max``); the node loses the
   worst GPU's penalty in full and every other GPU's by its share of the node
   (``penalty / total``), and the result is capped at the usable fraction of GPUs,
   ``1000 * usable / total``, where failed, lost and PCI-only GPUs are unusable. A node whose GPUs
   have all failed scores 0; a healthy node 1000.
2. :class:`SlaHysteresis` filters raw scores: a worse score is published at once; a better one
   only after it has been observed ``rise_after_observations`` times in a row *and* for at least
   ``rise_after_seconds`` (the clock is injected, so tests drive time). While rising, the
   published score goes to the lowest of the better observations seen, never higher.

The state is a small frozen value (:class:`SlaState`) that the publisher keeps on the Node so a
restarted agent continues where it left off instead of re-trusting a flapping GPU.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from gputopo.agent.health import APPLICATION_XIDS, FATAL_XIDS
from gputopo.agent.topology import Gpu, Health, NodeTopology
from gputopo.core.contract import SLA_MAX, SLA_MIN

# XID classes come from agent.health (the per-GPU classification the SLA builds on): fatal XIDs
# need a reset or replacement; every other XID not caused by the application is a warning.
CRITICAL_XIDS: Final = frozenset(FATAL_XIDS)
IGNORED_XIDS: Final = frozenset(APPLICATION_XIDS)


@dataclass(frozen=True)
class SlaPolicy:
    """Penalty per signal, per GPU. Documented in docs/sla.md; change both together."""

    failed_gpu: int = 400  # health FAILED or lost (also caps the node by usable fraction)
    degraded_gpu: int = 100  # minimum for a GPU health.py marks degraded
    critical_xid: int = 300
    warning_xid: int = 100
    ecc_uncorrected: int = 200  # volatile uncorrected ECC errors since the last reset
    row_remap_failure: int = 300
    row_remap_pending: int = 100
    retired_pages_pending: int = 100
    hw_throttle: int = 50  # hardware slowdown, thermal or power brake
    sw_thermal_throttle: int = 30
    nvlink_down_per_link: int = 50
    nvlink_down_max: int = 200
    per_gpu_max: int = 500


DEFAULT_POLICY: Final = SlaPolicy()


@dataclass(frozen=True)
class SlaAssessment:
    score: int
    reasons: tuple[str, ...]


def _normalise(reason: str) -> str:
    return reason.lower().replace("-", "_").replace(" ", "_")


def _gpu_penalty(gpu: Gpu, policy: SlaPolicy) -> tuple[int, list[str]]:
    s = gpu.health_signals
    penalty = 0
    reasons: list[str] = []

    def add(points: int, why: str) -> None:
        nonlocal penalty
        penalty += points
        reasons.append(f"gpu {gpu.index}: {why} (-{points})")

    if s.lost or gpu.health is Health.FAILED:
        add(policy.failed_gpu, "lost" if s.lost else "failed")
    recent = {e.code for e in s.xid_events if e.code not in s.stale_xids}
    critical = sorted(recent & CRITICAL_XIDS)
    warning = sorted(recent - CRITICAL_XIDS - IGNORED_XIDS)
    if critical:
        add(policy.critical_xid, f"critical XID {', '.join(map(str, critical))}")
    if warning:
        add(policy.warning_xid, f"XID {', '.join(map(str, warning))}")
    if s.ecc.volatile_uncorrected:
        add(policy.ecc_uncorrected, f"{s.ecc.volatile_uncorrected} uncorrected ECC errors")
    if s.memory_repair.remapped_rows_failure:
        add(policy.row_remap_failure, "row remapping failed")
    if s.memory_repair.remapped_rows_pending:
        add(policy.row_remap_pending, "row remap pending")
    if s.memory_repair.retired_pages_pending:
        add(policy.retired_pages_pending, "page retirement pending")
    throttles = {_normalise(r) for r in s.throttle_reasons or ()}
    if any(r.startswith("hw_") for r in throttles):
        add(policy.hw_throttle, "hardware throttling")
    elif any(r.startswith("sw_thermal") for r in throttles):
        add(policy.sw_thermal_throttle, "thermal throttling")
    if s.nvlinks_down:
        points = min(policy.nvlink_down_max, s.nvlinks_down * policy.nvlink_down_per_link)
        add(points, f"{s.nvlinks_down} NVLink(s) down")
    if gpu.health is Health.DEGRADED and penalty < policy.degraded_gpu:
        add(policy.degraded_gpu - penalty, "degraded: " + "; ".join(gpu.health_reasons))
    return min(penalty, policy.per_gpu_max), reasons


def assess(topology: NodeTopology, policy: SlaPolicy = DEFAULT_POLICY) -> SlaAssessment | None:
    """The raw SLA score of one snapshot; None on a node without GPUs (no SLA to publish)."""
    total = len(topology.gpus) + len(topology.pci_only_gpus)
    if total == 0:
        return None
    reasons: list[str] = []
    penalties: list[int] = []
    unusable = len(topology.pci_only_gpus)
    for pci_only in topology.pci_only_gpus:
        reasons.append(f"GPU {pci_only.pci_bus_id} on PCI but not in NVML: {pci_only.reason}")
    for gpu in sorted(topology.gpus, key=lambda g: g.index):
        gpu_penalty, gpu_reasons = _gpu_penalty(gpu, policy)
        penalties.append(gpu_penalty)
        reasons.extend(gpu_reasons)
        if gpu.health_signals.lost or gpu.health is Health.FAILED:
            unusable += 1
    worst = max(penalties, default=0)
    # The worst GPU counts in full; every other GPU by its share of the node.
    penalty = worst + (sum(penalties) - worst) // total
    cap = SLA_MAX * (total - unusable) // total
    score = max(SLA_MIN, min(cap, SLA_MAX - penalty))
    return SlaAssessment(score=score, reasons=tuple(reasons))


# --- hysteresis ----------------------------------------------------------------------------------


class SlaStateError(ValueError):
    """The persisted SLA state on the Node cannot be read."""


@dataclass(frozen=True)
class SlaState:
    published: int | None = None
    candidate: int | None = None  # a better score waiting to be confirmed
    confirmations: int = 0
    candidate_since: float | None = None  # wall-clock seconds (survives restarts)

    def to_json(self) -> str:
        return json.dumps(
            {
                "published": self.published,
                "candidate": self.candidate,
                "confirmations": self.confirmations,
                "since": self.candidate_since,
            },
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> SlaState:
        try:
            doc = json.loads(text)
            published = doc.get("published")
            candidate = doc.get("candidate")
            confirmations = doc.get("confirmations", 0)
            since = doc.get("since")
        except (json.JSONDecodeError, AttributeError) as error:
            raise SlaStateError(f"SLA state {text!r} is not a JSON object: {error}") from None
        for name, value in (("published", published), ("candidate", candidate)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise SlaStateError(f"SLA state {name} {value!r} is not an integer")
        if not isinstance(confirmations, int) or confirmations < 0:
            raise SlaStateError(f"SLA state confirmations {confirmations!r} is not a count")
        if since is not None and not isinstance(since, int | float):
            raise SlaStateError(f"SLA state since {since!r} is not a number")
        return cls(
            published=published,
            candidate=candidate,
            confirmations=confirmations,
            candidate_since=float(since) if since is not None else None,
        )


class SlaHysteresis:
    """Drop at once, rise only after N consecutive better observations over at least T seconds."""

    def __init__(
        self,
        rise_after_observations: int = 3,
        rise_after_seconds: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if rise_after_observations < 1:
            raise ValueError(f"rise_after_observations must be >= 1, got {rise_after_observations}")
        if rise_after_seconds < 0:
            raise ValueError(f"rise_after_seconds must be >= 0, got {rise_after_seconds}")
        self.rise_after_observations = rise_after_observations
        self.rise_after_seconds = rise_after_seconds
        self.clock = clock

    def observe(self, state: SlaState, raw: int) -> SlaState:
        """The next state after observing ``raw``; ``state.published`` is what to publish."""
        if not SLA_MIN <= raw <= SLA_MAX:
            raise ValueError(f"SLA score {raw} is outside {SLA_MIN}..{SLA_MAX}")
        if state.published is None or raw <= state.published:
            return SlaState(published=raw)
        now = self.clock()
        if state.candidate is None or state.candidate_since is None:
            state = SlaState(
                published=state.published, candidate=raw, confirmations=1, candidate_since=now
            )
        else:
            state = replace(
                state,
                candidate=min(state.candidate, raw),
                confirmations=state.confirmations + 1,
            )
        assert state.candidate is not None and state.candidate_since is not None
        confirmed = state.confirmations >= self.rise_after_observations
        if confirmed and now - state.candidate_since >= self.rise_after_seconds:
            return SlaState(published=state.candidate)
        return state
