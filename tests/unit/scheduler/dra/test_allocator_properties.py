"""Properties of the DRA allocator on random claims: every allocation satisfies every selector,
constraint and counter, never reuses a device, and is found whenever one exists."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gputopo.scheduler.dra.allocator import Allocator, Unallocatable, claim_satisfied
from gputopo.scheduler.dra.inventory import Usage
from gputopo.scheduler.dra.model import parse_resource_claim
from tests.unit.scheduler.dra.dra_builders import claim_object, classes, exactly, node_setup

GPU = "gpu.nvidia.com"
SELECTORS = (
    f"device.attributes['{GPU}'].type == 'gpu'",
    f"device.attributes['{GPU}'].profile.startsWith('1g')",
    f"device.attributes['{GPU}'].profile.startsWith('3g')",
    f"device.capacity['{GPU}'].memory.compareTo(quantity('20Gi')) >= 0",
    "device.attributes['resource.kubernetes.io'].pcieRoot == 'pci0000:80'",
)
ATTRIBUTES = ("resource.kubernetes.io/pcieRoot", f"{GPU}/parentUUID", f"{GPU}/productName")
INVENTORY, TOPOLOGY = node_setup("dgx-a100-mig", partitionable=True)
ALLOCATOR = Allocator()


@st.composite
def claims(draw: Any) -> dict[str, Any]:
    requests = []
    for i in range(draw(st.integers(1, 3))):
        device_class = draw(st.sampled_from(["gpu.nvidia.com", "mig.nvidia.com"]))
        chosen = draw(st.lists(st.sampled_from(SELECTORS), max_size=2, unique=True))
        requests.append(exactly(f"r{i}", draw(st.integers(1, 4)), device_class, tuple(chosen)))
    constraints = []
    if draw(st.booleans()):
        constraints.append({"matchAttribute": draw(st.sampled_from(ATTRIBUTES))})
    if draw(st.booleans()):
        constraints.append({"distinctAttribute": draw(st.sampled_from(ATTRIBUTES))})
    return claim_object("random", requests, constraints)


def _usage(taken: list[int]) -> Usage:
    usage = Usage()
    for index in taken:
        device = INVENTORY.devices[index % len(INVENTORY.devices)]
        if device.key not in usage.taken and _fits(usage, device):
            usage.take(device)
    return usage


def _fits(usage: Usage, device: Any) -> bool:
    for set_name, counters in device.consumes.items():
        key = (device.driver, device.pool, set_name)
        used = usage.consumed.get(key, {})
        available = INVENTORY.counters[key]
        if any(used.get(n, 0) + a > available[n] for n, a in counters.items()):
            return False
    return True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(claims(), st.lists(st.integers(0, 10_000), max_size=12))
def test_every_allocation_satisfies_selectors_constraints_and_counters(
    obj: dict[str, Any], taken: list[int]
) -> None:
    claim = parse_resource_claim(obj)
    usage = _usage(taken)
    try:
        result = ALLOCATOR.allocate([claim], INVENTORY, usage, classes(), topology=TOPOLOGY)
    except Unallocatable:
        return
    devices = {d.key: d for d in INVENTORY.devices}
    results = result.results[claim.key]
    assert claim_satisfied(claim, results, devices, classes(), ALLOCATOR.selectors) == []
    after = usage.copy()
    for r in results:
        device = devices[r.device_key]
        assert device.key not in after.taken
        assert _fits(after, device)
        after.take(device)


SMALL, SMALL_TOPOLOGY = node_setup("l4-pcie")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.integers(1, 3), min_size=1, max_size=2),
    st.sampled_from([None, *ATTRIBUTES[:1]]),
    st.sets(st.integers(0, 3), max_size=3),
)
def test_allocatable_exactly_when_a_brute_force_finds_a_set(
    counts: list[int], match: str | None, taken: set[int]
) -> None:
    """On a 4-GPU PCIe node: the search says yes exactly when some assignment exists."""
    requests = [exactly(f"r{i}", c) for i, c in enumerate(counts)]
    constraints = [{"matchAttribute": match}] if match else None
    claim = parse_resource_claim(claim_object("small", requests, constraints))
    usage = Usage()
    for index in taken:
        usage.take(SMALL.devices[index])
    free = [d for d in SMALL.devices if d.key not in usage.taken]
    exists = False
    for chosen in itertools.permutations(free, sum(counts)):
        if match:
            values = {d.attributes[match].value for d in chosen}
            if len(values) > 1:
                continue
        exists = True
        break
    try:
        ALLOCATOR.allocate([claim], SMALL, usage, classes(), topology=SMALL_TOPOLOGY)
        found = True
    except Unallocatable:
        found = False
    assert found == exists
