"""The runtime's one seam to the scheduler core: feed it objects, ask it for a placement.

Everything the runtime knows about filters, scores and the core's snapshot goes through
``SchedulingFramework``; ``CoreFramework`` implements it on the core's ClusterSnapshot and
``schedule_one``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from gputopo.scheduler import gpu_alloc
from gputopo.scheduler.dra.state import ClaimProblem, DraState
from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.framework import schedule_one
from gputopo.scheduler.model import Pod, parse_pod
from gputopo.scheduler.prometheus_load import LoadTracker
from gputopo.scheduler.runtime.dra_writer import DraWriter, PodDraPlan
from gputopo.scheduler.runtime.kube import JsonDict
from gputopo.scheduler.scheduling_profile import SchedulerProfile, default_profile, load_profile
from gputopo.scheduler.snapshot import ClusterSnapshot


@dataclass(frozen=True)
class Placement:
    """The outcome of one scheduling cycle: a node, or the kube-style reason there is none."""

    node_name: str | None
    message: str


class SchedulingFramework(Protocol):
    def upsert_node(self, node: JsonDict) -> None: ...
    def delete_node(self, name: str) -> None: ...
    def upsert_pod(self, pod: JsonDict) -> None: ...
    def delete_pod(self, key: str) -> None: ...
    def assume(self, pod: JsonDict, node_name: str) -> None: ...
    def forget(self, key: str) -> None: ...
    def confirm(self, key: str, labels: Mapping[str, str] | None) -> bool: ...
    def upsert_namespace(self, namespace: JsonDict) -> None: ...
    def delete_namespace(self, name: str) -> None: ...
    def upsert_nrt(self, nrt: JsonDict) -> None: ...
    def delete_nrt(self, name: str) -> None: ...
    def upsert_dra(self, kind: str, obj: JsonDict) -> None: ...
    def delete_dra(self, kind: str, key: str) -> None: ...
    def schedule(self, pod: JsonDict) -> Placement: ...


class CoreFramework:
    """``SchedulingFramework`` on the core: its ClusterSnapshot, profile and schedule_one."""

    def __init__(
        self,
        profile: SchedulerProfile | None = None,
        load: LoadTracker | None = None,
        *,
        nrt_max_age_s: float | None = gpu_alloc.DEFAULT_NRT_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.profile = profile or default_profile()
        self.snapshot = ClusterSnapshot()
        self._last_parsed: tuple[int, Pod] | None = None
        self.gpus = gpu_alloc.GpuAllocator(self.snapshot, nrt_max_age_s=nrt_max_age_s, clock=clock)
        self.snapshot.attach(self.gpus)  # scheduling cycles hand both to the plugins
        self.load = load
        if load is not None:
            self.snapshot.attach(load)
        # DRA objects (ResourceSlices, claims, classes...) and the allocations decided; the
        # runner sets ``dra_writer`` so the binder writes them before binding.
        self.dra = DraState()
        self.snapshot.attach(self.dra)
        self.dra_writer: DraWriter | None = None

    @classmethod
    def from_profile(
        cls,
        path: str | None,
        load: LoadTracker | None = None,
        *,
        nrt_max_age_s: float | None = gpu_alloc.DEFAULT_NRT_MAX_AGE_S,
    ) -> CoreFramework:
        """Load --profile (validated; SchedulerInputError names the file and field)."""
        profile = load_profile(path) if path else default_profile()
        return cls(profile, load, nrt_max_age_s=nrt_max_age_s)

    def upsert_node(self, node: JsonDict) -> None:
        self.snapshot.add_node(node)

    def delete_node(self, name: str) -> None:
        self.snapshot.remove_node(name)

    def upsert_pod(self, pod: JsonDict) -> None:
        self.snapshot.add_pod(pod)

    def delete_pod(self, key: str) -> None:
        self.snapshot.remove_pod(key)

    def assume(self, pod: JsonDict, node_name: str) -> None:
        last = self._last_parsed
        parsed = last[1] if last is not None and last[0] == id(pod) else parse_pod(pod)
        bound = self.snapshot.assume(parsed, node_name)
        if parsed.resource_claims or self.dra.extended_requests(parsed):
            self._assume_claims(parsed, node_name)
        if self.load is not None:
            slot = self.snapshot.slot_of(node_name)
            state = self.gpus.state(slot) if slot is not None else None
            held = state.pod_gpus.get(bound.key) if state is not None else None
            self.load.note_bound(node_name, held[0] if held else ())

    def _assume_claims(self, pod: Pod, node_name: str) -> None:
        """The allocations the cycle chose count as taken until written or released."""
        node = self.snapshot.node(node_name)
        if node is None:
            return
        try:
            claims = self.dra.pod_claims(pod) if pod.resource_claims else []
        except ClaimProblem:
            return
        extended = {
            resource: wanted
            for resource, wanted in self.dra.extended_requests(pod).items()
            if node.allocatable.get(resource, 0) <= 0  # DRA serves it on this node
        }
        if extended:
            claims.append(self.dra.extended_claim(pod, extended))
        if not claims:
            return
        outcome = self.dra.allocate(pod, node, claims)
        if isinstance(outcome, str):
            return
        self.dra.assume(pod, outcome)
        if self.dra_writer is not None:
            plan = PodDraPlan(node_name, tuple(claims), outcome)
            plan.extended = {resource: c.name for resource, (_, c) in extended.items()}
            self.dra_writer.plan(pod.key, plan)

    def upsert_dra(self, kind: str, obj: JsonDict) -> None:
        """A DRA object added or changed (ValueError/SchedulerInputError names a bad one)."""
        self.dra.observe(kind, obj)

    def delete_dra(self, kind: str, key: str) -> None:
        self.dra.forget_object(kind, key)

    def upsert_nrt(self, nrt: JsonDict) -> None:
        """A NodeResourceTopology ADDED/MODIFIED event (GPU availability per NUMA zone).

        ValueError names the object and zone when ``available`` is not a count."""
        self.gpus.observe_nrt(nrt)

    def delete_nrt(self, name: str) -> None:
        self.gpus.forget_nrt(name)

    def schedule(self, pod: JsonDict) -> Placement:
        """One core cycle; a pod the core cannot parse is unschedulable with the parse error."""
        try:
            parsed = parse_pod(pod)
        except SchedulerInputError as err:
            return Placement(None, str(err))
        self._last_parsed = (id(pod), parsed)
        result = schedule_one(parsed, self.snapshot, self.profile, sample=True)
        return Placement(result.node, result.message)

    def forget(self, key: str) -> None:
        self.snapshot.forget(key)
        writer = self.dra_writer
        plan = writer.plans.pop(key, None) if writer is not None else None
        if plan is not None:
            self.dra.forget(plan.outcome.allocation.results)

    def confirm(self, key: str, labels: Mapping[str, str] | None) -> bool:
        return self.snapshot.confirm(key, labels)

    def upsert_namespace(self, namespace: JsonDict) -> None:
        self.snapshot.add_namespace(namespace)

    def delete_namespace(self, name: str) -> None:
        self.snapshot.remove_namespace(name)

    def node_names(self) -> list[str]:
        return [node.name for _, node in self.snapshot.iter_nodes()]
