"""Allocate a pod's ResourceClaims on one node: kube-scheduler's semantics, gputopo's choice.

Semantics (k8s.io/dynamic-resource-allocation/structured, v0.37.2): every request of every
claim is satisfied from the node's devices; a device matches a request when every selector of
its DeviceClass and of the request accepts it (CEL), it is not allocated to any claim, each
untolerated ``NoSchedule``/``NoExecute`` taint (its slice's or a DeviceTaintRule's) keeps it
out, and the counters it consumes are still available in its pool's counter set.
``ExactCount`` takes ``count`` devices, ``All`` every matching device (none may be taken, and
its pool must be complete); ``firstAvailable`` tries its sub-requests in order; every
``matchAttribute`` constraint needs the same value of that attribute on all devices of its
requests and ``distinctAttribute`` pairwise different ones; one device serves at most one
request. kube-scheduler takes the first fit, backtracking when a later request cannot be met.

gputopo searches the same space in another order: within each request, the device set the
topology ranks best (:func:`gputopo.scheduler.dra.topology.preference_order`) is tried first,
so the first fit found is the aligned one whenever an aligned one exists. The search is bounded
(:data:`MAX_STEPS`); a claim too complex for it is refused with a reason, never half-allocated.

Anything outside the supported subset is refused with a reason that names it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from gputopo.scheduler.dra.cel import CelError, SelectorCache
from gputopo.scheduler.dra.inventory import NodeInventory, Usage, taints_of
from gputopo.scheduler.dra.model import (
    AllocationResult,
    Attribute,
    Device,
    DeviceClass,
    DeviceTaintRule,
    ResourceClaim,
    SubRequest,
)
from gputopo.scheduler.dra.topology import DevicePlace, NodeTopology, level_of, preference_order
from gputopo.scheduler.gpu_alloc import LEVEL_ALIGNED, GpuSlot

MAX_STEPS: Final = 5_000
_BLOCKING_EFFECTS: Final = frozenset({"NoSchedule", "NoExecute"})


class Unallocatable(Exception):
    """No device set on this node; the message is the one-line reason."""


@dataclass(frozen=True, slots=True)
class NodeAllocation:
    """What the claims get on the node, and how aligned the whole GPUs among it are."""

    results: Mapping[str, tuple[AllocationResult, ...]]  # claim key -> results
    level: int  # LEVEL_* over the whole GPUs allocated (LEVEL_ALIGNED when none)
    leftover: int  # free aligned devices left in the group the GPUs came from
    devices: tuple[Device, ...]


@dataclass(frozen=True, slots=True)
class _Candidates:
    inventory: NodeInventory  # held, so that its id is not reused while this entry lives
    devices: list[Device]
    error: str | None
    skipped: str | None


@dataclass(slots=True)
class _Slot:
    """One request of one claim, during the search."""

    claim: int
    request: str
    alternatives: tuple[SubRequest, ...]


class Allocator:
    """Allocates claims on nodes; holds the compiled-selector cache across cycles."""

    def __init__(self, selectors: SelectorCache | None = None) -> None:
        self.selectors = selectors or SelectorCache()
        # Candidates per (node inventory, selectors, tolerations, taint rules), across cycles:
        # the selectors' results and the taints do not change while those objects stay the same.
        self.candidates: dict[tuple[object, ...], _Candidates] = {}

    def allocate(
        self,
        claims: Sequence[ResourceClaim],
        inventory: NodeInventory,
        usage: Usage,
        classes: Mapping[str, DeviceClass],
        rules: Sequence[DeviceTaintRule] = (),
        topology: NodeTopology | None = None,
    ) -> NodeAllocation:
        """Device results for every claim in ``claims`` (all unallocated) on this node."""
        for claim in claims:
            if claim.unsupported:
                raise Unallocatable(
                    f"resourceclaim {claim.key}: {claim.unsupported} are not supported by gputopo"
                )
        if len(self.candidates) > 100_000:
            self.candidates.clear()
        search = _Search(self.selectors, claims, inventory, usage, classes, rules, topology)
        search.shared = self.candidates
        return search.run()


class _Search:
    def __init__(
        self,
        selectors: SelectorCache,
        claims: Sequence[ResourceClaim],
        inventory: NodeInventory,
        usage: Usage,
        classes: Mapping[str, DeviceClass],
        rules: Sequence[DeviceTaintRule],
        topology: NodeTopology | None,
    ) -> None:
        self.selectors = selectors
        self.claims = claims
        self.inventory = inventory
        self.usage = usage.copy()
        self.classes = classes
        self.rules = rules
        self.topology = topology
        self.steps = 0
        self.places: dict[Device, DevicePlace | None] = {
            d: (topology.place(d) if topology is not None else None) for d in inventory.devices
        }
        self.slots = [
            _Slot(i, request.name, request.alternatives)
            for i, claim in enumerate(claims)
            for request in claim.requests
        ]
        # chosen[slot index] = (sub-request, devices)
        self.chosen: list[tuple[SubRequest, list[Device]]] = []
        self.candidates: dict[tuple[int, str], list[Device]] = {}
        self.first_reason: str | None = None
        self.shared: dict[tuple[object, ...], _Candidates] = {}

    # -- candidates -------------------------------------------------------------------------

    def _class(self, claim: ResourceClaim, sub: SubRequest) -> DeviceClass:
        found = self.classes.get(sub.device_class)
        if found is None:
            raise Unallocatable(
                f"resourceclaim {claim.key}: request {sub.name}: "
                f"device class {sub.device_class} does not exist"
            )
        return found

    def _matching(self, claim_index: int, sub: SubRequest) -> list[Device]:
        """Devices the class and request select and taints allow, free or not (cached)."""
        key = (claim_index, sub.name)
        found = self.candidates.get(key)
        if found is not None:
            return found
        claim = self.claims[claim_index]
        if sub.unsupported:
            raise Unallocatable(
                f"resourceclaim {claim.key}: request {sub.name}: {sub.unsupported} "
                "are not supported by gputopo"
            )
        device_class = self._class(claim, sub)
        expressions = device_class.selectors + sub.selectors
        shared_key = (id(self.inventory), expressions, sub.tolerations, tuple(map(id, self.rules)))
        shared = self.shared.get(shared_key)
        if shared is not None and shared.inventory is self.inventory:
            if shared.error is not None:
                raise Unallocatable(
                    f"resourceclaim {claim.key}: request {sub.name}: {shared.error}"
                )
            self.first_reason = self.first_reason or shared.skipped
            self.candidates[key] = shared.devices
            return shared.devices
        try:
            matching = self._select(expressions, sub)
        except CelError as error:
            self.shared[shared_key] = _Candidates(self.inventory, [], str(error), None)
            raise Unallocatable(f"resourceclaim {claim.key}: request {sub.name}: {error}") from None
        self.shared[shared_key] = _Candidates(self.inventory, matching, None, self.first_reason)
        self.candidates[key] = matching
        return matching

    def _select(self, expressions: tuple[str, ...], sub: SubRequest) -> list[Device]:
        matching: list[Device] = []
        for device in self.inventory.devices:
            if not all(self.selectors.matches(e, device) for e in expressions):
                continue
            if device.unsupported:
                self.first_reason = self.first_reason or (
                    f"device {device.pool}/{device.name} uses {device.unsupported}, "
                    "which gputopo does not allocate"
                )
                continue
            if any(
                t.effect in _BLOCKING_EFFECTS and not any(x.tolerates(t) for x in sub.tolerations)
                for t in taints_of(device, self.rules)
            ):
                continue
            matching.append(device)
        return matching

    def _fits_counters(self, device: Device) -> bool:
        for set_name, counters in device.consumes.items():
            key = (device.driver, device.pool, set_name)
            available = self.inventory.counters.get(key)
            if available is None:
                return False
            used = self.usage.consumed.get(key, {})
            for name, amount in counters.items():
                if name not in available:
                    return False
                if used.get(name, 0) + amount > available[name]:
                    return False
        return True

    def _usable(self, device: Device) -> bool:
        return device.key not in self.usage.taken and self._fits_counters(device)

    # -- constraints --------------------------------------------------------------------------

    def _constraints_hold(self, claim_index: int) -> bool:
        """Every constraint of the claim over the devices chosen so far."""
        claim = self.claims[claim_index]
        if not claim.constraints:
            return True
        picked: list[tuple[str, str, Device]] = []
        for slot, (sub, devices) in zip(self.slots, self.chosen, strict=False):
            if slot.claim == claim_index:
                picked.extend((slot.request, sub.name, d) for d in devices)
        for constraint in claim.constraints:
            members = [
                d
                for request, sub_name, d in picked
                if not constraint.requests
                or request in constraint.requests
                or sub_name in constraint.requests
            ]
            if constraint.match_attribute is not None:
                values = [_attribute(d, constraint.match_attribute) for d in members]
                if any(v is None for v in values):
                    return False
                first = values[0] if values else None
                if first is not None and any(not first.same(v) for v in values if v is not None):
                    return False
            if constraint.distinct_attribute is not None:
                values = [_attribute(d, constraint.distinct_attribute) for d in members]
                if any(v is None for v in values):
                    return False
                seen: list[Attribute] = []
                for value in values:
                    assert value is not None
                    if any(value.same(s) for s in seen):
                        return False
                    seen.append(value)
        return True

    # -- search -----------------------------------------------------------------------------

    def _tick(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise Unallocatable(
                "cannot allocate all claims: the search for a device set took more than "
                f"{MAX_STEPS} steps (claims too complex for gputopo's allocator)"
            )

    def _precheck(self) -> None:
        """Constraints no device set can meet, found without a search: the search would
        otherwise try every combination before saying no."""
        for claim_index, claim in enumerate(self.claims):
            if not claim.constraints or any(len(r.alternatives) != 1 for r in claim.requests):
                continue
            subs = [r.alternatives[0] for r in claim.requests]
            if any(s.mode != "ExactCount" for s in subs):
                continue
            for constraint in claim.constraints:
                members = [
                    s
                    for r, s in zip(claim.requests, subs, strict=True)
                    if not constraint.requests or r.name in constraint.requests
                ]
                free = {
                    s.name: [d for d in self._matching(claim_index, s) if self._usable(d)]
                    for s in members
                }
                needed = sum(s.count for s in members)
                if constraint.distinct_attribute is not None:
                    name = constraint.distinct_attribute
                    values = {
                        (a.kind, a.value)
                        for ds in free.values()
                        for d in ds
                        if (a := d.attributes.get(name)) is not None
                    }
                    if len(values) < needed:
                        raise Unallocatable(
                            f"cannot allocate all claims: resourceclaim {claim.key}: "
                            f"distinctAttribute {name}: {len(values)} distinct values "
                            f"among the free devices, {needed} needed"
                        )
                if constraint.match_attribute is not None:
                    name = constraint.match_attribute
                    groups: dict[tuple[str, object], set[Device]] = {}
                    per_request: dict[tuple[str, object], dict[str, int]] = {}
                    for sub_name, ds in free.items():
                        for d in ds:
                            a = d.attributes.get(name)
                            if a is None:
                                continue
                            key = (a.kind, a.value)
                            groups.setdefault(key, set()).add(d)
                            counts = per_request.setdefault(key, {})
                            counts[sub_name] = counts.get(sub_name, 0) + 1
                    if not any(
                        len(groups[key]) >= needed
                        and all(per_request[key].get(s.name, 0) >= s.count for s in members)
                        for key in groups
                    ):
                        raise Unallocatable(
                            f"cannot allocate all claims: resourceclaim {claim.key}: "
                            f"matchAttribute {name}: no value is shared by {needed} free "
                            "matching devices"
                        )

    def run(self) -> NodeAllocation:
        self._precheck()
        if not self._solve(0):
            raise Unallocatable(self.first_reason or "cannot allocate all claims")
        results: dict[str, list[AllocationResult]] = {c.key: [] for c in self.claims}
        devices: list[Device] = []
        for slot, (sub, chosen) in zip(self.slots, self.chosen, strict=True):
            claim = self.claims[slot.claim]
            for device in chosen:
                results[claim.key].append(
                    AllocationResult(sub.name, device.driver, device.pool, device.name)
                )
                devices.append(device)
        whole = [p.gpu for d in devices if (p := self.places.get(d)) is not None and p.whole]
        level = level_of(whole) if whole else LEVEL_ALIGNED
        return NodeAllocation(
            {k: tuple(v) for k, v in results.items()}, level, self._leftover(whole), tuple(devices)
        )

    def _leftover(self, whole: Sequence[GpuSlot]) -> int:
        """Free whole-GPU devices left beside the chosen ones in their aligned group."""
        if not whole:
            return 0
        groups = {(g.nvlink_domain, g.numa_node) for g in whole}
        free = {
            p.gpu.index
            for d, p in self.places.items()
            if p is not None
            and p.whole
            and (p.gpu.nvlink_domain, p.gpu.numa_node) in groups
            and self._usable(d)
        }
        return len(free)

    def _solve(self, index: int) -> bool:
        if index == len(self.slots):
            return True
        slot = self.slots[index]
        claim = self.claims[slot.claim]
        for sub in slot.alternatives:
            matching = self._matching(slot.claim, sub)
            if sub.mode == "All":
                if self._try_all(index, slot, sub, matching):
                    return True
                continue
            free = [d for d in matching if self._usable(d)]
            if len(free) < sub.count:
                self.first_reason = self.first_reason or (
                    f"cannot allocate all claims: resourceclaim {claim.key}: request {sub.name}: "
                    f"{len(free)} of {sub.count} matching devices available"
                )
                continue
            busy = self._busy_gpus()
            ordered = preference_order(free, sub.count, self.places, busy)
            if self._choose(index, sub, ordered, 0, []):
                return True
        return False

    def _busy_gpus(self) -> frozenset[int]:
        busy = set()
        for device, place in self.places.items():
            if place is not None and device.key in self.usage.taken:
                busy.add(place.gpu.index)
        return frozenset(busy)

    def _try_all(self, index: int, slot: _Slot, sub: SubRequest, matching: list[Device]) -> bool:
        claim = self.claims[slot.claim]
        pools = {(d.driver, d.pool) for d in matching}
        if pools & self.inventory.incomplete:
            self.first_reason = self.first_reason or (
                f"resourceclaim {claim.key}: request {sub.name}: allocation mode All "
                "needs complete pools, and a pool of this node is incomplete"
            )
            return False
        if not matching or not all(self._usable(d) for d in matching):
            self.first_reason = self.first_reason or (
                f"cannot allocate all claims: resourceclaim {claim.key}: request {sub.name}: "
                "allocation mode All needs every matching device free"
            )
            return False
        for device in matching:
            self.usage.take(device)
        self.chosen.append((sub, list(matching)))
        if self._constraints_hold(slot.claim) and self._solve(index + 1):
            return True
        self.chosen.pop()
        for device in matching:
            self.usage.give_back(device)
        return False

    def _choose(
        self, index: int, sub: SubRequest, ordered: list[Device], start: int, picked: list[Device]
    ) -> bool:
        """Pick ``sub.count`` devices from ``ordered[start:]`` in order, then solve the rest."""
        self._tick()
        slot = self.slots[index]
        if len(picked) == sub.count:
            self.chosen.append((sub, list(picked)))
            ok = self._constraints_hold(slot.claim) and self._solve(index + 1)
            if not ok:
                self.chosen.pop()
            return ok
        needed = sub.count - len(picked)
        for position in range(start, len(ordered) - needed + 1):
            device = ordered[position]
            if not self._usable(device):
                continue
            self.usage.take(device)
            picked.append(device)
            self.chosen.append((sub, list(picked)))
            partial_ok = self._constraints_hold(slot.claim)
            self.chosen.pop()
            if partial_ok and self._choose(index, sub, ordered, position + 1, picked):
                return True
            picked.pop()
            self.usage.give_back(device)
        return False


def _attribute(device: Device, name: str) -> Attribute | None:
    return device.attributes.get(name)


def claim_satisfied(
    claim: ResourceClaim,
    results: Iterable[AllocationResult],
    devices: Mapping[tuple[str, str, str], Device],
    classes: Mapping[str, DeviceClass],
    selectors: SelectorCache,
) -> list[str]:
    """Problems of an allocation against the claim (empty when it satisfies everything):
    for tests and the differential check, independent of the search above."""
    problems: list[str] = []
    by_request: dict[str, list[Device]] = {}
    seen: set[tuple[str, str, str]] = set()
    for result in results:
        device = devices.get(result.device_key)
        if device is None:
            problems.append(f"{result.device}: no such device")
            continue
        if result.device_key in seen:
            problems.append(f"{result.device}: allocated twice")
        seen.add(result.device_key)
        by_request.setdefault(result.request, []).append(device)
    for request in claim.requests:
        served = [s for s in request.alternatives if s.name in by_request]
        if len(served) != 1:
            problems.append(f"request {request.name}: served by {len(served)} alternatives")
            continue
        sub = served[0]
        got = by_request[sub.name]
        if sub.mode == "ExactCount" and len(got) != sub.count:
            problems.append(f"request {sub.name}: {len(got)} devices, wanted {sub.count}")
        device_class = classes.get(sub.device_class)
        expressions = (device_class.selectors if device_class else ()) + sub.selectors
        for device in got:
            for expression in expressions:
                if not selectors.matches(expression, device):
                    problems.append(f"request {sub.name}: {device.name} fails {expression!r}")
    for constraint in claim.constraints:
        members = [
            d
            for name, ds in by_request.items()
            if not constraint.requests
            or name in constraint.requests
            or name.split("/")[0] in constraint.requests
            for d in ds
        ]
        if constraint.match_attribute:
            values = [d.attributes.get(constraint.match_attribute) for d in members]
            if any(v is None for v in values) or len({(v.kind, v.value) for v in values if v}) > 1:
                problems.append(f"matchAttribute {constraint.match_attribute} violated")
        if constraint.distinct_attribute:
            values = [d.attributes.get(constraint.distinct_attribute) for d in members]
            keys = [(v.kind, v.value) for v in values if v]
            if len(keys) != len(values) or len(set(keys)) != len(keys):
                problems.append(f"distinctAttribute {constraint.distinct_attribute} violated")
    return problems
